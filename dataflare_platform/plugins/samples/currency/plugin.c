/* currency: price (int64, minor units of USD) -> price_eur (float64) = price * rate.
 * Nulls pass through by sharing the input validity bitmap (no copy). */
#include "dataflare_plugin.h"

static double rate = 0.908;

DF_EXPORT("dataflare_init") int32_t dataflare_init(uint32_t params, int32_t len) {
    rate = df_param_double(DF_PTR(const char, params), len, "rate", 0.908);
    return DF_OK;
}

DF_EXPORT("dataflare_map") int32_t dataflare_map(uint32_t in_desc, int32_t n, uint32_t out_desc) {
    const df_column *in = DF_PTR(const df_column, in_desc);
    df_column *out = DF_PTR(df_column, out_desc);
    const int64_t *x = DF_PTR(const int64_t, in[0].values);
    double *y = DF_PTR(double, out[0].values);
    const double r = rate;
    for (int32_t i = 0; i < n; i++) y[i] = (double)x[i] * r;
    out[0].validity = in[0].validity;
    return DF_OK;
}
