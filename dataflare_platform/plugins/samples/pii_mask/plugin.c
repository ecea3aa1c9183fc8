/* pii_mask: rewrite a utf8 column, masking PII in one left-to-right pass.
 *
 * Same result as Python's re.sub with re.ASCII over
 *   (?P<email>[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+) | (?P<card>\d(?:[ -]?\d)*)
 * where an e-mail becomes "***@" + domain and a card-like run with min_digits..max_digits
 * digits has every digit but the last four replaced by '*'. Non-ASCII bytes never match.
 *
 * Speed: only '@' and digits can start a match, so the row is scanned 16 bytes at a time
 * (SIMD) for them and everything in between is copied verbatim; an e-mail found at its '@'
 * takes back the local part it already copied. Rows whose worst-case output (5/3 of the
 * input: "a@b" -> "***@b") fits the remaining capacity skip per-byte capacity checks. */
#include "dataflare_plugin.h"

#include <wasm_simd128.h>

static int64_t min_digits = 13, max_digits = 19;

enum { C_LOCAL = 1, C_DOMAIN = 2, C_DIGIT = 4 };
static uint8_t cls[256];
static uint32_t df__cap; /* output capacity of the current call (checked writes) */

static void init_classes(void) {
    for (int c = 0; c < 256; c++) {
        int alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        int local = alnum || c == '.' || c == '_' || c == '%' || c == '+' || c == '-';
        int domain = alnum || c == '.' || c == '-';
        cls[c] = (uint8_t)((local ? C_LOCAL : 0) | (domain ? C_DOMAIN : 0) |
                           ((c >= '0' && c <= '9') ? C_DIGIT : 0));
    }
}

DF_EXPORT("dataflare_init") int32_t dataflare_init(uint32_t params, int32_t len) {
    const char *p = DF_PTR(const char, params);
    min_digits = df_param_int(p, len, "min_digits", 13);
    max_digits = df_param_int(p, len, "max_digits", 19);
    init_classes();
    return DF_OK;
}

#define IS(c, k) (cls[(uint8_t)(c)] & (k))

/* Writes: checked ones count bytes beyond cap instead of writing them. */
#define PUT(ch)                                          \
    do {                                                 \
        if (!checked || w < cap) dst[w] = (uint8_t)(ch); \
        w++;                                             \
    } while (0)

static inline __attribute__((always_inline)) uint32_t copy_run(uint8_t *dst, uint32_t w,
                                                               uint32_t cap, const uint8_t *s,
                                                               int32_t n, int checked) {
    if (!checked) { /* 8-byte chunks; the caller guaranteed 16 bytes of slack */
        for (int32_t i = 0; i < n; i += 8) {
            uint64_t v;
            __builtin_memcpy(&v, s + i, 8);
            __builtin_memcpy(dst + w + i, &v, 8);
        }
        return w + (uint32_t)n;
    }
    for (int32_t i = 0; i < n; i++) PUT(s[i]);
    return w;
}

/* Where the next '@' or digit is in s[i..len) (len if none): 16 bytes at a time. Bytes
 * before it are copied verbatim (unchecked: the whole 16-byte chunk is stored and the
 * part after the special byte is overwritten later). */
static inline __attribute__((always_inline)) int32_t next_special(const uint8_t *s, int32_t i,
                                                                  int32_t len, uint8_t *dst,
                                                                  uint32_t *wp, int checked) {
    const v128_t at = wasm_i8x16_splat('@'), zero = wasm_i8x16_splat('0');
    const v128_t ten = wasm_i8x16_splat(10);
    uint32_t w = *wp;
    while (i < len) {
        v128_t v = wasm_v128_load(s + i);
        v128_t hit = wasm_v128_or(wasm_i8x16_eq(v, at), wasm_u8x16_lt(wasm_i8x16_sub(v, zero), ten));
        uint32_t bits = (uint32_t)wasm_i8x16_bitmask(hit);
        int32_t left = len - i;
        if (left < 16) bits |= 1u << left; /* the row end counts as special */
        int32_t k = bits ? __builtin_ctz(bits) : 16;
        if (!checked) {
            wasm_v128_store(dst + w, v);
            w += (uint32_t)k;
        } else {
            for (int32_t j = 0; j < k; j++) {
                if (w < df__cap) dst[w] = s[i + j];
                w++;
            }
        }
        i += k;
        if (k < 16) break;
    }
    *wp = w;
    return i < len ? i : len;
}

/* 0xFF in byte i where bit i of m (16 bits) is set. */
static inline __attribute__((always_inline)) v128_t bytes_of_bits(uint32_t m) {
    const v128_t spread = wasm_i8x16_make(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const v128_t bit = wasm_u8x16_make(1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128);
    v128_t v = wasm_i8x16_swizzle(wasm_i32x4_splat((int32_t)m), spread);
    return wasm_i8x16_eq(wasm_v128_and(v, bit), bit);
}

static inline __attribute__((always_inline)) uint32_t lane_bits(v128_t lo, v128_t hi) {
    return (uint32_t)wasm_i8x16_bitmask(lo) | ((uint32_t)wasm_i8x16_bitmask(hi) << 16);
}

/* The card-like run starting at the digit s[0] (the regex \d(?:[ -]?\d)*), found and
 * masked with 32-byte bit masks: position i is in the run while it is a digit or a
 * separator followed by a digit. Stores 32 bytes at dst (the run, masked, then input bytes
 * the caller overwrites later) and returns the run length, or 0 when the run may reach
 * byte 31 (the scalar path takes it). Reads 32 bytes at s, as next_special reads 16. */
static inline __attribute__((always_inline)) int32_t card_window(const uint8_t *s,
                                                                  int32_t left, uint8_t *dst) {
    const v128_t zero = wasm_i8x16_splat('0'), ten = wasm_i8x16_splat(10);
    const v128_t sp = wasm_i8x16_splat(' '), dash = wasm_i8x16_splat('-');
    v128_t a = wasm_v128_load(s), b = wasm_v128_load(s + 16);
    uint32_t live = left >= 32 ? 0xFFFFFFFFu : (1u << left) - 1u;
    uint32_t dig = live & lane_bits(wasm_u8x16_lt(wasm_i8x16_sub(a, zero), ten),
                                    wasm_u8x16_lt(wasm_i8x16_sub(b, zero), ten));
    uint32_t sep = live & lane_bits(wasm_v128_or(wasm_i8x16_eq(a, sp), wasm_i8x16_eq(a, dash)),
                                    wasm_v128_or(wasm_i8x16_eq(b, sp), wasm_i8x16_eq(b, dash)));
    uint32_t in_run = dig | (sep & (dig >> 1));
    int32_t run = ~in_run ? __builtin_ctz(~in_run) : 32;
    if (run >= 31) return 0;
    uint32_t run_digits = dig & ((1u << run) - 1u);
    int32_t digits = __builtin_popcount(run_digits), keep_from = digits - 4;
    uint32_t masked = 0;
    if (digits >= min_digits && digits <= max_digits && keep_from > 0) {
        uint32_t m = run_digits;
        for (int32_t k = 0; k < keep_from; k++) m &= m - 1; /* drop the masked digits */
        masked = run_digits & ((m & -m) - 1u);              /* digits before the first kept */
    }
    const v128_t star = wasm_i8x16_splat('*');
    wasm_v128_store(dst, wasm_v128_bitselect(star, a, bytes_of_bits(masked & 0xFFFFu)));
    wasm_v128_store(dst + 16, wasm_v128_bitselect(star, b, bytes_of_bits(masked >> 16)));
    return run;
}

/* The end of the run of domain bytes ([A-Za-z0-9.-]) starting at s[i], 16 bytes at a
 * time (reads up to 15 bytes past the row, as next_special does). */
static inline __attribute__((always_inline)) int32_t domain_end(const uint8_t *s, int32_t i,
                                                                int32_t len) {
    const v128_t lower_a = wasm_i8x16_splat('a'), n26 = wasm_i8x16_splat(26);
    const v128_t zero = wasm_i8x16_splat('0'), ten = wasm_i8x16_splat(10);
    const v128_t dot = wasm_i8x16_splat('.'), dash = wasm_i8x16_splat('-');
    const v128_t case_bit = wasm_i8x16_splat(0x20);
    while (i < len) {
        v128_t v = wasm_v128_load(s + i);
        v128_t alpha = wasm_u8x16_lt(wasm_i8x16_sub(wasm_v128_or(v, case_bit), lower_a), n26);
        v128_t digit = wasm_u8x16_lt(wasm_i8x16_sub(v, zero), ten);
        v128_t punct = wasm_v128_or(wasm_i8x16_eq(v, dot), wasm_i8x16_eq(v, dash));
        uint32_t stop = ~(uint32_t)wasm_i8x16_bitmask(
                            wasm_v128_or(wasm_v128_or(alpha, digit), punct)) & 0xFFFFu;
        if (stop) {
            int32_t end = i + __builtin_ctz(stop);
            return end < len ? end : len;
        }
        i += 16;
    }
    return len;
}

/* Masks one row into dst at w; returns the new w. */
static inline __attribute__((always_inline)) uint32_t mask_row(const uint8_t *s, int32_t len,
                                                               uint8_t *dst, uint32_t w,
                                                               uint32_t cap, int checked) {
    int32_t done = 0; /* input consumed (written) up to here */
    for (;;) {
        int32_t p = next_special(s, done, len, dst, &w, checked);
        if (p >= len) break;
        int32_t e = p; /* end of the local run through p ('@' is not local: e = p) */
        while (e < len && IS(s[e], C_LOCAL)) e++;
        if (e + 1 < len && s[e] == '@' && IS(s[e + 1], C_DOMAIN)) {
            /* an e-mail: its local part starts where the local run does (not before
             * `done`); what of it was already copied verbatim is taken back */
            int32_t b = p;
            while (b > done && IS(s[b - 1], C_LOCAL)) b--;
            if (b < e) {
                w -= (uint32_t)(p - b);
                int32_t d = domain_end(s, e + 1, len);
                PUT('*');
                PUT('*');
                PUT('*');
                w = copy_run(dst, w, cap, s + e, d - e, checked);
                done = d;
                continue;
            }
        }
        if (s[p] == '@') { /* an '@' with no local part before it */
            PUT('@');
            done = p + 1;
            continue;
        }
        if (!checked) { /* the common case: the whole run within 31 bytes, in SIMD */
            int32_t run = card_window(s + p, len - p, dst + w);
            if (run > 0) {
                w += (uint32_t)run;
                done = p + run;
                continue;
            }
        }
        int32_t q = p + 1, digits = 1; /* a digit: a card-like run? */
        for (;;) {
            if (q < len && IS(s[q], C_DIGIT)) q++, digits++;
            else if (q + 1 < len && (s[q] == ' ' || s[q] == '-') && IS(s[q + 1], C_DIGIT))
                q += 2, digits++;
            else break;
        }
        if (digits >= min_digits && digits <= max_digits) {
            int32_t seen = 0, keep_from = digits - 4;
            for (int32_t k = p; k < q; k++) { /* branch-free: digits are random data */
                uint8_t c = s[k];
                int32_t digit = (cls[c] & C_DIGIT) != 0;
                PUT((digit & (seen < keep_from)) ? '*' : c);
                seen += digit;
            }
        } else {
            w = copy_run(dst, w, cap, s + p, q - p, checked);
        }
        done = q;
    }
    return w;
}

DF_EXPORT("dataflare_map") int32_t dataflare_map(uint32_t in_desc, int32_t n, uint32_t out_desc) {
    const df_column *in = DF_PTR(const df_column, in_desc);
    df_column *out = DF_PTR(df_column, out_desc);
    const int32_t *off = DF_PTR(const int32_t, in[0].values);
    const uint8_t *src = DF_PTR(const uint8_t, in[0].data);
    int32_t *ooff = DF_PTR(int32_t, out[0].values);
    uint8_t *dst = DF_PTR(uint8_t, out[0].data);
    const uint32_t cap = out[0].data_cap;
    uint32_t w = 0;
    if (!cls['a']) init_classes();
    df__cap = cap;
    for (int32_t row = 0; row < n; row++) {
        ooff[row] = (int32_t)w;
        const uint8_t *s = src + off[row];
        const int32_t len = off[row + 1] - off[row];
        /* unchecked copies may read up to 31 bytes past the row (still inside the host's
         * arena) and write up to 32 past w (inside the slack demanded here) */
        if ((uint64_t)w + 2u * (uint64_t)len + 48u <= cap) w = mask_row(s, len, dst, w, cap, 0);
        else w = mask_row(s, len, dst, w, cap, 1);
    }
    ooff[n] = (int32_t)w;
    out[0].validity = in[0].validity;
    out[0].data_len = w;
    return w > cap ? DF_NEED_MORE : DF_OK;
}
