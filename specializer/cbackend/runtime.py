"""The C helpers every translated residual includes: buffers, an arena, Python's integer
semantics where C's differ (floor division and modulo, shifts, overflow), big-endian
reads of whole byte strings as one integer (the checksum's ``int.from_bytes``), and the
big-endian stores of ``struct``. A helper that returns 0 means "Python would not get here
the C way" (an exception, or an integer past 64 bits): the caller goes back to Python."""

RUNTIME = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define CB_BE64(x) __builtin_bswap64(x)
#else
#define CB_BE64(x) (x)
#endif

typedef struct { uint8_t *p; int64_t n; } cb_buf;
typedef struct { void *blocks[CB_ARENA]; int count; } cb_arena;

static inline uint8_t *cb_alloc(cb_arena *a, int64_t n) {
    void *p;
    if (n < 0 || a->count == CB_ARENA) return NULL;
    p = malloc(n ? (size_t)n : 1);
    if (p) a->blocks[a->count++] = p;
    return p;
}

static inline void cb_free(cb_arena *a) {
    for (int i = 0; i < a->count; i++) free(a->blocks[i]);
}

static inline int cb_concat(cb_arena *a, cb_buf x, cb_buf y, cb_buf *r) {
    int64_t n;
    if (x.n < 0 || y.n < 0 || __builtin_add_overflow(x.n, y.n, &n) || !(r->p = cb_alloc(a, n))) return 0;
    memcpy(r->p, x.p, (size_t)x.n);
    memcpy(r->p + x.n, y.p, (size_t)y.n);
    r->n = n;
    return 1;
}

/* Python's x // y and x % y (the quotient rounds down, the remainder takes y's sign). */
static inline int cb_floordiv(int64_t x, int64_t y, int64_t *r) {
    int64_t q;
    if (y == 0 || (x == INT64_MIN && y == -1)) return 0;
    q = x / y;
    if ((x % y != 0) && ((x < 0) != (y < 0))) q--;
    *r = q;
    return 1;
}

static inline int cb_mod(int64_t x, int64_t y, int64_t *r) {
    int64_t m;
    if (y == 0) return 0;
    if (y == -1) { *r = 0; return 1; }
    m = x % y;
    if (m != 0 && ((m < 0) != (y < 0))) m += y;
    *r = m;
    return 1;
}

static inline int cb_lshift(int64_t x, int64_t s, int64_t *r) {
    if (s < 0) return 0;
    if (x == 0) { *r = 0; return 1; }
    if (s > 62) return 0;
    if (x > (INT64_MAX >> s) || x < (INT64_MIN >> s)) return 0;
    *r = (int64_t)((uint64_t)x << s);
    return 1;
}

static inline int cb_rshift(int64_t x, int64_t s, int64_t *r) {
    if (s < 0) return 0;
    *r = s > 63 ? (x < 0 ? -1 : 0) : (x >> s);
    return 1;
}

/* int.from_bytes(p[:n], 'big') % m, for m > 0. For the checksum's modulus 65535,
   2**64 is 1 mod 65535: the value's big-endian 64-bit words (counted from its end) just
   add up, the first one short if n is not a multiple of 8. */
static inline int cb_be_mod(const uint8_t *p, int64_t n, int64_t m, int64_t *r) {
    if (m <= 0) return 0;
    if (m == 65535) {
        unsigned __int128 sum = 0;
        uint64_t word = 0;
        int64_t i = 0;
        for (; i < n % 8; i++) word = word << 8 | p[i];
        sum = word;
        for (; i < n; i += 8) {
            memcpy(&word, p + i, 8);
            sum += CB_BE64(word);
        }
        *r = (int64_t)(sum % 65535);
        return 1;
    }
    unsigned __int128 acc = 0;
    for (int64_t i = 0; i < n; i++) acc = (acc * 256 + p[i]) % (uint64_t)m;
    *r = (int64_t)acc;
    return 1;
}

/* int.from_bytes(p[:n], 'big') == v */
static inline int cb_be_eq(const uint8_t *p, int64_t n, int64_t v) {
    uint64_t low = 0;
    int64_t i = 0;
    if (v < 0) return 0;
    for (; i < n - 8; i++) if (p[i]) return 0;
    for (; i < n; i++) low = low << 8 | p[i];
    return low == (uint64_t)v;
}

/* Python's adjustment of a slice's bounds (step 1) to a sequence of n items */
static inline void cb_bounds(int64_t n, int has_lo, int64_t lo, int has_hi, int64_t hi, int64_t *start, int64_t *stop) {
    if (!has_lo) lo = 0; else if (lo < 0) { lo += n; if (lo < 0) lo = 0; } else if (lo > n) lo = n;
    if (!has_hi) hi = n; else if (hi < 0) { hi += n; if (hi < 0) hi = 0; } else if (hi > n) hi = n;
    *start = lo;
    *stop = hi < lo ? lo : hi;
}

static inline void cb_put(uint8_t *p, int size, uint64_t v) {
    for (int i = size - 1; i >= 0; i--) { p[i] = (uint8_t)v; v >>= 8; }
}

/* struct's range check for one field of ``size`` bytes, signed or not */
static inline int cb_fits(int64_t v, int size, int is_signed) {
    if (size == 8) return is_signed || v >= 0;
    int64_t half = (int64_t)1 << (8 * size - 1);
    return is_signed ? (v >= -half && v < half) : (v >= 0 && v < 2 * half);
}
"""
