/* hll_distinct: approximate distinct count of an int64 column with HyperLogLog.
 *
 * State (host-owned, 4096 bytes): one register per bucket, the highest "rank" seen.
 * A value is hashed with the splitmix64 finalizer; the top 12 bits pick the register, the
 * rank is 1 + the number of trailing zeros of the low 52 bits (53 if they are all zero).
 * Estimate: alpha * m^2 / sum(2^-register), with linear counting m * ln(m / zeros) below
 * 2.5 m; rounded to the nearest integer. Registers merge by maximum, so partial states
 * from parallel instances or checkpoints combine exactly. */
#include "dataflare_plugin.h"

#define P 12
#define M (1u << P)

static inline uint64_t mix(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

DF_EXPORT("dataflare_agg_init") int32_t dataflare_agg_init(uint32_t state, int32_t len) {
    if (len != (int32_t)M) return DF_ERROR;
    uint8_t *reg = DF_PTR(uint8_t, state);
    for (uint32_t i = 0; i < M; i++) reg[i] = 0;
    return DF_OK;
}

DF_EXPORT("dataflare_agg_update")
int32_t dataflare_agg_update(uint32_t state, uint32_t in_desc, int32_t n) {
    const df_column *in = DF_PTR(const df_column, in_desc);
    const int64_t *x = DF_PTR(const int64_t, in[0].values);
    uint8_t *reg = DF_PTR(uint8_t, state);
    for (int32_t i = 0; i < n; i++) {
        if (!df_is_valid(&in[0], i)) continue;
        uint64_t h = mix((uint64_t)x[i]);
        uint32_t idx = (uint32_t)(h >> (64 - P));
        uint64_t low = h & ((1ull << (64 - P)) - 1);
        uint8_t rank = low ? (uint8_t)(__builtin_ctzll(low) + 1) : (uint8_t)(64 - P + 1);
        if (rank > reg[idx]) reg[idx] = rank;
    }
    return DF_OK;
}

DF_EXPORT("dataflare_agg_merge") int32_t dataflare_agg_merge(uint32_t state, uint32_t other) {
    uint8_t *reg = DF_PTR(uint8_t, state);
    const uint8_t *o = DF_PTR(const uint8_t, other);
    for (uint32_t i = 0; i < M; i++)
        if (o[i] > reg[i]) reg[i] = o[i];
    return DF_OK;
}

/* Natural log for x >= 1 (freestanding: no libm): x = m * 2^e with m in [1, 2),
 * ln x = e ln 2 + 2 atanh((m - 1) / (m + 1)), the series summed to full precision. */
static double ln(double x) {
    uint64_t bits;
    __builtin_memcpy(&bits, &x, 8);
    int32_t e = (int32_t)((bits >> 52) & 0x7ff) - 1023;
    bits = (bits & 0x000fffffffffffffull) | 0x3ff0000000000000ull;
    double m;
    __builtin_memcpy(&m, &bits, 8);
    double z = (m - 1.0) / (m + 1.0), z2 = z * z, term = z, sum = 0.0;
    for (int k = 1; k < 60; k += 2) {
        sum += term / k;
        term *= z2;
    }
    return e * 0.6931471805599453 + 2.0 * sum;
}

DF_EXPORT("dataflare_agg_finalize")
int32_t dataflare_agg_finalize(uint32_t state, uint32_t out_desc, int32_t max_rows) {
    if (max_rows < 1) return DF_ERROR;
    const uint8_t *reg = DF_PTR(const uint8_t, state);
    df_column *out = DF_PTR(df_column, out_desc);
    double sum = 0.0;
    uint32_t zeros = 0;
    for (uint32_t i = 0; i < M; i++) {
        uint64_t bits = (uint64_t)(1023 - reg[i]) << 52; /* 2^-reg, exactly */
        double v;
        __builtin_memcpy(&v, &bits, 8);
        sum += v;
        zeros += reg[i] == 0;
    }
    const double m = (double)M;
    double est = (0.7213 / (1.0 + 1.079 / m)) * m * m / sum;
    if (est <= 2.5 * m && zeros) est = m * ln(m / (double)zeros);
    DF_PTR(int64_t, out[0].values)[0] = (int64_t)(est + 0.5);
    out[0].validity = 0;
    return 1; /* rows written */
}
