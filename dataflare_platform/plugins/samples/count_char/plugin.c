/* count_char: how many times one byte occurs in each utf8 string (Nexmark q14's user
 * function count_char(extra, 'c')). Parameter: char (a one-byte string, default "c").
 * Nulls stay null by sharing the input validity bitmap. The inner loop is a plain byte
 * compare-and-add, which clang vectorises with -msimd128. */
#include "dataflare_plugin.h"

static uint8_t target = 'c';

DF_EXPORT("dataflare_init") int32_t dataflare_init(uint32_t params, int32_t len) {
    const char *p = DF_PTR(const char, params), *end = p + len;
    target = 'c';
    const char *s = df__find_key(p, len, "char");
    if (!s) return DF_OK;
    /* a JSON string of exactly one ASCII byte: "x" */
    if (s + 2 >= end || s[0] != '"' || s[2] != '"' || (uint8_t)s[1] >= 0x80 || s[1] == '\\')
        return DF_ERROR;
    target = (uint8_t)s[1];
    return DF_OK;
}

DF_EXPORT("dataflare_map") int32_t dataflare_map(uint32_t in_desc, int32_t n, uint32_t out_desc) {
    const df_column *in = DF_PTR(const df_column, in_desc);
    df_column *out = DF_PTR(df_column, out_desc);
    const int32_t *off = DF_PTR(const int32_t, in[0].values);
    const uint8_t *data = DF_PTR(const uint8_t, in[0].data);
    int64_t *counts = DF_PTR(int64_t, out[0].values);
    const uint8_t t = target;
    for (int32_t row = 0; row < n; row++) {
        const uint8_t *s = data + off[row];
        const int32_t len = off[row + 1] - off[row];
        int32_t c = 0;
        for (int32_t i = 0; i < len; i++) c += s[i] == t;
        counts[row] = c;
    }
    out[0].validity = in[0].validity;
    return DF_OK;
}
