/* The decode step as CPU kernels (x86-64 with AVX-512, or AVX2 with F16C and FMA):
kvwhisper.cpu._kernels.

A cached decode step multiplies a few rows (one per beam) by every weight of the decoder and attends them
over every audio position: its time is the bytes it reads. Python side: kvwhisper/cpu/kernels.py.

gemv: y[m, n] = sum_k W[n, k] * x[m, k] + bias[n] + add[m, n], over 2-byte weights in fp32 arithmetic.
   Whisper's checkpoints store their weights as fp16 numbers, so an fp32 model's weights are fp16 values held
   in 4 bytes. Here they are read as the 2-byte fp16 numbers they are and widened to fp32 in registers
   (vcvtph2ps: exact), so the arithmetic is fp32's and the bytes read are halved. A bf16 model's weights are
   read as bf16 and widened the same way (a shift), against fp32 rows: only the weights are rounded. An int8 model's
   weights are read as int8 (one byte: a quarter of fp32's) and widened, each output's sum then multiplied by
   its scale (kind 2; the scales follow the weights in the pack). W is packed as
   (ceil(N / 64), K, 64) fp16: for each group of 64 outputs, their 64 weights of input k are contiguous, so a
   group is one sequential stream.

attend: softmax(q K^T / sqrt(D)) V for a few query rows per (batch, head) over S keys, in fp32: one pass over
   K for the scores (kept in a small buffer), one over V. Strides are given per tensor, so the fused q/k/v
   product's views, the self-attention cache's slice and the cross-attention K/V are read where they lie.

Two versions of each, chosen at run time (set_isa; by default the best this CPU runs): AVX-512's and AVX2's.
Both are the one width-generic code below, written over vectors of 16 fp32 numbers: one AVX-512 register or
two AVX2 registers. Each lane does the same operations in the same order in both, and the horizontal sums
add in the same tree, so the two give the same bits; they differ only in how many vectors a pass keeps in
registers (VECS: AVX-512 has 32 registers of 16 numbers, AVX2 16 of 8).

Work is split over OpenMP threads (the OpenMP runtime torch loaded, when it is the same library): by groups
of 64 outputs, or by (batch, head). Each output is computed by one thread in one order, so results do not
depend on the thread count. No torch headers: the wrapper passes data pointers (tensor.data_ptr()) as ints.

The file is compiled once and includes itself once per instruction set: the module part first (`V` not
defined), and, at its end, the width-generic kernels. */

#ifndef V /* ---------------------------------- the module ---------------------------------- */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_KERNEL 1
#include <immintrin.h>
#else
#define HAVE_KERNEL 0
#endif

#define GROUP 64 /* outputs per group of the packed weight: 4 vectors of 16 */
#define MAX_ROWS 5 /* rows per pass: 5 x VECS accumulators and VECS weights stay in registers */
#define ATTEND_ROWS 8 /* query rows per (batch, head) at most: beams of a window */
#define LSTM_MAX_H 256 /* the LSTM kernel's largest state */

#if HAVE_KERNEL
#define INLINE static inline __attribute__((always_inline))
#define TARGET_AVX512 __attribute__((target("avx512f,f16c,fma")))
#define TARGET_AVX2 __attribute__((target("avx2,f16c,fma")))

/* Vectors of 16 fp32 numbers, one type and one set of operations per instruction set (name_avx512,
   name_avx2): zero, set1, load/store of 16 or of the first n (1..16: loadn zero-fills the others),
   keepn (the first n lanes, zeros after), add, sub, mul, div, max, min, fma (a * b + c), fnma (c - a * b),
   round (to nearest), scale2 (p * 2^n for integral n in [-126, 127]), hsum (the sum of the 16 lanes in one fixed tree)
   and widen (16 stored 2-byte weights as fp32: exact, fp16 by vcvtph2ps, bf16 by a 16-bit shift). */

/* the sum of 8 lanes as ((4 + 0) + (6 + 2)) + ((5 + 1) + (7 + 3)); 16 lanes add their halves first (the
   tree of _mm512_reduce_add_ps), in both instruction sets */
INLINE __attribute__((target("avx"))) float
hsum8(__m256 v)
{
    __m128 t = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    t = _mm_add_ps(t, _mm_movehl_ps(t, t));
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

/* AVX-512: one register, n lanes by a mask */
typedef __m512 vec_avx512;
#define LANES(n) ((n) >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n)) - 1))
INLINE TARGET_AVX512 __m512 zero_avx512(void) { return _mm512_setzero_ps(); }
INLINE TARGET_AVX512 __m512 set1_avx512(float f) { return _mm512_set1_ps(f); }
INLINE TARGET_AVX512 __m512 load_avx512(const float *p) { return _mm512_loadu_ps(p); }
INLINE TARGET_AVX512 void store_avx512(float *p, __m512 v) { _mm512_storeu_ps(p, v); }
INLINE TARGET_AVX512 __m512 loadn_avx512(const float *p, int n) { return _mm512_maskz_loadu_ps(LANES(n), p); }
INLINE TARGET_AVX512 void storen_avx512(float *p, __m512 v, int n) { _mm512_mask_storeu_ps(p, LANES(n), v); }
INLINE TARGET_AVX512 __m512 keepn_avx512(__m512 v, int n) { return _mm512_maskz_mov_ps(LANES(n), v); }
INLINE TARGET_AVX512 __m512 add_avx512(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
INLINE TARGET_AVX512 __m512 sub_avx512(__m512 a, __m512 b) { return _mm512_sub_ps(a, b); }
INLINE TARGET_AVX512 __m512 mul_avx512(__m512 a, __m512 b) { return _mm512_mul_ps(a, b); }
INLINE TARGET_AVX512 __m512 max_avx512(__m512 a, __m512 b) { return _mm512_max_ps(a, b); }
INLINE TARGET_AVX512 __m512 min_avx512(__m512 a, __m512 b) { return _mm512_min_ps(a, b); }
INLINE TARGET_AVX512 __m512 div_avx512(__m512 a, __m512 b) { return _mm512_div_ps(a, b); }
INLINE TARGET_AVX512 __m512 fma_avx512(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
INLINE TARGET_AVX512 __m512 fnma_avx512(__m512 a, __m512 b, __m512 c) { return _mm512_fnmadd_ps(a, b, c); }
INLINE TARGET_AVX512 __m512 scale2_avx512(__m512 p, __m512 n) { return _mm512_scalef_ps(p, n); }
INLINE TARGET_AVX512 unsigned gtmask_avx512(__m512 a, float t) { return _mm512_cmp_ps_mask(a, _mm512_set1_ps(t), _CMP_GT_OQ); }
INLINE TARGET_AVX512 __m512
round_avx512(__m512 v)
{
    return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
INLINE TARGET_AVX512 float
hsum_avx512(__m512 v)
{
    __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    return hsum8(_mm256_add_ps(hi, _mm512_castps512_ps256(v)));
}
INLINE TARGET_AVX512 __m512
widen_avx512(const uint16_t *p, const int bf16)
{
    __m256i h = _mm256_loadu_si256((const __m256i *)p);
    if (bf16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
}

/* 16 stored int8 weights as fp32 (exact) */
INLINE TARGET_AVX512 __m512
widen8_avx512(const int8_t *p)
{
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}

/* AVX2: two registers, lanes 0-7 and 8-15; n lanes by a mask vector for each */
typedef struct {
    __m256 lo, hi;
} vec_avx2;
#define EACH(f, a, b) ((vec_avx2){f(a.lo, b.lo), f(a.hi, b.hi)})
#define EACH3(f, a, b, c) ((vec_avx2){f(a.lo, b.lo, c.lo), f(a.hi, b.hi, c.hi)})
/* lanes i < n of 8 all ones, the others zero */
INLINE TARGET_AVX2 __m256i
lanes8(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
INLINE TARGET_AVX2 vec_avx2 zero_avx2(void) { return (vec_avx2){_mm256_setzero_ps(), _mm256_setzero_ps()}; }
INLINE TARGET_AVX2 vec_avx2 set1_avx2(float f) { return (vec_avx2){_mm256_set1_ps(f), _mm256_set1_ps(f)}; }
INLINE TARGET_AVX2 vec_avx2 load_avx2(const float *p) { return (vec_avx2){_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
INLINE TARGET_AVX2 void
store_avx2(float *p, vec_avx2 v)
{
    _mm256_storeu_ps(p, v.lo);
    _mm256_storeu_ps(p + 8, v.hi);
}
INLINE TARGET_AVX2 vec_avx2
loadn_avx2(const float *p, int n)
{
    return (vec_avx2){_mm256_maskload_ps(p, lanes8(n)), _mm256_maskload_ps(p + 8, lanes8(n - 8))};
}
INLINE TARGET_AVX2 void
storen_avx2(float *p, vec_avx2 v, int n)
{
    _mm256_maskstore_ps(p, lanes8(n), v.lo);
    _mm256_maskstore_ps(p + 8, lanes8(n - 8), v.hi);
}
INLINE TARGET_AVX2 vec_avx2
keepn_avx2(vec_avx2 v, int n)
{
    return (vec_avx2){_mm256_and_ps(v.lo, _mm256_castsi256_ps(lanes8(n))),
                      _mm256_and_ps(v.hi, _mm256_castsi256_ps(lanes8(n - 8)))};
}
INLINE TARGET_AVX2 vec_avx2 add_avx2(vec_avx2 a, vec_avx2 b) { return EACH(_mm256_add_ps, a, b); }
INLINE TARGET_AVX2 vec_avx2 sub_avx2(vec_avx2 a, vec_avx2 b) { return EACH(_mm256_sub_ps, a, b); }
INLINE TARGET_AVX2 vec_avx2 mul_avx2(vec_avx2 a, vec_avx2 b) { return EACH(_mm256_mul_ps, a, b); }
INLINE TARGET_AVX2 vec_avx2 max_avx2(vec_avx2 a, vec_avx2 b) { return EACH(_mm256_max_ps, a, b); }
INLINE TARGET_AVX2 vec_avx2 min_avx2(vec_avx2 a, vec_avx2 b) { return EACH(_mm256_min_ps, a, b); }
INLINE TARGET_AVX2 vec_avx2 div_avx2(vec_avx2 a, vec_avx2 b) { return EACH(_mm256_div_ps, a, b); }
INLINE TARGET_AVX2 vec_avx2 fma_avx2(vec_avx2 a, vec_avx2 b, vec_avx2 c) { return EACH3(_mm256_fmadd_ps, a, b, c); }
INLINE TARGET_AVX2 vec_avx2 fnma_avx2(vec_avx2 a, vec_avx2 b, vec_avx2 c) { return EACH3(_mm256_fnmadd_ps, a, b, c); }
INLINE TARGET_AVX2 __m256
round8(__m256 v)
{
    return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
INLINE TARGET_AVX2 vec_avx2 round_avx2(vec_avx2 v) { return (vec_avx2){round8(v.lo), round8(v.hi)}; }
/* 2^n built in the exponent field (n + 127 >= 1: a normal number), then one rounding of p * 2^n, as scalef */
INLINE TARGET_AVX2 __m256
pow2_8(__m256 n)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
}
INLINE TARGET_AVX2 vec_avx2
scale2_avx2(vec_avx2 p, vec_avx2 n)
{
    return (vec_avx2){_mm256_mul_ps(p.lo, pow2_8(n.lo)), _mm256_mul_ps(p.hi, pow2_8(n.hi))};
}
INLINE TARGET_AVX2 float hsum_avx2(vec_avx2 v) { return hsum8(_mm256_add_ps(v.hi, v.lo)); }
INLINE TARGET_AVX2 unsigned
gtmask_avx2(vec_avx2 a, float t)
{
    __m256 tt = _mm256_set1_ps(t);
    return (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(a.lo, tt, _CMP_GT_OQ)) |
           ((unsigned)_mm256_movemask_ps(_mm256_cmp_ps(a.hi, tt, _CMP_GT_OQ)) << 8);
}
INLINE TARGET_AVX2 __m256
widen8(const uint16_t *p, const int bf16)
{
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    if (bf16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}
INLINE TARGET_AVX2 vec_avx2 widen_avx2(const uint16_t *p, const int bf16) { return (vec_avx2){widen8(p, bf16), widen8(p + 8, bf16)}; }
/* 16 stored int8 weights as fp32 (exact) */
INLINE TARGET_AVX2 vec_avx2
widen8_avx2(const int8_t *p)
{
    __m128i b = _mm_loadu_si128((const __m128i *)p);
    return (vec_avx2){_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)),
                      _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8)))};
}

/* the kernels for each instruction set: groups_avx512, attend_head_avx512, groups_avx2, attend_head_avx2 */
#define V(name) name##_avx512
#define TARGET TARGET_AVX512
#define VECS 4 /* vectors of 16 a pass keeps per row: a group's 4 */
#include "_kernels.c"
#undef V
#undef TARGET
#undef VECS

#define V(name) name##_avx2
#define TARGET TARGET_AVX2
#define VECS 1 /* 16 outputs a pass: 5 rows of 2 registers and the weights in 16 registers */
#include "_kernels.c"
#undef V
#undef TARGET
#undef VECS

typedef void groups_fn(const uint16_t *wp, const float *x, float *y, const float *bias, const float *add, int M,
                       int N, int K, int g0, int g1, int kind);
typedef void lstm_fn(const float *xg, const float *wt, float *h, float *c, float *out, int T, int H);
typedef void attend_head_fn(const float *q, long q_r, const void *k, long k_s, const void *v, long v_s, float *o,
                            long o_r, int R, int S, int D, float *scores, int kv16);

static int
runs_avx512(void)
{
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") &&
           __builtin_cpu_supports("fma");
}

static int
runs_avx2(void)
{
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
}

/* the versions, best first */
static const struct isa {
    const char *name;
    int (*runs)(void); /* whether this CPU runs it */
    groups_fn *groups;
    attend_head_fn *attend_head;
    float (*max_of)(const float *x, int n);
    float (*sum_exp)(const float *x, int n, float mx);
    void (*top_n)(const float *x, long V, int n, float *val, long *idx);
    lstm_fn *lstm;
} ISAS[] = {
    {"avx512", runs_avx512, groups_avx512, attend_head_avx512, max_of_avx512, sum_exp_avx512, top_n_avx512,
     lstm_avx512},
    {"avx2", runs_avx2, groups_avx2, attend_head_avx2, max_of_avx2, sum_exp_avx2, top_n_avx2, lstm_avx2},
};
#define N_ISAS ((int)(sizeof(ISAS) / sizeof(ISAS[0])))

static const struct isa *
best_isa(void)
{
    for (int i = 0; i < N_ISAS; i++)
        if (ISAS[i].runs()) return &ISAS[i];
    return NULL;
}

static const struct isa *current; /* the version the kernels run; set at import to the best */

static void
gemv(const uint16_t *wp, const float *x, float *y, const float *bias, const float *add, int M, int N, int K,
     int kind, int threads)
{
    groups_fn *groups = current->groups;
    int n_groups = (N + GROUP - 1) / GROUP;
    if (threads > n_groups) threads = n_groups;
    if (threads < 1) threads = 1;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        int t = 0, T = 1;
#ifdef _OPENMP
        t = omp_get_thread_num();
        T = omp_get_num_threads();
#endif
        int g0 = (int)((long)n_groups * t / T), g1 = (int)((long)n_groups * (t + 1) / T);
        groups(wp, x, y, bias, add, M, N, K, g0, g1, kind);
    }
}

/* every (n, h): q (n*q_n + h*q_h + r*q_r), k/v (n*k_n + h*k_h + s*D), o (n*o_n + h*o_h + r*o_r); `scratch`
   holds R * S floats of scores for each of the `threads` threads. K and V are fp32, or bf16 where kv16 (read
   as the fp32 numbers they are: the same arithmetic) */
static void
attend(const float *q, const long *qs, const void *k, const long *ks, const void *v, const long *vs, float *o,
       const long *os, int N, int H, int R, int S, int D, float *scratch, int threads, int kv16)
{
    size_t size = kv16 ? 2 : 4;
    attend_head_fn *attend_head = current->attend_head;
    int pairs = N * H;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        float *scores = scratch + (size_t)t * R * S;
#pragma omp for schedule(static)
        for (int i = 0; i < pairs; i++) {
            int n = i / H, h = i % H;
            attend_head(q + n * qs[0] + h * qs[1], qs[2], (const char *)k + size * (n * ks[0] + h * ks[1]), ks[2],
                        (const char *)v + size * (n * vs[0] + h * vs[1]), vs[2], o + n * os[0] + h * os[1], os[2], R, S,
                        D, scores, kv16);
        }
    }
}

/* ---- one decoder layer for one new token per row (the cached decode step), in one call ----

   x (M rows of C, fp32) is the residual stream, updated in place:
     x += out(self_attention(ln1(x)))     q/k/v as one product; the new k/v written into the cache at `position`
     x += cross_out(cross_attention(ln2(x)))   over the window's audio K/V, the G rows of a window together
     x += fc2(gelu(fc1(ln3(x))))
   with the products through gemv (2-byte weights, fp32 arithmetic) over all M rows at once, and the attention
   through attend, segment by segment: a segment is a run of rows with its own cache, position and audio K/V
   (one for a decoder call; one per window for several windows stepped together, decoding/batch.py). Each row
   is computed on its own, in one order, so a row's result does not depend on the rows or segments beside it.
   The torch operations between the kernels in the Python step (layer norms, GELU, copies, head splits) are
   done here on the few rows directly. */
struct segment {
    int row0, rows, position, windows, S_cross; /* rows [row0, row0 + rows), `windows` windows of rows / windows */
    int cross16;                                /* the audio K/V are bf16 (else fp32) */
    float *k_cache, *v_cache;                   /* (rows, H, capacity, D), strides kcs / vcs (row, head, position) */
    const void *cross_k, *cross_v;              /* (windows, H, S_cross, D), strides cks / cvs */
    long kcs[3], vcs[3], cks[3], cvs[3];
};

struct layer {
    const float *ln[6];   /* ln1 weight, bias, ln2 weight, bias, ln3 weight, bias (fp32) */
    const uint16_t *w[6]; /* packed weights: qkv, out, cross q, cross out, fc1, fc2 */
    const float *b[6];    /* their fp32 biases (NULL: none) */
    float eps;
    int M, C, H, D, F, kind; /* the packed weights' kind (gemv) */
};

static void
layer_norm(const float *x, const float *w, const float *b, float eps, int M, int C, float *y)
{
    for (int m = 0; m < M; m++) {
        const float *xr = x + (size_t)m * C;
        float *yr = y + (size_t)m * C;
        double sum = 0, sq = 0;
        for (int c = 0; c < C; c++) sum += xr[c];
        float mean = (float)(sum / C);
        for (int c = 0; c < C; c++) sq += (double)(xr[c] - mean) * (xr[c] - mean);
        float inv = 1.0f / sqrtf((float)(sq / C) + eps);
        for (int c = 0; c < C; c++) yr[c] = (xr[c] - mean) * inv * w[c] + b[c];
    }
}

/* the exact GELU, x * (1 + erf(x / sqrt(2))) / 2, in place */
static void
gelu(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * (float)M_SQRT1_2));
}

/* returns 0, or -1 where the scratch could not be allocated */
static int
decoder_layer(const struct layer *L, const struct segment *seg, int n_seg, float *x, int threads)
{
    int M = L->M, C = L->C, H = L->H, D = L->D, F = L->F, kind = L->kind;
    size_t most = 1;
    for (int i = 0; i < n_seg; i++) {
        size_t self = (size_t)seg[i].position + 1, cross = (size_t)(seg[i].rows / seg[i].windows) * seg[i].S_cross;
        if (self > most) most = self;
        if (cross > most) most = cross;
    }
    if (threads < 1) threads = 1;
    float *h = malloc(sizeof(float) * ((size_t)M * (6 * (size_t)C + F) + (size_t)threads * most));
    if (!h) return -1;
    float *qkv = h + (size_t)M * C, *o = qkv + (size_t)M * 3 * C, *mlp = o + (size_t)M * C;
    float *scores = mlp + (size_t)M * F;

    /* self-attention over each segment's cache, the new token's k/v written at its position */
    layer_norm(x, L->ln[0], L->ln[1], L->eps, M, C, h);
    gemv(L->w[0], h, qkv, L->b[0], NULL, M, 3 * C, C, kind, threads);
    for (int i = 0; i < n_seg; i++) {
        const struct segment *s = &seg[i];
        for (int m = 0; m < s->rows; m++)
            for (int hd = 0; hd < H; hd++) {
                const float *row = qkv + (size_t)(s->row0 + m) * 3 * C + (size_t)hd * D;
                long at = (long)s->position;
                memcpy(s->k_cache + m * s->kcs[0] + hd * s->kcs[1] + at * s->kcs[2], row + C, sizeof(float) * D);
                memcpy(s->v_cache + m * s->vcs[0] + hd * s->vcs[1] + at * s->vcs[2], row + 2 * C, sizeof(float) * D);
            }
        long qs[3] = {3L * C, D, 3L * C}, os[3] = {C, D, C};
        attend(qkv + (size_t)s->row0 * 3 * C, qs, s->k_cache, s->kcs, s->v_cache, s->vcs, o + (size_t)s->row0 * C,
               os, s->rows, H, 1, s->position + 1, D, scores, threads, 0);
    }
    gemv(L->w[1], o, x, L->b[1], x, M, C, C, kind, threads);

    /* cross-attention: a window's G rows are its query rows over its audio K/V */
    layer_norm(x, L->ln[2], L->ln[3], L->eps, M, C, h);
    gemv(L->w[2], h, qkv, L->b[2], NULL, M, C, C, kind, threads);
    for (int i = 0; i < n_seg; i++) {
        const struct segment *s = &seg[i];
        int G = s->rows / s->windows;
        long qs[3] = {(long)G * C, D, C};
        attend(qkv + (size_t)s->row0 * C, qs, s->cross_k, s->cks, s->cross_v, s->cvs, o + (size_t)s->row0 * C, qs,
               s->windows, H, G, s->S_cross, D, scores, threads, s->cross16);
    }
    gemv(L->w[3], o, x, L->b[3], x, M, C, C, kind, threads);

    /* MLP */
    layer_norm(x, L->ln[4], L->ln[5], L->eps, M, C, h);
    gemv(L->w[4], h, mlp, L->b[4], NULL, M, F, C, kind, threads);
    gelu(mlp, (size_t)M * F);
    gemv(L->w[5], mlp, x, L->b[5], x, M, C, F, kind, threads);
    free(h);
    return 0;
}

/* ---- a decode step's logits: the logits processors and the greedy choice, row by row ----

   decoding/logits.py's processors on B rows of V logits, in place and in their order: suppress blank (at the
   first sampled position, T == sample_begin: the `blank` ids), suppress tokens (the `suppress` ids), and, where
   tb >= 0, the timestamp rules: never <|notimestamps|>; after a timestamp closing a pair (or opening the text),
   no timestamp; after a lone one, no text (below eot); no timestamp below the last one (below or equal unless
   it closes a pair now); the first sampled token a timestamp of at most max_initial steps; and every text token
   forbidden where the timestamps' total probability beats the best text token's (forced[b] = 1). Then, with
   `next`, greedy's choice: the first largest logit of each row (its log-probability is torch's to take, so that
   it is the reference's bit for bit). tokens: (B, T) int64, every token so far. Only the rule's logsumexp
   differs from torch's, by the rounding of another exp. */
struct rules {
    int sample_begin, tb, eot, no_timestamps, max_initial; /* tb < 0: no timestamp rules; the others < 0: none */
    const int64_t *blank, *suppress;
    long n_blank, n_suppress;
};

static void
forbid(float *x, long from, long to, long n)
{
    if (from < 0) from = 0;
    if (to > n) to = n;
    for (long i = from; i < to; i++) x[i] = -INFINITY;
}

/* log(sum(e^x)) as torch's logsumexp: the maximum plus the log of the sum of e^(x - maximum) */
static float
logsumexp(const float *x, long n)
{
    float mx = current->max_of(x, (int)n);
    if (!isfinite(mx)) return mx; /* every x -inf (or an inf or a NaN among them) */
    return mx + logf(current->sum_exp(x, (int)n, mx));
}

static void
process_row(float *l, long V, const int64_t *tok, long T, const struct rules *r, uint8_t *forced)
{
    if (T == r->sample_begin)
        for (long i = 0; i < r->n_blank; i++) l[r->blank[i]] = -INFINITY;
    for (long i = 0; i < r->n_suppress; i++) l[r->suppress[i]] = -INFINITY;
    *forced = 0;
    if (r->tb < 0) return;
    long tb = r->tb, n = T - r->sample_begin;
    if (r->no_timestamps >= 0) l[r->no_timestamps] = -INFINITY;
    if (n > 0) {
        int last = tok[T - 1] >= tb, penultimate = n >= 2 ? tok[T - 2] >= tb : 1;
        if (last && penultimate) forbid(l, tb, V, V);
        if (last && !penultimate) forbid(l, 0, r->eot, V);
        for (long j = T - 1; j >= r->sample_begin; j--)
            if (tok[j] >= tb) {
                forbid(l, tb, (last && !penultimate) ? tok[j] : tok[j] + 1, V);
                break;
            }
    }
    if (n == 0) {
        forbid(l, 0, tb, V);
        if (r->max_initial >= 0) forbid(l, tb + r->max_initial + 1, V, V);
    }
    if (logsumexp(l + tb, V - tb) > current->max_of(l, (int)tb)) {
        *forced = 1;
        forbid(l, 0, tb, V);
    }
}

/* the index of the first largest logit (0 where there is none: NaN logits, a broken model) */
static int64_t
argmax_row(const float *l, long V)
{
    float mx = current->max_of(l, (int)V);
    long i = 0;
    while (i < V && l[i] != mx) i++;
    return i == V ? 0 : i;
}
#endif

static int
supported(void)
{
#if HAVE_KERNEL
    return current != NULL;
#else
    return 0;
#endif
}

static PyObject *
py_supported(PyObject *self, PyObject *unused)
{
    return PyBool_FromLong(supported());
}

/* the names of the versions this CPU runs, best first */
static PyObject *
py_isas(PyObject *self, PyObject *unused)
{
    PyObject *names = PyList_New(0);
#if HAVE_KERNEL
    for (int i = 0; names && i < N_ISAS; i++) {
        if (!ISAS[i].runs()) continue;
        PyObject *name = PyUnicode_FromString(ISAS[i].name);
        if (!name || PyList_Append(names, name)) Py_CLEAR(names);
        Py_XDECREF(name);
    }
#endif
    return names;
}

static PyObject *
py_isa(PyObject *self, PyObject *unused)
{
#if HAVE_KERNEL
    if (current) return PyUnicode_FromString(current->name);
#endif
    Py_RETURN_NONE;
}

/* set_isa(name): run that version ("avx512", "avx2"), or the best this CPU runs for None */
static PyObject *
py_set_isa(PyObject *self, PyObject *arg)
{
    if (arg == Py_None) {
#if HAVE_KERNEL
        current = best_isa();
#endif
        Py_RETURN_NONE;
    }
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name) return NULL;
#if HAVE_KERNEL
    for (int i = 0; i < N_ISAS; i++) {
        if (strcmp(name, ISAS[i].name)) continue;
        if (!ISAS[i].runs()) return PyErr_Format(PyExc_RuntimeError, "set_isa: this CPU does not run %s", name);
        current = &ISAS[i];
        Py_RETURN_NONE;
    }
    return PyErr_Format(PyExc_ValueError, "set_isa: %R is not one of 'avx512', 'avx2'", arg);
#else
    return PyErr_Format(PyExc_RuntimeError, "set_isa: the kernels are built for x86-64 only, not %R", arg);
#endif
}

/* args[0:n_ptr] as pointers (None: NULL), the next n_long as longs; -1 with the error set (a TypeError naming
   `usage` if nargs is not n_ptr + n_long) */
static int
parse_args(PyObject *const *args, Py_ssize_t nargs, int n_ptr, void **p, int n_long, long *d, const char *usage)
{
    if (nargs != n_ptr + n_long) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    for (int i = 0; i < n_ptr; i++) p[i] = args[i] == Py_None ? NULL : PyLong_AsVoidPtr(args[i]);
    for (int i = 0; i < n_long; i++) d[i] = PyLong_AsLong(args[n_ptr + i]);
    return PyErr_Occurred() ? -1 : 0;
}

#define NO_KERNEL ": this CPU has neither AVX-512 nor AVX2 (with F16C and FMA), or it is not x86-64"

/* gemv(w, x, y, bias, add, M, N, K, kind, threads): pointers as ints (bias/add: 0 or None for none); W stored
   as fp16 numbers (kind 0), bf16 (1) or int8 with its per-output scales after it (2) */
static PyObject *
py_gemv(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    void *p[5];
    long d[5];
    if (parse_args(args, nargs, 5, p, 5, d, "gemv takes 10 arguments: w, x, y, bias, add, M, N, K, kind, threads"))
        return NULL;
    if (!p[0] || !p[1] || !p[2] || d[0] < 1 || d[1] < 1 || d[2] < 1) {
        PyErr_SetString(PyExc_ValueError, "gemv: null pointer or empty shape");
        return NULL;
    }
    if (!supported()) {
        PyErr_SetString(PyExc_RuntimeError, "gemv" NO_KERNEL);
        return NULL;
    }
#if HAVE_KERNEL
    Py_BEGIN_ALLOW_THREADS
    gemv(p[0], p[1], p[2], p[3], p[4], (int)d[0], (int)d[1], (int)d[2], (int)d[3], (int)d[4]);
    Py_END_ALLOW_THREADS
#endif
    Py_RETURN_NONE;
}

/* lstm(xg, wt, h, c, out, T, H): an LSTM layer over T steps (the silero VAD's cell), fp32, contiguous */
static PyObject *
py_lstm(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    void *p[5];
    long d[2];
    if (parse_args(args, nargs, 5, p, 2, d, "lstm takes 7 arguments: xg, wt, h, c, out, T, H")) return NULL;
    if (!p[0] || !p[1] || !p[2] || !p[3] || !p[4] || d[0] < 0 || d[1] < 16 || d[1] % 16 || d[1] > LSTM_MAX_H) {
        PyErr_SetString(PyExc_ValueError, "lstm: null pointer, or H not a multiple of 16 up to 256");
        return NULL;
    }
    if (!supported()) {
        PyErr_SetString(PyExc_RuntimeError, "lstm" NO_KERNEL);
        return NULL;
    }
#if HAVE_KERNEL
    Py_BEGIN_ALLOW_THREADS
    current->lstm(p[0], p[1], p[2], p[3], p[4], (int)d[0], (int)d[1]);
    Py_END_ALLOW_THREADS
#endif
    Py_RETURN_NONE;
}

/* attend(q, k, v, o, N, H, R, S, D, q_strides, k_strides, v_strides, o_strides, threads, kv16): pointers as
   ints, strides (in elements) as 3-tuples (batch, head, row); k/v rows must be contiguous runs of D numbers, fp32
   or, with kv16, bf16 */
static int
strides3(PyObject *t, long *out)
{
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 3) {
        PyErr_SetString(PyExc_TypeError, "attend: strides must be 3-tuples (batch, head, row)");
        return -1;
    }
    for (int i = 0; i < 3; i++) out[i] = PyLong_AsLong(PyTuple_GET_ITEM(t, i));
    return PyErr_Occurred() ? -1 : 0;
}

static PyObject *
py_attend(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    static const char usage[] = "attend takes 15 arguments: q, k, v, o, N, H, R, S, D, q/k/v/o strides, threads, kv16";
    void *p[4];
    long d[5], st[4][3], threads, kv16;
    if (nargs != 15) {
        PyErr_SetString(PyExc_TypeError, usage);
        return NULL;
    }
    if (parse_args(args, 9, 4, p, 5, d, usage)) return NULL;
    threads = PyLong_AsLong(args[13]);
    kv16 = PyLong_AsLong(args[14]);
    if (PyErr_Occurred()) return NULL;
    for (int i = 0; i < 4; i++)
        if (strides3(args[9 + i], st[i])) return NULL;
    if (!p[0] || !p[1] || !p[2] || !p[3] || d[0] < 1 || d[1] < 1 || d[2] < 1 || d[3] < 1 || d[4] < 16) {
        PyErr_SetString(PyExc_ValueError, "attend: null pointer or empty shape");
        return NULL;
    }
    if (d[4] % 16 || d[4] > 128 || d[2] > ATTEND_ROWS) {
        PyErr_SetString(PyExc_ValueError, "attend: head size must be a multiple of 16 up to 128, rows at most 8");
        return NULL;
    }
    if (!supported()) {
        PyErr_SetString(PyExc_RuntimeError, "attend" NO_KERNEL);
        return NULL;
    }
#if HAVE_KERNEL
    long pairs = d[0] * d[1];
    if (threads > pairs) threads = pairs;
    if (threads < 1) threads = 1;
    float *scratch = PyMem_RawMalloc(sizeof(float) * (size_t)threads * d[2] * d[3]);
    if (!scratch) return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS
    attend(p[0], st[0], p[1], st[1], p[2], st[2], p[3], st[3], (int)d[0], (int)d[1], (int)d[2], (int)d[3],
           (int)d[4], scratch, (int)threads, kv16 != 0);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(scratch);
#else
    (void)threads;
#endif
    Py_RETURN_NONE;
}

/* decoder_layer(pointers, dims, segments, eps, threads): one decoder layer's step (struct layer above).
   pointers: 19 ints (0 or None: no bias): x, ln1 w, b, qkv w, b, out w, b, ln2 w, b, cross q w, b, cross out w,
   b, ln3 w, b, fc1 w, b, fc2 w, b. dims: M, C, H, D, F, the weights' kind (gemv). segments: a tuple of 22-int tuples: row0, rows,
   position, windows, S_cross, k cache, v cache, cross k, cross v, then the (row or window, head, position)
   strides of k cache, v cache, cross k, cross v, then whether cross k and v are bf16 (else fp32). */
#define SEGMENT_INTS 22
static PyObject *
py_decoder_layer(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    static const char usage[] = "decoder_layer takes 5 arguments: pointers (19), dims (6), segments (tuples of 22), "
                                "eps, threads";
    if (nargs != 5 || !PyTuple_Check(args[0]) || PyTuple_GET_SIZE(args[0]) != 19 || !PyTuple_Check(args[1]) ||
        PyTuple_GET_SIZE(args[1]) != 6 || !PyTuple_Check(args[2]) || PyTuple_GET_SIZE(args[2]) < 1) {
        PyErr_SetString(PyExc_TypeError, usage);
        return NULL;
    }
    void *p[19];
    long d[6];
    if (parse_args(&PyTuple_GET_ITEM(args[0], 0), 19, 19, p, 0, NULL, usage) ||
        parse_args(&PyTuple_GET_ITEM(args[1], 0), 6, 0, NULL, 6, d, usage))
        return NULL;
    double eps = PyFloat_AsDouble(args[3]);
    long threads = PyLong_AsLong(args[4]);
    if (PyErr_Occurred()) return NULL;
    for (int i = 0; i < 19; i++)
        if (!p[i] && i != 4 && i != 6 && i != 10 && i != 12 && i != 16 && i != 18) { /* biases may be none */
            PyErr_SetString(PyExc_ValueError, "decoder_layer: null pointer");
            return NULL;
        }
    /* M, C, H, D, F */
    if (d[0] < 1 || d[1] < 1 || d[2] < 1 || d[3] < 16 || d[3] % 16 || d[3] > 128 || d[2] * d[3] != d[1] ||
        d[4] < 1) {
        PyErr_SetString(PyExc_ValueError, "decoder_layer: bad shape (head size a multiple of 16 up to 128)");
        return NULL;
    }
    if (!supported()) {
        PyErr_SetString(PyExc_RuntimeError, "decoder_layer" NO_KERNEL);
        return NULL;
    }
#if HAVE_KERNEL
    Py_ssize_t n_seg = PyTuple_GET_SIZE(args[2]);
    struct segment *seg = PyMem_RawMalloc(sizeof(struct segment) * n_seg);
    if (!seg) return PyErr_NoMemory();
    long next_row = 0;
    for (Py_ssize_t i = 0; i < n_seg; i++) {
        PyObject *t = PyTuple_GET_ITEM(args[2], i);
        long v[SEGMENT_INTS];
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != SEGMENT_INTS) {
            PyErr_SetString(PyExc_TypeError, usage);
            goto fail;
        }
        for (int j = 0; j < SEGMENT_INTS; j++) v[j] = PyLong_AsLong(PyTuple_GET_ITEM(t, j));
        if (PyErr_Occurred()) goto fail;
        /* rows in order and covering x; at most ATTEND_ROWS rows per window; non-null buffers */
        if (v[0] != next_row || v[1] < 1 || v[2] < 0 || v[3] < 1 || v[1] % v[3] || v[1] / v[3] > ATTEND_ROWS ||
            v[4] < 1 || !v[5] || !v[6] || !v[7] || !v[8]) {
            PyErr_SetString(PyExc_ValueError, "decoder_layer: bad segment (rows in order, at most 8 a window)");
            goto fail;
        }
        next_row += v[1];
        seg[i] = (struct segment){
            .row0 = (int)v[0], .rows = (int)v[1], .position = (int)v[2], .windows = (int)v[3], .S_cross = (int)v[4],
            .k_cache = (float *)v[5], .v_cache = (float *)v[6], .cross_k = (const void *)v[7],
            .cross_v = (const void *)v[8], .cross16 = v[21] != 0,
        };
        memcpy(seg[i].kcs, v + 9, sizeof seg[i].kcs);
        memcpy(seg[i].vcs, v + 12, sizeof seg[i].vcs);
        memcpy(seg[i].cks, v + 15, sizeof seg[i].cks);
        memcpy(seg[i].cvs, v + 18, sizeof seg[i].cvs);
    }
    if (next_row != d[0]) {
        PyErr_SetString(PyExc_ValueError, "decoder_layer: the segments do not cover the rows");
        goto fail;
    }
    struct layer L = {
        .ln = {p[1], p[2], p[7], p[8], p[13], p[14]},
        .w = {p[3], p[5], p[9], p[11], p[15], p[17]},
        .b = {p[4], p[6], p[10], p[12], p[16], p[18]},
        .eps = (float)eps,
        .M = (int)d[0], .C = (int)d[1], .H = (int)d[2], .D = (int)d[3], .F = (int)d[4], .kind = (int)d[5],
    };
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = decoder_layer(&L, seg, (int)n_seg, p[0], (int)threads);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(seg);
    if (rc) return PyErr_NoMemory();
    Py_RETURN_NONE;
fail:
    PyMem_RawFree(seg);
    return NULL;
#else
    (void)threads;
    Py_RETURN_NONE;
#endif
}

/* beam_top(logprobs, sum_logprobs, scores, tokens, B, V, n, threads): each row's n largest log-probabilities (the
   first index first among equal ones) as tokens (B, n) int64, and scores (B, n) fp32 = sum_logprobs[b] + them:
   the reference's topk and sum in one pass over the vocabulary (n <= 64) */
static PyObject *
py_beam_top(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    void *p[4];
    long d[4];
    if (parse_args(args, nargs, 4, p, 4, d,
                   "beam_top takes 8 arguments: logprobs, sum_logprobs, scores, tokens, B, V, n, threads"))
        return NULL;
    long B = d[0], V = d[1], n = d[2];
    int threads = d[3] < 1 ? 1 : d[3] > B ? (int)B : (int)d[3];
    if (!p[0] || !p[1] || !p[2] || !p[3] || B < 1 || n < 1 || n > 64 || V < n) {
        PyErr_SetString(PyExc_ValueError, "beam_top: null pointer or bad shape (1 <= n <= 64, n <= V)");
        return NULL;
    }
    if (!supported()) {
        PyErr_SetString(PyExc_RuntimeError, "beam_top" NO_KERNEL);
        return NULL;
    }
#if HAVE_KERNEL
    const float *logprobs = p[0], *sums = p[1];
    float *scores = p[2];
    int64_t *tokens = p[3];
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for num_threads(threads) if (threads > 1) schedule(static)
    for (long b = 0; b < B; b++) {
        const float *l = logprobs + b * V;
        float val[64];
        long idx[64];
        current->top_n(l, V, (int)n, val, idx);
        for (long j = 0; j < n; j++) {
            scores[b * n + j] = sums[b] + val[j];
            tokens[b * n + j] = idx[j];
        }
    }
    Py_END_ALLOW_THREADS
#endif
    Py_RETURN_NONE;
}

/* logits_step(logits, tokens, forced, next, blank, suppress, B, V, T, sample_begin, tb, eot, no_timestamps,
   max_initial, n_blank, n_suppress): pointers as ints (next: None for the processors alone), the rest as ints
   (struct rules above) */
static PyObject *
py_logits_step(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    static const char usage[] = "logits_step takes 16 arguments: logits, tokens, forced, next, blank, suppress, B, V, "
                                "T, sample_begin, tb, eot, no_timestamps, max_initial, n_blank, n_suppress";
    void *p[6];
    long d[10];
    if (parse_args(args, nargs, 6, p, 10, d, usage)) return NULL;
    long B = d[0], V = d[1], T = d[2];
    if (!p[0] || !p[1] || !p[2] || B < 1 || V < 1 || T < 1 || d[3] < 0 || d[3] > T || d[4] >= V || d[5] >= V ||
        d[6] >= V || (d[8] && !p[4]) || (d[9] && !p[5]) || d[8] < 0 || d[9] < 0) {
        PyErr_SetString(PyExc_ValueError, "logits_step: null pointer or bad shape");
        return NULL;
    }
    if (!supported()) {
        PyErr_SetString(PyExc_RuntimeError, "logits_step" NO_KERNEL);
        return NULL;
    }
#if HAVE_KERNEL
    struct rules r = {
        .sample_begin = (int)d[3], .tb = (int)d[4], .eot = (int)d[5], .no_timestamps = (int)d[6],
        .max_initial = (int)d[7], .blank = p[4], .suppress = p[5], .n_blank = d[8], .n_suppress = d[9],
    };
    for (long i = 0; i < r.n_blank + r.n_suppress; i++) {
        int64_t id = i < r.n_blank ? r.blank[i] : r.suppress[i - r.n_blank];
        if (id < 0 || id >= V) {
            PyErr_SetString(PyExc_ValueError, "logits_step: a suppressed token id outside the vocabulary");
            return NULL;
        }
    }
    float *logits = p[0];
    const int64_t *tokens = p[1];
    int64_t *next = p[3];
    uint8_t *forced = p[2];
    for (long b = 0; b < B; b++) {
        float *l = logits + b * V;
        const int64_t *tok = tokens + b * T;
        process_row(l, V, tok, T, &r, forced + b);
        if (next) next[b] = argmax_row(l, V);
    }
#endif
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"supported", py_supported, METH_NOARGS,
     "Whether this CPU runs the kernels (AVX-512, or AVX2, with F16C and FMA)."},
    {"isas", py_isas, METH_NOARGS, "isas(): the names of the versions this CPU runs, best first."},
    {"isa", py_isa, METH_NOARGS, "isa(): the name of the version the kernels run (None: none runs here)."},
    {"set_isa", py_set_isa, METH_O, "set_isa(name): run version 'avx512' or 'avx2'; None: the best here."},
    {"gemv", (PyCFunction)(void (*)(void))py_gemv, METH_FASTCALL,
     "gemv(w, x, y, bias, add, M, N, K, kind, threads): y = x @ W.T + bias + add, W packed fp16, bf16 or int8."},
    {"lstm", (PyCFunction)(void (*)(void))py_lstm, METH_FASTCALL,
     "lstm(xg, wt, h, c, out, T, H): an LSTM layer over T steps, h and c updated in place."},
    {"attend", (PyCFunction)(void (*)(void))py_attend, METH_FASTCALL,
     "attend(q, k, v, o, N, H, R, S, D, q_strides, k_strides, v_strides, o_strides, threads, kv16): attention."},
    {"decoder_layer", (PyCFunction)(void (*)(void))py_decoder_layer, METH_FASTCALL,
     "decoder_layer(pointers, dims, segments, eps, threads): one decoder layer's one-token step, x in place."},
    {"beam_top", (PyCFunction)(void (*)(void))py_beam_top, METH_FASTCALL,
     "beam_top(logprobs, sum_logprobs, scores, tokens, B, V, n, threads): each row's n best tokens and summed scores."},
    {"logits_step", (PyCFunction)(void (*)(void))py_logits_step, METH_FASTCALL,
     "logits_step(logits, tokens, forced, next, blank, suppress, B, V, T, sample_begin, tb, eot, no_timestamps, "
     "max_initial, n_blank, n_suppress): logits processors in place (and each row's argmax)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__kernels(void)
{
#if HAVE_KERNEL
    __builtin_cpu_init();
    current = best_isa();
#endif
    return PyModule_Create(&module);
}

#else /* ---------------- the kernels at one width, included by the module part above ---------------- */

/* V(name): this instruction set's version of name (its vector type V(vec), its operations, the kernels
   defined here); TARGET: its target attribute; VECS: vectors of 16 a pass keeps per row */

/* e^x for x <= 87 (below -87: e^-87), Cephes' expf polynomial: within ~1 ulp */
INLINE TARGET V(vec) V(exp)(V(vec) x)
{
    x = V(max)(x, V(set1)(-87.0f));
    V(vec) n = V(round)(V(mul)(x, V(set1)(1.44269504088896341f)));
    V(vec) r = V(fnma)(n, V(set1)(0.693359375f), x);
    r = V(fnma)(n, V(set1)(-2.12194440e-4f), r);
    V(vec) p = V(set1)(1.9875691500e-4f);
    p = V(fma)(p, r, V(set1)(1.3981999507e-3f));
    p = V(fma)(p, r, V(set1)(8.3334519073e-3f));
    p = V(fma)(p, r, V(set1)(4.1665795894e-2f));
    p = V(fma)(p, r, V(set1)(1.6666665459e-1f));
    p = V(fma)(p, r, V(set1)(5.0000001201e-1f));
    p = V(fma)(V(mul)(p, r), r, V(add)(r, V(set1)(1.0f)));
    return V(scale2)(p, n);
}

/* `rows` rows of x against the outputs g * GROUP + 16 * (j0 .. j0 + VECS) */
INLINE TARGET void V(slice)(const uint16_t *wp, const float *x, float *y, const float *bias, const float *add,
                            int N, int K, int g, int j0, const int rows, const int kind)
{
    V(vec) acc[MAX_ROWS][VECS];
    for (int m = 0; m < rows; m++)
        for (int j = 0; j < VECS; j++) acc[m][j] = V(zero)();
    const float *scales = NULL; /* int8 weights: each output's scale, after the weights */
    if (kind == 2) {
        const int8_t *w = (const int8_t *)wp + (size_t)g * K * GROUP + 16 * j0;
        scales = (const float *)((const int8_t *)wp + (size_t)((N + GROUP - 1) / GROUP) * K * GROUP);
        for (int k = 0; k < K; k++) {
            const int8_t *wk = w + (size_t)k * GROUP;
            _mm_prefetch((const char *)(wk + 64 * GROUP), _MM_HINT_T0); /* the 64-byte line 64 inputs ahead */
            V(vec) wv[VECS];
            for (int j = 0; j < VECS; j++) wv[j] = V(widen8)(wk + 16 * j);
            for (int m = 0; m < rows; m++) {
                V(vec) xv = V(set1)(x[(size_t)m * K + k]);
                for (int j = 0; j < VECS; j++) acc[m][j] = V(fma)(wv[j], xv, acc[m][j]);
            }
        }
    } else {
        const uint16_t *w = wp + (size_t)g * K * GROUP + 16 * j0;
        for (int k = 0; k < K; k++) {
            const uint16_t *wk = w + (size_t)k * GROUP;
            for (int j = 0; j < VECS; j += 2) /* each 64-byte line of the pass, 32 inputs ahead */
                _mm_prefetch((const char *)(wk + 32 * GROUP + 16 * j), _MM_HINT_T0);
            V(vec) wv[VECS];
            for (int j = 0; j < VECS; j++) wv[j] = V(widen)(wk + 16 * j, kind);
            for (int m = 0; m < rows; m++) {
                V(vec) xv = V(set1)(x[(size_t)m * K + k]);
                for (int j = 0; j < VECS; j++) acc[m][j] = V(fma)(wv[j], xv, acc[m][j]);
            }
        }
    }
    for (int j = 0; j < VECS; j++) {
        int n = g * GROUP + 16 * (j0 + j);
        if (n >= N) break;
        int lanes = N - n < 16 ? N - n : 16;
        V(vec) b = bias ? V(loadn)(bias + n, lanes) : V(zero)();
        V(vec) sc = scales ? V(loadn)(scales + n, lanes) : V(zero)();
        for (int m = 0; m < rows; m++) {
            V(vec) r = scales ? V(fma)(acc[m][j], sc, b) : V(add)(acc[m][j], b);
            if (add) r = V(add)(V(loadn)(add + (size_t)m * N + n, lanes), r);
            V(storen)(y + (size_t)m * N + n, r, lanes);
        }
    }
}

/* all M rows of x against the groups of outputs g0..g1: each group's passes (VECS vectors of it for
   MAX_ROWS rows) one after the other, so that the later ones read it from cache */
static TARGET void V(groups)(const uint16_t *wp, const float *x, float *y, const float *bias, const float *add,
                             int M, int N, int K, int g0, int g1, int kind)
{
    for (int g = g0; g < g1; g++)
        for (int j0 = 0; j0 < GROUP / 16 && g * GROUP + 16 * j0 < N; j0 += VECS)
            for (int m = 0; m < M; m += MAX_ROWS) {
                const float *xm = x + (size_t)m * K, *am = add ? add + (size_t)m * N : NULL;
                float *ym = y + (size_t)m * N;
#define ROWS(r)                                                                                               \
    if (kind == 2) V(slice)(wp, xm, ym, bias, am, N, K, g, j0, r, 2);                                        \
    else if (kind) V(slice)(wp, xm, ym, bias, am, N, K, g, j0, r, 1);                                        \
    else V(slice)(wp, xm, ym, bias, am, N, K, g, j0, r, 0);                                                   \
    break;
                switch (M - m) {
                case 1: ROWS(1)
                case 2: ROWS(2)
                case 3: ROWS(3)
                case 4: ROWS(4)
                default: ROWS(5)
                }
#undef ROWS
            }
}

/* one (batch, head): R query rows (stride q_r) over S keys/values (rows of D, strides k_s, v_s) */
/* 16 K or V numbers at element `at`: fp32, or bf16 widened (exact) where kv16 */
INLINE TARGET V(vec) V(load_kv)(const void *p, long at, int kv16)
{
    return kv16 ? V(widen)((const uint16_t *)p + at, 1) : V(load)((const float *)p + at);
}

static TARGET void V(attend_head)(const float *q, long q_r, const void *k, long k_s, const void *v, long v_s,
                                  float *o, long o_r, int R, int S, int D, float *scores, int kv16)
{
    const float scale = 1.0f / sqrtf((float)D);
    const int nd = D / 16;
    float inv[ATTEND_ROWS]; /* 1 / the softmax denominator of each row */
    float mxs[ATTEND_ROWS];
    V(vec) qv[ATTEND_ROWS][8];
    for (int r = 0; r < R; r++) {
        mxs[r] = -INFINITY;
        for (int j = 0; j < nd; j++) qv[r][j] = V(mul)(V(load)(q + r * q_r + 16 * j), V(set1)(scale));
    }
    /* the scores of every row in one pass over K (each key read once for all rows) */
    for (int s = 0; s < S; s++) {
        long ks = s * k_s;
        V(vec) kv[8];
        for (int j = 0; j < nd; j++) kv[j] = V(load_kv)(k, ks + 16 * j, kv16);
        for (int r = 0; r < R; r++) {
            V(vec) a = V(mul)(qv[r][0], kv[0]);
            for (int j = 1; j < nd; j++) a = V(fma)(qv[r][j], kv[j], a);
            float score = V(hsum)(a);
            scores[(size_t)r * S + s] = score;
            if (score > mxs[r]) mxs[r] = score;
        }
    }
    for (int r = 0; r < R; r++) {
        float *sc = scores + (size_t)r * S;
        V(vec) m = V(set1)(mxs[r]), sum = V(zero)();
        int s = 0;
        for (; s + 16 <= S; s += 16) {
            V(vec) e = V(exp)(V(sub)(V(load)(sc + s), m));
            V(store)(sc + s, e);
            sum = V(add)(sum, e);
        }
        if (s < S) {
            V(vec) e = V(keepn)(V(exp)(V(sub)(V(loadn)(sc + s, S - s), m)), S - s);
            V(storen)(sc + s, e, S - s);
            sum = V(add)(sum, e);
        }
        inv[r] = 1.0f / V(hsum)(sum);
    }
    /* out[r] = sum_s e[r, s] V[s] / sum_s e[r, s]: V read once for all rows */
    for (int d0 = 0; d0 < nd; d0 += VECS) {
        int dn = nd - d0 < VECS ? nd - d0 : VECS;
        V(vec) acc[ATTEND_ROWS][VECS];
        for (int r = 0; r < R; r++)
            for (int j = 0; j < dn; j++) acc[r][j] = V(zero)();
        for (int s = 0; s < S; s++) {
            long vs = s * v_s + 16 * d0;
            V(vec) vv[VECS];
            for (int j = 0; j < dn; j++) vv[j] = V(load_kv)(v, vs + 16 * j, kv16);
            for (int r = 0; r < R; r++) {
                V(vec) p = V(set1)(scores[(size_t)r * S + s]);
                for (int j = 0; j < dn; j++) acc[r][j] = V(fma)(p, vv[j], acc[r][j]);
            }
        }
        for (int r = 0; r < R; r++)
            for (int j = 0; j < dn; j++) V(store)(o + r * o_r + 16 * (d0 + j), V(mul)(acc[r][j], V(set1)(inv[r])));
    }
}

/* the largest of x[0 .. n) (-inf for n = 0) */
TARGET float V(max_of)(const float *x, int n)
{
    V(vec) m = V(set1)(-INFINITY);
    int i = 0;
    for (; i + 16 <= n; i += 16) m = V(max)(m, V(load)(x + i));
    float lanes[16], r = -INFINITY;
    V(store)(lanes, m);
    for (int j = 0; j < 16; j++) r = lanes[j] > r ? lanes[j] : r;
    for (; i < n; i++) r = x[i] > r ? x[i] : r;
    return r;
}

/* the sum of e^(x[i] - mx) over x[0 .. n), mx >= every x[i] and finite; lanes summed in the fixed tree */
TARGET float V(sum_exp)(const float *x, int n, float mx)
{
    V(vec) s = V(zero)(), m = V(set1)(mx);
    int i = 0;
    for (; i + 16 <= n; i += 16) s = V(add)(s, V(exp)(V(sub)(V(load)(x + i), m)));
    if (i < n) s = V(add)(s, V(keepn)(V(exp)(V(sub)(V(loadn)(x + i, n - i), m)), n - i));
    return V(hsum)(s);
}

/* the n (1..64) largest of x[0 .. V), V >= n, best first, the first index first among equal ones: val, idx.
   Vectors none of whose lanes beats the n-th best so far are passed over whole. */
TARGET void V(top_n)(const float *x, long V, int n, float *val, long *idx)
{
    int have = 0;
    long i = 0;
    for (; i < V; i++) { /* the first n, kept sorted (an equal one after the earlier) */
        if (have == n) break;
        int at = have++;
        while (at > 0 && x[i] > val[at - 1]) {
            val[at] = val[at - 1];
            idx[at] = idx[at - 1];
            at--;
        }
        val[at] = x[i];
        idx[at] = i;
    }
    for (; i < V; i += 16) {
        int lanes = V - i < 16 ? (int)(V - i) : 16;
        unsigned beat = V(gtmask)(lanes < 16 ? V(loadn)(x + i, lanes) : V(load)(x + i), val[n - 1]);
        if (lanes < 16) beat &= (1u << lanes) - 1;
        while (beat) {
            int lane = __builtin_ctz(beat);
            beat &= beat - 1;
            float v = x[i + lane];
            if (!(v > val[n - 1])) continue; /* the threshold rose within this vector */
            int at = n - 1;
            while (at > 0 && v > val[at - 1]) {
                val[at] = val[at - 1];
                idx[at] = idx[at - 1];
                at--;
            }
            val[at] = v;
            idx[at] = i + lane;
        }
    }
}

/* the logistic sigmoid 1 / (1 + e^-x) and tanh(x) = 2 sigmoid(2x) - 1, through exp (e^-x taken at most at
   e^80: the sigmoid is 0 to fp32 there) */
INLINE TARGET V(vec) V(sigmoid)(V(vec) x)
{
    V(vec) e = V(exp)(V(min)(V(sub)(V(zero)(), x), V(set1)(80.0f)));
    return V(div)(V(set1)(1.0f), V(add)(V(set1)(1.0f), e));
}
INLINE TARGET V(vec) V(tanh)(V(vec) x)
{
    return V(fma)(V(set1)(2.0f), V(sigmoid)(V(add)(x, x)), V(set1)(-1.0f));
}

/* one LSTM layer over T steps, as torch's nn.LSTM (gates i, f, g, o; c = f c + i g, h = o tanh(c)): xg (T, 4H)
   each step's input products plus both biases (computed before, for all steps at once); wt (H, 4H) the
   recurrent weight transposed; h, c (H) the state, updated; out (T, H) each step's h. H a multiple of 16, at
   most LSTM_MAX_H. One thread: each step needs the one before. A step reads the whole recurrent weight (256 KB
   for the VAD's H = 128) from the core's L2 cache, which bounds it at ~1.8 us. */
TARGET void V(lstm)(const float *xg, const float *wt, float *h, float *c, float *out, int T, int H)
{
    float g[4 * LSTM_MAX_H];
    const int G = 4 * H;
    for (int t = 0; t < T; t++) {
        const float *x = xg + (size_t)t * G;
        for (int j0 = 0; j0 < G; j0 += 16 * VECS) {
            V(vec) acc[VECS];
            for (int j = 0; j < VECS; j++) acc[j] = V(load)(x + j0 + 16 * j);
            for (int k = 0; k < H; k++) {
                V(vec) hk = V(set1)(h[k]);
                const float *w = wt + (size_t)k * G + j0;
                for (int j = 0; j < VECS; j++) acc[j] = V(fma)(V(load)(w + 16 * j), hk, acc[j]);
            }
            for (int j = 0; j < VECS; j++) V(store)(g + j0 + 16 * j, acc[j]);
        }
        for (int j = 0; j < H; j += 16) {
            V(vec) i = V(sigmoid)(V(load)(g + j)), f = V(sigmoid)(V(load)(g + H + j));
            V(vec) u = V(tanh)(V(load)(g + 2 * H + j)), o = V(sigmoid)(V(load)(g + 3 * H + j));
            V(vec) cj = V(fma)(f, V(load)(c + j), V(mul)(i, u));
            V(vec) hj = V(mul)(o, V(tanh)(cj));
            V(store)(c + j, cj);
            V(store)(h + j, hj);
            V(store)(out + (size_t)t * H + j, hj);
        }
    }
}

#endif
