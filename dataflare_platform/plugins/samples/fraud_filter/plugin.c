/* fraud_filter: keep bids with price > threshold or a bidder on the watch list.
 * Parameters: threshold (int), bidders (str, "12,345,6789"; at most 256 ids). */
#include "dataflare_plugin.h"

#define MAX_WATCH 256

static int64_t threshold = 10000000;
static int64_t watch[MAX_WATCH];
static int32_t n_watch = 0;

DF_EXPORT("dataflare_init") int32_t dataflare_init(uint32_t params, int32_t len) {
    const char *p = DF_PTR(const char, params), *end = p + len;
    threshold = df_param_int(p, len, "threshold", 10000000);
    n_watch = 0;
    const char *s = df__find_key(p, len, "bidders");
    if (!s || *s != '"') return DF_OK;
    for (s++; s < end && *s != '"';) {
        int neg = 0, any = 0;
        int64_t v = 0;
        while (s < end && *s == ' ') s++;
        if (s < end && *s == '-') neg = 1, s++;
        while (s < end && *s >= '0' && *s <= '9') v = v * 10 + (*s++ - '0'), any = 1;
        while (s < end && *s == ' ') s++;
        if (!any || (s < end && *s != ',' && *s != '"')) return DF_ERROR; /* not an id list */
        if (n_watch == MAX_WATCH) return DF_ERROR;
        watch[n_watch++] = neg ? -v : v;
        if (s < end && *s == ',') s++;
    }
    return DF_OK;
}

DF_EXPORT("dataflare_filter")
int32_t dataflare_filter(uint32_t in_desc, int32_t n, uint32_t mask_ptr) {
    const df_column *in = DF_PTR(const df_column, in_desc);
    const int64_t *price = DF_PTR(const int64_t, in[0].values);
    const int64_t *bidder = DF_PTR(const int64_t, in[1].values);
    uint8_t *keep = DF_PTR(uint8_t, mask_ptr);
    const int64_t t = threshold;
    for (int32_t i = 0; i < n; i++) keep[i] = price[i] > t; /* vectorises */
    if (in[0].validity)
        for (int32_t i = 0; i < n; i++) keep[i] &= (uint8_t)df_is_valid(&in[0], i);
    if (n_watch) {
        for (int32_t i = 0; i < n; i++) {
            if (keep[i] || !df_is_valid(&in[1], i)) continue;
            for (int32_t k = 0; k < n_watch; k++)
                if (bidder[i] == watch[k]) {
                    keep[i] = 1;
                    break;
                }
        }
    }
    return DF_OK;
}
