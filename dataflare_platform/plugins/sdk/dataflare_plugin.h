/* dataflare_plugin.h - the C side of the DataFlare plugin ABI, version 1.
 *
 * See docs/plugin-abi.md. One call per record batch; columns arrive in Arrow layout in
 * linear memory; every buffer a plugin reads or writes is owned by the host, so a plugin
 * needs no allocator of its own. Build freestanding (no libc):
 *   python -m ziglang cc --target=wasm32-freestanding -O3 -msimd128 -nostdlib \
 *       -Wl,--no-entry -I sdk -o plugin.wasm plugin.c
 */
#ifndef DATAFLARE_PLUGIN_H
#define DATAFLARE_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#define DATAFLARE_ABI_VERSION 1

/* Column type codes (df_column.type). */
#define DF_INT64 1
#define DF_FLOAT64 2
#define DF_INT32 3
#define DF_FLOAT32 4
#define DF_UTF8 5

/* Status codes returned by dataflare_init / dataflare_map / dataflare_filter. */
#define DF_OK 0
#define DF_NEED_MORE 1 /* a utf8 output's data_cap was too small: data_len = bytes needed */
#define DF_ERROR -1    /* any negative value: the batch failed (dead-lettered by the host) */

/* One column, 32 bytes, all fields little-endian u32 (wasm32 pointers).
 * Fixed width: values -> n_rows elements. utf8: values -> n_rows + 1 int32 offsets,
 * data -> UTF-8 bytes. validity: Arrow bitmap (LSB first), 0 = no nulls. */
typedef struct df_column {
    uint32_t type;
    uint32_t flags;      /* reserved, 0 */
    uint32_t validity;   /* bitmap pointer, 0 = all valid */
    uint32_t values;     /* values (fixed width) or offsets (utf8) pointer */
    uint32_t values_len; /* bytes at values */
    uint32_t data;       /* utf8 data pointer, 0 for fixed width */
    uint32_t data_len;   /* utf8 data bytes used (output: written by the plugin) */
    uint32_t data_cap;   /* utf8 output: bytes available at data; input: = data_len */
} df_column;

#define DF_EXPORT(name) __attribute__((export_name(name)))
#define DF_PTR(T, addr) ((T *)(uintptr_t)(addr))
#define DF_ADDR(p) ((uint32_t)(uintptr_t)(p))

static inline int df_is_valid(const df_column *c, int32_t i) {
    if (!c->validity) return 1;
    return (DF_PTR(const uint8_t, c->validity)[i >> 3] >> (i & 7)) & 1;
}

/* --- the allocator the host uses for its (grow-only, reused) buffer arena ------------- */
extern unsigned char __heap_base;
static uint32_t df__heap_top;

DF_EXPORT("dataflare_abi_version") int32_t dataflare_abi_version(void) {
    return DATAFLARE_ABI_VERSION;
}

DF_EXPORT("dataflare_alloc") uint32_t dataflare_alloc(uint32_t size) {
    if (!df__heap_top) df__heap_top = DF_ADDR(&__heap_base);
    uint32_t p = (df__heap_top + 15u) & ~15u;
    uint64_t end = (uint64_t)p + size;
    uint64_t have = (uint64_t)__builtin_wasm_memory_size(0) * 65536u;
    if (end > have) {
        uint64_t pages = (end - have + 65535u) / 65536u;
        if (__builtin_wasm_memory_grow(0, (size_t)pages) == (size_t)-1) return 0;
    }
    df__heap_top = (uint32_t)end;
    return p;
}

/* Freestanding builds still get calls to these from the compiler. */
__attribute__((weak)) void *memcpy(void *d, const void *s, size_t n) {
    unsigned char *dd = d;
    const unsigned char *ss = s;
    while (n--) *dd++ = *ss++;
    return d;
}
__attribute__((weak)) void *memset(void *d, int c, size_t n) {
    unsigned char *dd = d;
    while (n--) *dd++ = (unsigned char)c;
    return d;
}

/* --- parameters: the host passes a flat JSON object of numbers/strings/bools ---------- */
static const char *df__find_key(const char *p, int32_t len, const char *key) {
    int32_t klen = 0;
    while (key[klen]) klen++;
    for (int32_t i = 0; i + klen + 2 < len; i++) {
        if (p[i] != '"') continue;
        int32_t k = 0;
        while (k < klen && p[i + 1 + k] == key[k]) k++;
        if (k != klen || p[i + 1 + klen] != '"') continue;
        int32_t j = i + klen + 2;
        while (j < len && (p[j] == ' ' || p[j] == ':')) j++;
        return j < len ? p + j : 0;
    }
    return 0;
}

/* A JSON number (as written by Python's json.dumps) as a double; `fallback` if absent. */
static double df_param_double(const char *p, int32_t len, const char *key, double fallback) {
    const char *s = df__find_key(p, len, key);
    if (!s) return fallback;
    const char *end = p + len;
    int neg = 0;
    if (s < end && *s == '-') neg = 1, s++;
    uint64_t mant = 0;
    int frac = 0, any = 0, exp = 0, seen_dot = 0;
    for (; s < end; s++) {
        if (*s >= '0' && *s <= '9') {
            if (mant < 100000000000000000ull) {
                mant = mant * 10 + (uint64_t)(*s - '0');
                if (seen_dot) frac++;
            } else if (!seen_dot) {
                exp++;
            }
            any = 1;
        } else if (*s == '.' && !seen_dot) {
            seen_dot = 1;
        } else {
            break;
        }
    }
    if (!any) return fallback;
    if (s < end && (*s == 'e' || *s == 'E')) {
        s++;
        int eneg = 0, e = 0;
        if (s < end && (*s == '+' || *s == '-')) eneg = (*s == '-'), s++;
        while (s < end && *s >= '0' && *s <= '9') e = e * 10 + (*s++ - '0');
        exp += eneg ? -e : e;
    }
    exp -= frac;
    double v = (double)mant, scale = 1.0;
    int ae = exp < 0 ? -exp : exp;
    while (ae--) scale *= 10.0; /* exact up to 1e22, which covers ordinary parameters */
    v = exp < 0 ? v / scale : v * scale;
    return neg ? -v : v;
}

static int64_t df_param_int(const char *p, int32_t len, const char *key, int64_t fallback) {
    return (int64_t)df_param_double(p, len, key, (double)fallback);
}

#endif /* DATAFLARE_PLUGIN_H */
