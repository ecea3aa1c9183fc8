/* currency: price (int64, minor units of USD) -> price_eur (float64) = price * rate.
 * Nulls pass through by sharing the input validity bitmap (no copy).
 *
 * WASM SIMD has no int64 -> float64 conversion, so the loop converts two lanes at a time
 * with the exact split trick: x = hi * 2^32 + lo (hi signed, lo unsigned 32-bit), both
 * halves are turned into doubles exactly through the 2^52 / 1.5 * 2^52 exponent bias, and
 * the one rounding happens in the final add -- bit for bit what (double)x gives. */
#include "dataflare_plugin.h"

#include <wasm_simd128.h>

static double rate = 0.908;

DF_EXPORT("dataflare_init") int32_t dataflare_init(uint32_t params, int32_t len) {
    rate = df_param_double(DF_PTR(const char, params), len, "rate", 0.908);
    return DF_OK;
}

static inline v128_t i64x2_to_f64x2(v128_t x) {
    const v128_t bias_hi = wasm_i64x2_const_splat(0x4338000000000000ll); /* 1.5 * 2^52 */
    const v128_t bias_lo = wasm_i64x2_const_splat(0x4330000000000000ll); /* 2^52 */
    v128_t hi = wasm_i64x2_add(wasm_i64x2_extend_low_i32x4(wasm_i32x4_shuffle(x, x, 1, 3, 1, 3)), bias_hi);
    v128_t lo = wasm_v128_or(wasm_v128_and(x, wasm_i64x2_const_splat(0xffffffffll)), bias_lo);
    v128_t hid = wasm_f64x2_mul(wasm_f64x2_sub(hi, wasm_f64x2_const_splat(6755399441055744.0)),
                                wasm_f64x2_const_splat(4294967296.0));
    v128_t lod = wasm_f64x2_sub(lo, wasm_f64x2_const_splat(4503599627370496.0));
    return wasm_f64x2_add(hid, lod);
}

/* |x| < 2^51 (every realistic price): x + 1.5 * 2^52 as a double's bits is exact, so one
 * integer add and one float subtract convert two lanes. */
static inline v128_t small_i64x2_to_f64x2(v128_t x) {
    return wasm_f64x2_sub(wasm_i64x2_add(x, wasm_i64x2_const_splat(0x4338000000000000ll)),
                          wasm_f64x2_const_splat(6755399441055744.0));
}

#define BLOCK 8 /* vectors (16 values) checked for the fast path at a time */

DF_EXPORT("dataflare_map") int32_t dataflare_map(uint32_t in_desc, int32_t n, uint32_t out_desc) {
    const df_column *in = DF_PTR(const df_column, in_desc);
    df_column *out = DF_PTR(df_column, out_desc);
    /* In place: input buffers are host scratch, so the result overwrites the prices
     * (same width; each value is read before its slot is written) and the output
     * descriptor points there -- half the memory traffic of a separate output buffer. */
    const int64_t *x = DF_PTR(const int64_t, in[0].values);
    double *y = DF_PTR(double, in[0].values);
    const double r = rate;
    const v128_t rv = wasm_f64x2_splat(r);
    const v128_t half = wasm_i64x2_const_splat(1ll << 51);
    const v128_t high = wasm_i64x2_const_splat(~((1ll << 52) - 1));
    int32_t i = 0;
    for (; i + 2 * BLOCK <= n; i += 2 * BLOCK) {
        v128_t v[BLOCK], wide = wasm_i64x2_const_splat(0);
        for (int k = 0; k < BLOCK; k++) {
            v[k] = wasm_v128_load(x + i + 2 * k);
            wide = wasm_v128_or(wide, wasm_v128_and(wasm_i64x2_add(v[k], half), high));
        }
        if (wasm_v128_any_true(wide)) { /* some |x| >= 2^51: the exact general path */
            for (int k = 0; k < BLOCK; k++)
                wasm_v128_store(y + i + 2 * k, wasm_f64x2_mul(i64x2_to_f64x2(v[k]), rv));
        } else {
            for (int k = 0; k < BLOCK; k++)
                wasm_v128_store(y + i + 2 * k, wasm_f64x2_mul(small_i64x2_to_f64x2(v[k]), rv));
        }
    }
    for (; i < n; i++) y[i] = (double)x[i] * r;
    out[0].values = in[0].values;
    out[0].validity = in[0].validity;
    return DF_OK;
}
