/* Exact top-k selection for ExactIndex, in C (loaded with ctypes by fmrec/index/_cbackend.py).
 *
 * Same contract as the numba kernels in _kernels.py (which remain the fallback when
 * this library is not built): higher score first, equal scores by smaller catalogue
 * position.  A candidate is one uint64 key: the float32 score mapped to an
 * order-preserving uint32 in the high half, 0xFFFFFFFF - position in the low half.
 *
 * Each row keeps an unordered buffer of keys (capacity `cap` > k) and a threshold T,
 * the score of the k-th best key once k are known (-FLT_MAX before): a score enters
 * the buffer when it is >= T; a full buffer is cut back to its k best by a
 * quickselect, which raises T.  A row's first block is selected by a sampled
 * threshold (fast_start).  The scan compares 64 scores at a time into a bit mask
 * (AVX-512 or AVX2 where the CPU has them, picked at run time) and visits only its
 * set bits.  finish_select cuts each row to its k best, finish_sort orders them.
 *
 * No Python API is used: the functions are plain C, called through ctypes (which
 * releases the GIL for the duration of a call).
 */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The vector variants use GCC's `#pragma GCC target` regions and __builtin_cpu_supports;
 * other compilers (clang reads the pragma differently) build the portable C only. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(FMREC_PORTABLE_ONLY)
#define FMREC_X86 1
#include <immintrin.h>
#endif

#define LOWEST_F32 (-3.4028235e38f)

#ifdef FMREC_X86
/* What each compiled variant was built for (its `#pragma GCC target`), checked at run time. */
static int cpu_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2") &&
           __builtin_cpu_supports("popcnt");
}

static int cpu_avx512(void)
{
    return cpu_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}

static int cpu_fma(void) { return __builtin_cpu_supports("fma"); }
#endif

static inline uint64_t make_key(uint32_t bits, int64_t pos)
{
    bits = bits == 0x80000000u ? 0u : bits; /* -0.0 ties with +0.0 (smaller position first) */
    uint64_t u = bits;
    uint64_t m = u ^ (0x80000000ull | ((u >> 31) * 0x7FFFFFFFull));
    return (m << 32) | (0xFFFFFFFFull - (uint64_t)pos);
}

static inline uint32_t key_bits(uint64_t key)
{
    uint64_t m = key >> 32;
    if (m & 0x80000000ull)
        return (uint32_t)(m & 0x7FFFFFFFull);
    return (uint32_t)(m ^ 0xFFFFFFFFull);
}

static inline float key_score(uint64_t key)
{
    uint32_t b = key_bits(key);
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static inline int64_t key_pos(uint64_t key) { return (int64_t)(0xFFFFFFFFull - (key & 0xFFFFFFFFull)); }

/* Reorder buf[0:n] so that buf[target] holds the value of rank `target` (0 = largest),
 * larger values before it, smaller or equal after (quickselect, median-of-three pivots).
 * Each pass is a branch-free three-way partition out of place into `tmp` (n slots):
 * every value is stored at the next front slot and at the next back slot, and only the
 * counter of its side advances, so no load waits on the previous store (an in-place
 * branch-free Lomuto chains a load to every store: ~3x slower here); values equal to
 * the pivot are counted, not kept, and refilled in the middle. */
#define DEFINE_PARTITION(NAME, T)                                                   \
    static void NAME(T *buf, int64_t n, int64_t target, T *tmp)                    \
    {                                                                               \
        int64_t lo = 0, hi = n; /* the answer lies in buf[lo:hi] */                 \
        while (hi - lo > 1) {                                                       \
            int64_t cnt = hi - lo;                                                  \
            T *b = buf + lo;                                                        \
            T x = b[0], y = b[cnt >> 1], z = b[cnt - 1];                            \
            T pivot = (x > y) != (x > z) ? x : ((y > x) != (y > z) ? y : z);        \
            int64_t nl = 0, nr = 0;                                                 \
            for (int64_t t = 0; t < cnt; t++) {                                     \
                T v = b[t];                                                         \
                tmp[nl] = v;                                                        \
                tmp[cnt - 1 - nr] = v;                                              \
                nl += v > pivot;                                                    \
                nr += v < pivot;                                                    \
            }                                                                       \
            int64_t ne = cnt - nl - nr;                                             \
            memcpy(b, tmp, (size_t)nl * sizeof(T));                                 \
            for (int64_t t = nl; t < nl + ne; t++)                                  \
                b[t] = pivot;                                                       \
            memcpy(b + nl + ne, tmp + nl + ne, (size_t)nr * sizeof(T));             \
            int64_t tgt = target - lo;                                              \
            if (tgt < nl)                                                           \
                hi = lo + nl;                                                       \
            else if (tgt < nl + ne)                                                 \
                return;                                                             \
            else                                                                    \
                lo = lo + nl + ne;                                                  \
        }                                                                           \
    }

DEFINE_PARTITION(partition_desc_f32, float)
DEFINE_PARTITION(partition_desc_u64, uint64_t)

/* ---- the selection body, once per instruction set ---------------------------------- */

static inline uint64_t mask64_generic(const float *p, float T)
{
    uint64_t m = 0;
    for (int i = 0; i < 64; i++)
        m |= (uint64_t)(p[i] >= T) << i;
    return m;
}

#define SFX(name) name##_generic
#define MASK64 mask64_generic
#include "_ctopk_impl.h"
#undef SFX
#undef MASK64

#ifdef FMREC_X86
#pragma GCC push_options
#pragma GCC target("avx2,bmi,bmi2,popcnt")
static inline uint64_t mask64_avx2(const float *p, float T)
{
    __m256 t = _mm256_set1_ps(T);
    uint64_t m = 0;
    for (int i = 0; i < 8; i++) {
        __m256 v = _mm256_loadu_ps(p + 8 * i);
        m |= (uint64_t)(uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(v, t, _CMP_GE_OQ)) << (8 * i);
    }
    return m;
}
#define SFX(name) name##_avx2
#define MASK64 mask64_avx2
#include "_ctopk_impl.h"
#undef SFX
#undef MASK64
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,bmi,bmi2,popcnt")
static inline uint64_t mask64_avx512(const float *p, float T)
{
    __m512 t = _mm512_set1_ps(T);
    uint64_t m0 = _mm512_cmp_ps_mask(_mm512_loadu_ps(p), t, _CMP_GE_OQ);
    uint64_t m1 = _mm512_cmp_ps_mask(_mm512_loadu_ps(p + 16), t, _CMP_GE_OQ);
    uint64_t m2 = _mm512_cmp_ps_mask(_mm512_loadu_ps(p + 32), t, _CMP_GE_OQ);
    uint64_t m3 = _mm512_cmp_ps_mask(_mm512_loadu_ps(p + 48), t, _CMP_GE_OQ);
    return m0 | (m1 << 16) | (m2 << 32) | (m3 << 48);
}
#define SFX(name) name##_avx512
#define MASK64 mask64_avx512
#include "_ctopk_impl.h"
#undef SFX
#undef MASK64
#pragma GCC pop_options
#endif

/* ---- fused GEMM + selection (AVX-512) -----------------------------------------------
 *
 * After a user's first block (scores stored, selected by topk_block), the rest of the
 * catalogue needs no stored scores: a register-tiled GEMM computes 12 users x 32 items
 * at a time (24 zmm accumulators, one FMA chain per score over k = 0..K-1 in order) and
 * compares each user's 32 scores with that user's threshold while they are still in
 * registers; only passing scores leave them.  This removes the score block's write,
 * its zeroing by BLAS and its re-read by the scan (memory traffic: 8 GB at 100k users
 * x 20k items).  Items are packed once per search into panels of 32 (panel p holds
 * items 32p..32p+31 as K rows of 32 floats, zero-padded).  Each score is the same
 * sequential fused multiply-add chain wherever the user and item sit, so results do
 * not depend on blocks or partitions. */

void fmrec_pack_panels(const float *V, int64_t n, int64_t K, float *out)
{
    int64_t np = (n + 31) / 32;
    for (int64_t p = 0; p < np; p++) {
        float *o = out + p * K * 32;
        for (int64_t j = 0; j < 32; j++) {
            int64_t i = p * 32 + j;
            const float *v = V + i * K;
            if (i < n)
                for (int64_t k = 0; k < K; k++)
                    o[k * 32 + j] = v[k];
            else
                for (int64_t k = 0; k < K; k++)
                    o[k * 32 + j] = 0.0f;
        }
    }
}

#ifdef FMREC_X86
typedef struct {
    const int64_t *perm, *ex_ptr, *ex_pos;
    int64_t *ex_cur, *fill;
    int64_t has_excl, cap, k;
    uint64_t *keys, *tmp;
    float *thr;
} fused_ctx;
/* Row i's passing scores `sc` (bit b of m: column col0 + b passed the threshold when
 * the mask was taken) into its buffer: excluded columns skipped, keys appended, a full
 * buffer cut back to its k best (raising the threshold). */
static void take_row(const fused_ctx *c, int64_t i, const float *sc, uint32_t m, int64_t col0)
{
    uint64_t *buf = c->keys + i * c->cap;
    int64_t nf = c->fill[i];
    float T = c->thr[i];
    int64_t p = 0, pend = 0;
    if (c->has_excl) {
        p = c->ex_cur[i];
        pend = c->ex_ptr[i + 1];
    }
    while (m) {
        int b = __builtin_ctz(m);
        m &= m - 1;
        float s = sc[b];
        if (!(s >= T))
            continue;
        int64_t col = col0 + b;
        if (c->has_excl) {
            while (p < pend && c->ex_pos[p] < col)
                p++;
            if (p < pend && c->ex_pos[p] == col)
                continue;
        }
        uint32_t bits;
        memcpy(&bits, &s, sizeof bits);
        buf[nf++] = make_key(bits, c->perm[col]);
        if (nf == c->cap) {
            partition_desc_u64(buf, nf, c->k - 1, c->tmp);
            nf = c->k;
            T = key_score(buf[c->k - 1]);
        }
    }
    c->fill[i] = nf;
    c->thr[i] = T;
    if (c->has_excl)
        c->ex_cur[i] = p;
}


#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi,bmi2,popcnt")

#define FMREC_TILE_DECL                                                                               \
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, \
           c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00,      \
           c71 = c00, c80 = c00, c81 = c00, c90 = c00, c91 = c00, ca0 = c00, ca1 = c00, cb0 = c00, cb1 = c00;

#define FMREC_ROW(R, C0, C1)                  \
    x = _mm512_set1_ps(a[R][k]);              \
    C0 = _mm512_fmadd_ps(x, b0, C0);          \
    C1 = _mm512_fmadd_ps(x, b1, C1);

#define FMREC_TILE_LOOP                                                                                     \
    for (int64_t k = 0; k < K; k++) {                                                                      \
        __m512 b0 = _mm512_loadu_ps(b + k * 32), b1 = _mm512_loadu_ps(b + k * 32 + 16);                    \
        __m512 x;                                                                                           \
        FMREC_ROW(0, c00, c01) FMREC_ROW(1, c10, c11) FMREC_ROW(2, c20, c21) FMREC_ROW(3, c30, c31)          \
        FMREC_ROW(4, c40, c41) FMREC_ROW(5, c50, c51) FMREC_ROW(6, c60, c61) FMREC_ROW(7, c70, c71)          \
        FMREC_ROW(8, c80, c81) FMREC_ROW(9, c90, c91) FMREC_ROW(10, ca0, ca1) FMREC_ROW(11, cb0, cb1)        \
    }

#define FMREC_EACH_ROW(M)                                                                                   \
    M(0, c00, c01) M(1, c10, c11) M(2, c20, c21) M(3, c30, c31) M(4, c40, c41) M(5, c50, c51)               \
    M(6, c60, c61) M(7, c70, c71) M(8, c80, c81) M(9, c90, c91) M(10, ca0, ca1) M(11, cb0, cb1)

/* One sweep of 12-user tiles over panels P[0:n_panels] for rows 0..rows-1 (users U, K
 * dims).  With S (row stride ld): every score is stored (a search's first block).
 * Without (S NULL): panels hold visiting-order columns col_offset.., n_cols in all (the
 * last panel may be partial), and each row's scores that reach its threshold go to
 * take_row (buffers, fills, thresholds and exclusions continue from the first block).
 * chunk: panels per L2-resident chunk (every row tile sweeps a chunk, then the next). */
static void fused_tiles_avx512(const float *U, int64_t rows, int64_t K, const float *P, int64_t n_panels,
                               int64_t col_offset, int64_t n_cols, const fused_ctx *c, float *S, int64_t ld,
                               int64_t chunk)
{
    float sc[32] __attribute__((aligned(64)));
    for (int64_t pc = 0; pc < n_panels; pc += chunk) {
        int64_t pe = pc + chunk < n_panels ? pc + chunk : n_panels;
        for (int64_t i0 = 0; i0 < rows; i0 += 12) {
            const float *a[12];
            for (int r = 0; r < 12; r++)
                a[r] = U + (i0 + r < rows ? i0 + r : rows - 1) * K;
            int64_t nr = rows - i0 < 12 ? rows - i0 : 12;
            for (int64_t p = pc; p < pe; p++) {
                const float *b = P + p * K * 32;
                FMREC_TILE_DECL
                FMREC_TILE_LOOP
                if (S) {
                    float *s = S + i0 * ld + p * 32;
#define FMREC_STORE(R, C0, C1)                         \
    if (R < nr) {                                      \
        _mm512_storeu_ps(s + R * ld, C0);              \
        _mm512_storeu_ps(s + R * ld + 16, C1);         \
    }
                    FMREC_EACH_ROW(FMREC_STORE)
#undef FMREC_STORE
                    continue;
                }
                int64_t col0 = col_offset + p * 32;
                int64_t left = n_cols - p * 32;
                uint32_t valid = left >= 32 ? 0xFFFFFFFFu : ((1u << left) - 1u);
                const float *thr = c->thr;
#define FMREC_PICK(R, C0, C1)                                                                    \
    if (R < nr) {                                                                                \
        __m512 t = _mm512_set1_ps(thr[i0 + R]);                                                  \
        uint32_t m = ((uint32_t)_mm512_cmp_ps_mask(C0, t, _CMP_GE_OQ) |                          \
                      ((uint32_t)_mm512_cmp_ps_mask(C1, t, _CMP_GE_OQ) << 16)) & valid;          \
        if (m) {                                                                                 \
            _mm512_store_ps(sc, C0);                                                             \
            _mm512_store_ps(sc + 16, C1);                                                        \
            take_row(c, i0 + R, sc, m, col0);                                                    \
        }                                                                                        \
    }
                FMREC_EACH_ROW(FMREC_PICK)
#undef FMREC_PICK
            }
        }
    }
}
#pragma GCC pop_options

/* AVX2 + FMA: 6 users x 16 items per tile (12 ymm accumulators), each 32-item panel in
 * two halves; the same FMA chain per score, so the same scores as the AVX-512 tiles. */
#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi,bmi2,popcnt")

#define FMREC_TILE2_DECL                                                                                   \
    __m256 d00 = _mm256_setzero_ps(), d01 = d00, d10 = d00, d11 = d00, d20 = d00, d21 = d00, d30 = d00,     \
           d31 = d00, d40 = d00, d41 = d00, d50 = d00, d51 = d00;

#define FMREC_ROW2(R, C0, C1)                 \
    x = _mm256_set1_ps(a[R][k]);              \
    C0 = _mm256_fmadd_ps(x, b0, C0);          \
    C1 = _mm256_fmadd_ps(x, b1, C1);

#define FMREC_TILE2_LOOP                                                                                    \
    for (int64_t k = 0; k < K; k++) {                                                                      \
        __m256 b0 = _mm256_loadu_ps(b + k * 32), b1 = _mm256_loadu_ps(b + k * 32 + 8);                     \
        __m256 x;                                                                                           \
        FMREC_ROW2(0, d00, d01) FMREC_ROW2(1, d10, d11) FMREC_ROW2(2, d20, d21)                              \
        FMREC_ROW2(3, d30, d31) FMREC_ROW2(4, d40, d41) FMREC_ROW2(5, d50, d51)                              \
    }

#define FMREC_EACH_ROW2(M) M(0, d00, d01) M(1, d10, d11) M(2, d20, d21) M(3, d30, d31) M(4, d40, d41) M(5, d50, d51)

/* fused_tiles_avx512 with 6-user x 16-item tiles (each panel in two halves). */
static void fused_tiles_avx2(const float *U, int64_t rows, int64_t K, const float *P, int64_t n_panels,
                             int64_t col_offset, int64_t n_cols, const fused_ctx *c, float *S, int64_t ld,
                             int64_t chunk)
{
    float sc[16] __attribute__((aligned(32)));
    for (int64_t pc = 0; pc < n_panels; pc += chunk) {
        int64_t pe = pc + chunk < n_panels ? pc + chunk : n_panels;
        for (int64_t i0 = 0; i0 < rows; i0 += 6) {
            const float *a[6];
            for (int r = 0; r < 6; r++)
                a[r] = U + (i0 + r < rows ? i0 + r : rows - 1) * K;
            int64_t nr = rows - i0 < 6 ? rows - i0 : 6;
            for (int64_t p = pc; p < pe; p++) {
                for (int h = 0; h < 2; h++) {
                    const float *b = P + p * K * 32 + h * 16;
                    FMREC_TILE2_DECL
                    FMREC_TILE2_LOOP
                    if (S) {
                        float *s = S + i0 * ld + p * 32 + h * 16;
#define FMREC_STORE2(R, C0, C1)                        \
    if (R < nr) {                                      \
        _mm256_storeu_ps(s + R * ld, C0);              \
        _mm256_storeu_ps(s + R * ld + 8, C1);          \
    }
                        FMREC_EACH_ROW2(FMREC_STORE2)
#undef FMREC_STORE2
                        continue;
                    }
                    int64_t col0 = col_offset + p * 32 + h * 16;
                    int64_t left = n_cols - p * 32 - h * 16;
                    uint32_t valid = left >= 16 ? 0xFFFFu : (left > 0 ? ((1u << left) - 1u) : 0u);
                    const float *thr = c->thr;
#define FMREC_PICK2(R, C0, C1)                                                                   \
    if (R < nr) {                                                                                \
        __m256 t = _mm256_set1_ps(thr[i0 + R]);                                                  \
        uint32_t m = ((uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(C0, t, _CMP_GE_OQ)) |           \
                      ((uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(C1, t, _CMP_GE_OQ)) << 8)) & valid; \
        if (m) {                                                                                 \
            _mm256_store_ps(sc, C0);                                                             \
            _mm256_store_ps(sc + 8, C1);                                                         \
            take_row(c, i0 + R, sc, m, col0);                                                    \
        }                                                                                        \
    }
                    FMREC_EACH_ROW2(FMREC_PICK2)
#undef FMREC_PICK2
                }
            }
        }
    }
}
#pragma GCC pop_options
#endif

static int64_t fused_level = -1; /* -1: the best this CPU has; else fmrec_select_isa's level */

static int64_t fused_isa(void)
{
#ifdef FMREC_X86
    __builtin_cpu_init();
    int64_t best = cpu_avx512() && cpu_fma() ? 2 : cpu_avx2() && cpu_fma() ? 1 : 0;
    return fused_level < 0 || fused_level > best ? best : fused_level;
#else
    return 0;
#endif
}

/* 1 when the fused kernels can run here: AVX-512 + FMA, or AVX2 + FMA (within the
 * level fmrec_select_isa set). */
int64_t fmrec_fused_available(void) { return fused_isa() > 0; }

#ifdef FMREC_X86
static void fused_tiles(const float *U, int64_t rows, int64_t K, const float *P, int64_t n_panels,
                        int64_t col_offset, int64_t n_cols, const fused_ctx *c, float *S, int64_t ld, int64_t chunk)
{
    int64_t isa = fused_isa();
    if (chunk < 1)
        chunk = 1;
    if (isa == 2)
        fused_tiles_avx512(U, rows, K, P, n_panels, col_offset, n_cols, c, S, ld, chunk);
    else if (isa == 1)
        fused_tiles_avx2(U, rows, K, P, n_panels, col_offset, n_cols, c, S, ld, chunk);
}
#endif

/* Scores of rows x (32 n_panels) into S (row stride ld): the first block of a search. */
void fmrec_fused_scores(const float *U, int64_t rows, int64_t K, const float *P, int64_t n_panels, float *S,
                        int64_t ld)
{
#ifdef FMREC_X86
    fused_tiles(U, rows, K, P, n_panels, 0, n_panels * 32, 0, S, ld, n_panels);
#else
    (void)U, (void)rows, (void)K, (void)P, (void)n_panels, (void)S, (void)ld;
#endif
}

/* The rest of the catalogue for rows 0..rows-1 (see fused_tiles_avx512). */
void fmrec_fused_select(const float *U, int64_t rows, int64_t K, const float *P, int64_t n_panels,
                        int64_t col_offset, int64_t n_cols, const int64_t *perm, const int64_t *ex_ptr,
                        const int64_t *ex_pos, int64_t *ex_cur, int64_t has_excl, uint64_t *keys, int64_t cap,
                        int64_t k, int64_t *fill, float *thr, uint64_t *tmp, int64_t chunk)
{
#ifdef FMREC_X86
    fused_ctx c = {perm, ex_ptr, ex_pos, ex_cur, fill, has_excl, cap, k, keys, tmp, thr};
    fused_tiles(U, rows, K, P, n_panels, col_offset, n_cols, &c, 0, 0, chunk);
#else
    (void)U, (void)rows, (void)K, (void)P, (void)n_panels, (void)col_offset, (void)n_cols, (void)perm;
    (void)ex_ptr, (void)ex_pos, (void)ex_cur, (void)has_excl, (void)keys, (void)cap, (void)k, (void)fill;
    (void)thr, (void)tmp, (void)chunk;
#endif
}

/* IVF scan (FaissIndex over IVF...,Flat): each user's probed lists scored exactly.
 * Lists are stored as panels of 32 items (K rows of 32 floats, as fmrec_pack_panels)
 * with their catalogue positions (-1 pads a list to whole panels); list l owns panels
 * list_ptr[l]..list_ptr[l+1]-1.  For user r (row r of Q, K dims) and its probes
 * probes[r*nprobe ..] (-1: none), every item of those lists is scored by the same FMA
 * chain as the fused GEMM, excluded positions (CSR ex_ptr/ex_idx, row r; marked in the
 * byte map `banned`, n_items bytes, zero on entry and exit) are skipped, and the
 * scores enter the row's key buffer (keys + r*cap, fill[r]) as in fmrec_topk_block:
 * appended when >= the row's threshold, cut back to the k best when full.  Two panels
 * are scored at a time (8 AVX2 accumulators: throughput-bound, not latency-bound; an
 * AVX-512 version with four panels at a time measured no faster). */
static void ivf_take(float *sc, const int64_t *ids, uint32_t m, const uint8_t *banned, uint64_t *buf,
                     int64_t *nf_io, float *T_io, int64_t cap, int64_t k, uint64_t *tmp)
{
    int64_t nf = *nf_io;
    float T = *T_io;
    while (m) {
        int b = __builtin_ctz(m);
        m &= m - 1;
        float s = sc[b];
        int64_t pos = ids[b];
        if (!(s >= T) || pos < 0 || banned[pos])
            continue;
        uint32_t bits;
        memcpy(&bits, &s, sizeof bits);
        buf[nf++] = make_key(bits, pos);
        if (nf == cap) {
            partition_desc_u64(buf, nf, k - 1, tmp);
            nf = k;
            T = key_score(buf[k - 1]);
        }
    }
    *nf_io = nf;
    *T_io = T;
}

static void ivf_scan_generic(const float *Q, int64_t r0, int64_t r1, int64_t K, const int64_t *probes,
                             int64_t nprobe, const int64_t *list_ptr, const float *panels, const int64_t *panel_ids,
                             const int64_t *ex_ptr, const int32_t *ex_idx, int64_t has_excl, uint8_t *banned,
                             uint64_t *keys, int64_t cap, int64_t k, int64_t *fill, uint64_t *tmp)
{
    float sc[32];
    for (int64_t r = r0; r < r1; r++) {
        const float *q = Q + r * K;
        if (has_excl)
            for (int64_t p = ex_ptr[r]; p < ex_ptr[r + 1]; p++)
                banned[ex_idx[p]] = 1;
        uint64_t *buf = keys + (r - r0) * cap;
        int64_t nf = 0;
        float T = LOWEST_F32;
        for (int64_t t = 0; t < nprobe; t++) {
            int64_t l = probes[r * nprobe + t];
            if (l < 0)
                continue;
            for (int64_t pnl = list_ptr[l]; pnl < list_ptr[l + 1]; pnl++) {
                const float *b = panels + pnl * K * 32;
                for (int j = 0; j < 32; j++)
                    sc[j] = 0.0f;
                for (int64_t f = 0; f < K; f++)
                    for (int j = 0; j < 32; j++)
                        sc[j] = fmaf(q[f], b[f * 32 + j], sc[j]);
                uint32_t m = 0;
                for (int j = 0; j < 32; j++)
                    m |= (uint32_t)(sc[j] >= T) << j;
                ivf_take(sc, panel_ids + pnl * 32, m, banned, buf, &nf, &T, cap, k, tmp);
            }
        }
        fill[r - r0] = nf;
        if (has_excl)
            for (int64_t p = ex_ptr[r]; p < ex_ptr[r + 1]; p++)
                banned[ex_idx[p]] = 0;
    }
}


#ifdef FMREC_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi,bmi2,popcnt")
static void ivf_scan_avx2(const float *Q, int64_t r0, int64_t r1, int64_t K, const int64_t *probes,
                          int64_t nprobe, const int64_t *list_ptr, const float *panels, const int64_t *panel_ids,
                          const int64_t *ex_ptr, const int32_t *ex_idx, int64_t has_excl, uint8_t *banned,
                          uint64_t *keys, int64_t cap, int64_t k, int64_t *fill, uint64_t *tmp)
{
    float sc[2][32] __attribute__((aligned(32)));
    int64_t pend[2];
    for (int64_t r = r0; r < r1; r++) {
        const float *q = Q + r * K;
        if (has_excl)
            for (int64_t p = ex_ptr[r]; p < ex_ptr[r + 1]; p++)
                banned[ex_idx[p]] = 1;
        uint64_t *buf = keys + (r - r0) * cap;
        int64_t nf = 0;
        float T = LOWEST_F32;
        int64_t t = 0, pnl = 0, pl_end = 0;
        for (;;) { /* the probed lists' panels two at a time (8 ymm accumulators) */
            int got = 0;
            while (got < 2) {
                if (pnl >= pl_end) {
                    if (t >= nprobe)
                        break;
                    int64_t l = probes[r * nprobe + t++];
                    if (l < 0)
                        continue;
                    pnl = list_ptr[l];
                    pl_end = list_ptr[l + 1];
                    continue;
                }
                pend[got++] = pnl++;
            }
            if (got == 0)
                break;
            const float *b0 = panels + pend[0] * K * 32;
            const float *b1 = panels + pend[got > 1 ? 1 : 0] * K * 32;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
            for (int64_t f = 0; f < K; f++) {
                __m256 x = _mm256_set1_ps(q[f]);
                a0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b0 + f * 32), a0);
                a1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b0 + f * 32 + 8), a1);
                a2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b0 + f * 32 + 16), a2);
                a3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b0 + f * 32 + 24), a3);
                a4 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b1 + f * 32), a4);
                a5 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b1 + f * 32 + 8), a5);
                a6 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b1 + f * 32 + 16), a6);
                a7 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b1 + f * 32 + 24), a7);
            }
            _mm256_store_ps(sc[0], a0);
            _mm256_store_ps(sc[0] + 8, a1);
            _mm256_store_ps(sc[0] + 16, a2);
            _mm256_store_ps(sc[0] + 24, a3);
            _mm256_store_ps(sc[1], a4);
            _mm256_store_ps(sc[1] + 8, a5);
            _mm256_store_ps(sc[1] + 16, a6);
            _mm256_store_ps(sc[1] + 24, a7);
            for (int g = 0; g < got; g++) {
                __m256 tv = _mm256_set1_ps(T);
                uint32_t m = 0;
                for (int h = 0; h < 4; h++)
                    m |= (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_load_ps(sc[g] + 8 * h), tv, _CMP_GE_OQ))
                         << (8 * h);
                if (m)
                    ivf_take(sc[g], panel_ids + pend[g] * 32, m, banned, buf, &nf, &T, cap, k, tmp);
            }
        }
        fill[r - r0] = nf;
        if (has_excl)
            for (int64_t p = ex_ptr[r]; p < ex_ptr[r + 1]; p++)
                banned[ex_idx[p]] = 0;
    }
}
#pragma GCC pop_options
#endif

/* 1 when fmrec_ivf_scan has a vector path on this CPU (AVX2 with FMA); the
 * portable path exists for tests and other CPUs, where faiss's own scan is faster. */
int64_t fmrec_ivf_fast(void)
{
#ifdef FMREC_X86
    __builtin_cpu_init();
    return cpu_avx2() && cpu_fma();
#else
    return 0;
#endif
}

/* Rows r0..r1-1 of a batch (keys/fill indexed from r0); isa as fmrec_select_isa's
 * level: AVX2 + FMA at level >= 1 where the CPU has them, else portable C (0);
 * every level computes the same scores (one FMA chain per score over k in order). */
void fmrec_ivf_scan(const float *Q, int64_t r0, int64_t r1, int64_t K, const int64_t *probes, int64_t nprobe,
                    const int64_t *list_ptr, const float *panels, const int64_t *panel_ids, const int64_t *ex_ptr,
                    const int32_t *ex_idx, int64_t has_excl, uint8_t *banned, uint64_t *keys, int64_t cap, int64_t k,
                    int64_t *fill, uint64_t *tmp, int64_t isa)
{
#ifdef FMREC_X86
    if (isa >= 1 && cpu_avx2() && cpu_fma()) {
        ivf_scan_avx2(Q, r0, r1, K, probes, nprobe, list_ptr, panels, panel_ids, ex_ptr, ex_idx, has_excl, banned,
                      keys, cap, k, fill, tmp);
        return;
    }
#else
    (void)isa;
#endif
    ivf_scan_generic(Q, r0, r1, K, probes, nprobe, list_ptr, panels, panel_ids, ex_ptr, ex_idx, has_excl, banned, keys,
                     cap, k, fill, tmp);
}

typedef void (*topk_block_fn)(float *, int64_t, int64_t, int64_t, int64_t, const int64_t *, const int64_t *,
                              const int64_t *, int64_t *, int64_t, uint64_t *, int64_t, int64_t, int64_t *,
                              float *, float *, uint64_t *, int64_t, uint64_t *);

static topk_block_fn pick(int64_t isa)
{
#ifdef FMREC_X86
    if (isa < 0) {
        __builtin_cpu_init();
        isa = cpu_avx512() ? 2 : cpu_avx2() ? 1 : 0;
    }
    if (isa >= 2)
        return topk_block_avx512;
    if (isa == 1)
        return topk_block_avx2;
#else
    (void)isa;
#endif
    return topk_block_generic;
}

/* Instruction set the kernels use: 2 = AVX-512, 1 = AVX2, 0 = portable C.  `want` < 0:
 * the best this CPU has; otherwise at most `want` (tests run every level the CPU has). */
static topk_block_fn chosen = 0;

int64_t fmrec_select_isa(int64_t want)
{
    int64_t best = 0;
#ifdef FMREC_X86
    __builtin_cpu_init();
    best = cpu_avx512() ? 2 : cpu_avx2() ? 1 : 0;
#endif
    int64_t isa = (want < 0 || want > best) ? best : want;
    chosen = pick(isa);
    fused_level = want < 0 ? -1 : want;
    return isa;
}

/* Merge S[0:n_rows, 0:n_cols] (row stride `ld` floats) into the rows' buffers.
 * Column c is catalogue item perm[col_offset + c].  Row r's excluded items are
 * ex_pos[ex_ptr[r]:ex_ptr[r+1]] in visiting order, sorted; ex_cur[r] walks them block
 * by block (blocks come in increasing col_offset); they are set to -inf in S, and -inf
 * never passes a threshold.  keys (n_rows x cap), fill (n_rows), thr (n_rows): each
 * row's buffer, its length and its threshold (start: fill 0, thr -FLT_MAX).  sample:
 * n_cols / 4 + 1 floats, cand: cand_len >= 4k keys, tmp: max(cap, cand_len, n_cols / 4 + 1) keys
 * of scratch. */
void fmrec_topk_block(float *S, int64_t ld, int64_t n_rows, int64_t n_cols, int64_t col_offset, const int64_t *perm,
                      const int64_t *ex_ptr, const int64_t *ex_pos, int64_t *ex_cur, int64_t has_excl, uint64_t *keys,
                      int64_t cap, int64_t k, int64_t *fill, float *thr, float *sample, uint64_t *cand,
                      int64_t cand_len, uint64_t *tmp)
{
    topk_block_fn f = chosen;
    if (!f) {
        fmrec_select_isa(-1);
        f = chosen;
    }
    f(S, ld, n_rows, n_cols, col_offset, perm, ex_ptr, ex_pos, ex_cur, has_excl, keys, cap, k, fill, thr, sample, cand,
      cand_len, tmp);
}

/* Start state of n rows: fill 0, threshold -FLT_MAX. */
void fmrec_reset_rows(int64_t *fill, float *thr, int64_t n)
{
    for (int64_t r = 0; r < n; r++) {
        fill[r] = 0;
        thr[r] = LOWEST_F32;
    }
}

static void sort_i64(int64_t *a, int64_t n)
{
    for (int64_t i = 1; i < n; i++) { /* insertion sort: exclusion rows are short */
        int64_t v = a[i];
        int64_t j = i - 1;
        while (j >= 0 && a[j] > v) {
            a[j + 1] = a[j];
            j--;
        }
        a[j + 1] = v;
    }
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Exclusions of users start..stop-1 (CSR indptr/indices over catalogue positions) as
 * visiting-order positions inv[...], sorted per row: out_ptr (rows + 1), out_pos. */
void fmrec_remap_exclusions(const int64_t *indptr, const int32_t *indices, const int64_t *inv, int64_t start,
                            int64_t stop, int64_t *out_ptr, int64_t *out_pos)
{
    int64_t base = indptr[start];
    out_ptr[0] = 0;
    for (int64_t r = 0; r < stop - start; r++) {
        int64_t a = indptr[start + r], b = indptr[start + r + 1];
        out_ptr[r + 1] = b - base;
        int64_t *o = out_pos + (a - base);
        for (int64_t p = a; p < b; p++)
            o[p - a] = inv[indices[p]];
        if (b - a <= 64)
            sort_i64(o, b - a);
        else
            qsort(o, (size_t)(b - a), sizeof(int64_t), cmp_i64);
    }
}

/* Cut every row to its k best keys (unordered; tmp: cap keys of scratch) and pad rows shorter than k with key 0
 * (below every real key); fill[r] becomes min(fill[r], k). */
void fmrec_finish_select(uint64_t *keys, int64_t cap, int64_t k, int64_t *fill, int64_t n_rows, uint64_t *tmp)
{
    for (int64_t r = 0; r < n_rows; r++) {
        uint64_t *buf = keys + r * cap;
        int64_t nf = fill[r];
        if (nf > k) {
            partition_desc_u64(buf, nf, k - 1, tmp);
            nf = fill[r] = k;
        }
        for (int64_t t = nf; t < k; t++)
            buf[t] = 0;
    }
}

/* Rows whose first k keys are sorted ascending (numpy's sort) written best first:
 * scores as float32 bits, catalogue positions; -inf / -1 past fill[r]. */
void fmrec_finish_write(const uint64_t *keys, int64_t cap, int64_t k, const int64_t *fill, int64_t n_rows,
                        uint32_t *out_bits, int64_t *out_i)
{
    for (int64_t r = 0; r < n_rows; r++) {
        const uint64_t *buf = keys + r * cap;
        int64_t nf = fill[r];
        uint32_t *ob = out_bits + r * k;
        int64_t *oi = out_i + r * k;
        for (int64_t t = 0; t < nf; t++) {
            uint64_t key = buf[k - 1 - t];
            ob[t] = key_bits(key);
            oi[t] = key_pos(key);
        }
        for (int64_t t = nf; t < k; t++) {
            ob[t] = 0xFF800000u;
            oi[t] = -1;
        }
    }
}
