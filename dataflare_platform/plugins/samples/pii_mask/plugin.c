/* pii_mask: rewrite a utf8 column, masking PII in one left-to-right pass.
 *
 * Same result as Python's re.sub with re.ASCII over
 *   (?P<email>[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+) | (?P<card>\d(?:[ -]?\d)*)
 * where an e-mail becomes "***@" + domain and a card-like run with min_digits..max_digits
 * digits has every digit but the last four replaced by '*'. Non-ASCII bytes never match. */
#include "dataflare_plugin.h"

static int64_t min_digits = 13, max_digits = 19;

DF_EXPORT("dataflare_init") int32_t dataflare_init(uint32_t params, int32_t len) {
    const char *p = DF_PTR(const char, params);
    min_digits = df_param_int(p, len, "min_digits", 13);
    max_digits = df_param_int(p, len, "max_digits", 19);
    return DF_OK;
}

static inline int is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
static inline int is_alnum(uint8_t c) {
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
static inline int is_local(uint8_t c) {
    return is_alnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-';
}
static inline int is_domain(uint8_t c) { return is_alnum(c) || c == '.' || c == '-'; }

/* Writes go through put(): bytes beyond cap are counted, not written. */
#define PUT(ch)                              \
    do {                                     \
        if (w < cap) dst[w] = (uint8_t)(ch); \
        w++;                                 \
    } while (0)

DF_EXPORT("dataflare_map") int32_t dataflare_map(uint32_t in_desc, int32_t n, uint32_t out_desc) {
    const df_column *in = DF_PTR(const df_column, in_desc);
    df_column *out = DF_PTR(df_column, out_desc);
    const int32_t *off = DF_PTR(const int32_t, in[0].values);
    const uint8_t *src = DF_PTR(const uint8_t, in[0].data);
    int32_t *ooff = DF_PTR(int32_t, out[0].values);
    uint8_t *dst = DF_PTR(uint8_t, out[0].data);
    const uint32_t cap = out[0].data_cap;
    uint32_t w = 0;
    for (int32_t row = 0; row < n; row++) {
        ooff[row] = (int32_t)w;
        const uint8_t *s = src + off[row];
        const int32_t len = off[row + 1] - off[row];
        int32_t run_end = -1; /* end of the local-part run containing p, if known */
        int32_t p = 0;
        while (p < len) {
            /* e-mail at p? the local run from p must end right at '@' + a domain char */
            if (is_local(s[p])) {
                if (run_end < p) {
                    run_end = p;
                    while (run_end < len && is_local(s[run_end])) run_end++;
                }
                if (run_end + 1 < len && s[run_end] == '@' && is_domain(s[run_end + 1])) {
                    int32_t d = run_end + 1;
                    while (d < len && is_domain(s[d])) d++;
                    PUT('*'); PUT('*'); PUT('*');
                    for (int32_t k = run_end; k < d; k++) PUT(s[k]);
                    p = d;
                    continue;
                }
            }
            if (is_digit(s[p])) {
                int32_t q = p + 1, digits = 1;
                for (;;) {
                    if (q < len && is_digit(s[q])) q++, digits++;
                    else if (q + 1 < len && (s[q] == ' ' || s[q] == '-') && is_digit(s[q + 1]))
                        q += 2, digits++;
                    else break;
                }
                int mask = digits >= min_digits && digits <= max_digits;
                int32_t seen = 0;
                for (int32_t k = p; k < q; k++) {
                    if (mask && is_digit(s[k]) && seen++ < digits - 4) PUT('*');
                    else PUT(s[k]);
                }
                p = q;
                continue;
            }
            PUT(s[p]);
            p++;
        }
    }
    ooff[n] = (int32_t)w;
    out[0].validity = in[0].validity;
    out[0].data_len = w;
    return w > cap ? DF_NEED_MORE : DF_OK;
}
