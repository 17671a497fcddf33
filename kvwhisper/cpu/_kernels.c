/* The decode step's two memory-bound parts as CPU kernels (x86-64 with AVX-512): kvwhisper.engine._kernels.

A cached decode step multiplies a few rows (one per beam) by every weight of the decoder and attends them
over every audio position: its time is the bytes it reads. Python side: kvwhisper/engine/kernels.py.

gemv: y[m, n] = sum_k W[n, k] * x[m, k] + bias[n] + add[m, n], over 2-byte weights in fp32 arithmetic.
   Whisper's checkpoints store their weights as fp16 numbers, so an fp32 model's weights are fp16 values held
   in 4 bytes. Here they are read as the 2-byte fp16 numbers they are and widened to fp32 in registers
   (vcvtph2ps: exact), so the arithmetic is fp32's and the bytes read are halved. A bf16 model's weights are
   read as bf16 and widened the same way (a shift), against fp32 rows: only the weights are rounded. W is packed as
   (ceil(N / 64), K, 64) fp16: for each group of 64 outputs, their 64 weights of input k are contiguous, so a
   group is one sequential stream and its 64 sums stay in 4 registers per row.

attend: softmax(q K^T / sqrt(D)) V for a few query rows per (batch, head) over S keys, in fp32: one pass over
   K for the scores (kept in a small buffer), one over V. Strides are given per tensor, so the fused q/k/v
   product's views, the self-attention cache's slice and the cross-attention K/V are read where they lie.

Work is split over OpenMP threads (the OpenMP runtime torch loaded, when it is the same library): by groups
of 64 outputs, or by (batch, head). Each output is computed by one thread in one order, so results do not
depend on the thread count. No torch headers: the wrapper passes data pointers (tensor.data_ptr()) as ints. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <math.h>
#include <stdint.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_KERNEL 1
#include <immintrin.h>
#else
#define HAVE_KERNEL 0
#endif

#define GROUP 64 /* outputs per group: 4 AVX-512 registers of 16 fp32 */
#define MAX_ROWS 5 /* rows per pass: 4 x 5 accumulators + 4 weights fit in 32 registers */

#if HAVE_KERNEL
#define KERNEL_TARGET __attribute__((target("avx512f,f16c,fma")))

/* 16 stored weights widened to fp32 (exact either way): fp16 by vcvtph2ps, bf16 by a 16-bit shift */
static inline __attribute__((always_inline)) KERNEL_TARGET __m512
widen(const uint16_t *p, const int bf16)
{
    __m256i h = _mm256_loadu_si256((const __m256i *)p);
    if (bf16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
}

static inline __attribute__((always_inline)) KERNEL_TARGET void
groups(const uint16_t *wp, const float *x, float *y, const float *bias, const float *add, int N, int K,
       int g0, int g1, const int rows, const int bf16)
{
    for (int g = g0; g < g1; g++) {
        __m512 acc[MAX_ROWS][4];
        for (int m = 0; m < rows; m++)
            for (int j = 0; j < 4; j++) acc[m][j] = _mm512_setzero_ps();
        const uint16_t *w = wp + (size_t)g * K * GROUP;
        for (int k = 0; k < K; k++) {
            const uint16_t *wk = w + (size_t)k * GROUP;
            _mm_prefetch((const char *)(wk + 32 * GROUP), _MM_HINT_T0);
            _mm_prefetch((const char *)(wk + 32 * GROUP + 32), _MM_HINT_T0);
            __m512 w0 = widen(wk, bf16);
            __m512 w1 = widen(wk + 16, bf16);
            __m512 w2 = widen(wk + 32, bf16);
            __m512 w3 = widen(wk + 48, bf16);
            for (int m = 0; m < rows; m++) {
                __m512 xv = _mm512_set1_ps(x[(size_t)m * K + k]);
                acc[m][0] = _mm512_fmadd_ps(w0, xv, acc[m][0]);
                acc[m][1] = _mm512_fmadd_ps(w1, xv, acc[m][1]);
                acc[m][2] = _mm512_fmadd_ps(w2, xv, acc[m][2]);
                acc[m][3] = _mm512_fmadd_ps(w3, xv, acc[m][3]);
            }
        }
        for (int j = 0; j < 4; j++) {
            int n = g * GROUP + j * 16;
            if (n >= N) break;
            __mmask16 mask = n + 16 <= N ? (__mmask16)0xFFFF : (__mmask16)((1u << (N - n)) - 1);
            __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias + n) : _mm512_setzero_ps();
            for (int m = 0; m < rows; m++) {
                __m512 r = _mm512_add_ps(acc[m][j], b);
                if (add) r = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, add + (size_t)m * N + n), r);
                _mm512_mask_storeu_ps(y + (size_t)m * N + n, mask, r);
            }
        }
    }
}

/* rows m0..m0+rows of x against groups g0..g1 */
static KERNEL_TARGET void
pass(const uint16_t *wp, const float *x, float *y, const float *bias, const float *add, int N, int K, int g0,
     int g1, int rows, int bf16)
{
#define ROWS(r)                                                                                               \
    if (bf16) groups(wp, x, y, bias, add, N, K, g0, g1, r, 1);                                              \
    else groups(wp, x, y, bias, add, N, K, g0, g1, r, 0);                                                    \
    break;
    switch (rows) {
    case 1: ROWS(1)
    case 2: ROWS(2)
    case 3: ROWS(3)
    case 4: ROWS(4)
    default: ROWS(5)
    }
#undef ROWS
}

static void
gemv(const uint16_t *wp, const float *x, float *y, const float *bias, const float *add, int M, int N, int K,
     int bf16, int threads)
{
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
        for (int m = 0; m < M; m += MAX_ROWS) {
            int rows = M - m < MAX_ROWS ? M - m : MAX_ROWS;
            pass(wp, x + (size_t)m * K, y + (size_t)m * N, bias, add ? add + (size_t)m * N : NULL, N, K, g0, g1,
                 rows, bf16);
        }
    }
}

/* e^x for x <= 0 (scores less their maximum), Cephes' expf polynomial: within ~1 ulp */
static inline __attribute__((always_inline)) KERNEL_TARGET __m512
exp_ps(__m512 x)
{
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

#define ATTEND_ROWS 8 /* query rows per (batch, head) at most: beams of a window */

/* one (batch, head): R query rows (stride q_r) over S keys/values (rows of D, strides k_s, v_s) */
static KERNEL_TARGET void
attend_head(const float *q, long q_r, const float *k, long k_s, const float *v, long v_s, float *o, long o_r,
            int R, int S, int D, float *scores)
{
    const float scale = 1.0f / sqrtf((float)D);
    const int nd = D / 16;
    float inv[ATTEND_ROWS]; /* 1 / the softmax denominator of each row */
    for (int r = 0; r < R; r++) {
        float *sc = scores + (size_t)r * S;
        __m512 qv[8];
        for (int j = 0; j < nd; j++) qv[j] = _mm512_mul_ps(_mm512_loadu_ps(q + r * q_r + 16 * j), _mm512_set1_ps(scale));
        __m512 mx = _mm512_set1_ps(-INFINITY);
        int s = 0;
        for (; s < S; s++) {
            const float *ks = k + s * k_s;
            __m512 a = _mm512_mul_ps(qv[0], _mm512_loadu_ps(ks));
            for (int j = 1; j < nd; j++) a = _mm512_fmadd_ps(qv[j], _mm512_loadu_ps(ks + 16 * j), a);
            sc[s] = _mm512_reduce_add_ps(a);
        }
        for (s = 0; s + 16 <= S; s += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(sc + s));
        if (s < S) mx = _mm512_mask_max_ps(mx, (__mmask16)((1u << (S - s)) - 1), mx, _mm512_maskz_loadu_ps((__mmask16)((1u << (S - s)) - 1), sc + s));
        __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
        __m512 sum = _mm512_setzero_ps();
        for (s = 0; s + 16 <= S; s += 16) {
            __m512 e = exp_ps(_mm512_sub_ps(_mm512_loadu_ps(sc + s), m));
            _mm512_storeu_ps(sc + s, e);
            sum = _mm512_add_ps(sum, e);
        }
        if (s < S) {
            __mmask16 mask = (__mmask16)((1u << (S - s)) - 1);
            __m512 e = _mm512_maskz_mov_ps(mask, exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, sc + s), m)));
            _mm512_mask_storeu_ps(sc + s, mask, e);
            sum = _mm512_add_ps(sum, e);
        }
        inv[r] = 1.0f / _mm512_reduce_add_ps(sum);
    }
    /* out[r] = sum_s e[r, s] V[s] / sum_s e[r, s]: V read once for all rows */
    for (int d0 = 0; d0 < nd; d0 += 4) {
        int dn = nd - d0 < 4 ? nd - d0 : 4;
        __m512 acc[ATTEND_ROWS][4];
        for (int r = 0; r < R; r++)
            for (int j = 0; j < dn; j++) acc[r][j] = _mm512_setzero_ps();
        for (int s = 0; s < S; s++) {
            const float *vs = v + s * v_s + 16 * d0;
            __m512 vv[4];
            for (int j = 0; j < dn; j++) vv[j] = _mm512_loadu_ps(vs + 16 * j);
            for (int r = 0; r < R; r++) {
                __m512 p = _mm512_set1_ps(scores[(size_t)r * S + s]);
                for (int j = 0; j < dn; j++) acc[r][j] = _mm512_fmadd_ps(p, vv[j], acc[r][j]);
            }
        }
        for (int r = 0; r < R; r++)
            for (int j = 0; j < dn; j++)
                _mm512_storeu_ps(o + r * o_r + 16 * (d0 + j), _mm512_mul_ps(acc[r][j], _mm512_set1_ps(inv[r])));
    }
}

/* every (n, h): q (n*q_n + h*q_h + r*q_r), k/v (n*k_n + h*k_h + s*D), o (n*o_n + h*o_h + r*o_r); `scratch`
   holds R * S floats of scores for each of the `threads` threads */
static void
attend(const float *q, const long *qs, const float *k, const long *ks, const float *v, const long *vs, float *o,
       const long *os, int N, int H, int R, int S, int D, float *scratch, int threads)
{
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
            attend_head(q + n * qs[0] + h * qs[1], qs[2], k + n * ks[0] + h * ks[1], ks[2], v + n * vs[0] + h * vs[1],
                        vs[2], o + n * os[0] + h * os[1], os[2], R, S, D, scores);
        }
    }
}
#endif

static int
supported(void)
{
#if HAVE_KERNEL
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

static PyObject *
py_supported(PyObject *self, PyObject *unused)
{
    return PyBool_FromLong(supported());
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

/* gemv(w, x, y, bias, add, M, N, K, bf16, threads): pointers as ints (bias/add: 0 or None for none); W stored
   as fp16 numbers, or as bf16 with bf16 true */
static PyObject *
py_gemv(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    void *p[5];
    long d[5];
    if (parse_args(args, nargs, 5, p, 5, d, "gemv takes 10 arguments: w, x, y, bias, add, M, N, K, bf16, threads"))
        return NULL;
    if (!p[0] || !p[1] || !p[2] || d[0] < 1 || d[1] < 1 || d[2] < 1) {
        PyErr_SetString(PyExc_ValueError, "gemv: null pointer or empty shape");
        return NULL;
    }
    if (!supported()) {
        PyErr_SetString(PyExc_RuntimeError, "gemv: this CPU has no AVX-512 (avx512f, f16c, fma)");
        return NULL;
    }
#if HAVE_KERNEL
    Py_BEGIN_ALLOW_THREADS
    gemv(p[0], p[1], p[2], p[3], p[4], (int)d[0], (int)d[1], (int)d[2], d[3] != 0, (int)d[4]);
    Py_END_ALLOW_THREADS
#endif
    Py_RETURN_NONE;
}

/* attend(q, k, v, o, N, H, R, S, D, q_strides, k_strides, v_strides, o_strides, threads): pointers as ints,
   strides (in floats) as 3-tuples (batch, head, row); k/v rows must be contiguous runs of D floats */
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
    static const char usage[] = "attend takes 14 arguments: q, k, v, o, N, H, R, S, D, q/k/v/o strides, threads";
    void *p[4];
    long d[5], st[4][3], threads;
    if (nargs != 14) {
        PyErr_SetString(PyExc_TypeError, usage);
        return NULL;
    }
    if (parse_args(args, 9, 4, p, 5, d, usage)) return NULL;
    threads = PyLong_AsLong(args[13]);
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
        PyErr_SetString(PyExc_RuntimeError, "attend: this CPU has no AVX-512 (avx512f, f16c, fma)");
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
           (int)d[4], scratch, (int)threads);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(scratch);
#endif
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"supported", py_supported, METH_NOARGS, "Whether this CPU runs the kernel (AVX-512 with F16C and FMA)."},
    {"gemv", (PyCFunction)(void (*)(void))py_gemv, METH_FASTCALL,
     "gemv(w, x, y, bias, add, M, N, K, bf16, threads): y = x @ W.T + bias + add, W packed fp16 or bf16."},
    {"attend", (PyCFunction)(void (*)(void))py_attend, METH_FASTCALL,
     "attend(q, k, v, o, N, H, R, S, D, q_strides, k_strides, v_strides, o_strides, threads): softmax attention."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__kernels(void)
{
    return PyModule_Create(&module);
}
