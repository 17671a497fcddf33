/* Matrix-vector products over fp16-stored weights in fp32 arithmetic (CPU, x86-64 with AVX-512).

   y[m, n] = sum_k W[n, k] * x[m, k] + bias[n] + add[m, n]   for a few rows m (one per beam).

   A decode step multiplies a few rows by every weight of the decoder: its time is the bytes of weight it
   reads. Whisper's checkpoints store their weights as fp16 numbers, so an fp32 model's weights are fp16
   values held in 4 bytes. Here they are read as the 2-byte fp16 numbers they are and widened to fp32 in
   registers (vcvtph2ps: exact), so the arithmetic is fp32's and the bytes read are halved. Python side:
   kvwhisper/engine/packed.py (`HalfPacked`), which packs only weights that fp16 holds exactly.

   Layout: W packed as (ceil(N / 64), K, 64) fp16: for each group of 64 outputs, their 64 weights of input k
   are contiguous, so a group is one sequential stream and its 64 sums stay in 4 registers per row. The
   groups are split over OpenMP threads (the OpenMP runtime torch loaded, when it is the same library), each
   output summed by one thread in one order: the result does not depend on the thread count.

   No torch headers: the Python wrapper passes data pointers as integers (torch tensors' data_ptr()). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>

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

static inline __attribute__((always_inline)) KERNEL_TARGET void
groups(const uint16_t *wp, const float *x, float *y, const float *bias, const float *add, int N, int K,
       int g0, int g1, const int rows)
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
            __m512 w0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(wk)));
            __m512 w1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(wk + 16)));
            __m512 w2 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(wk + 32)));
            __m512 w3 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(wk + 48)));
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
     int g1, int rows)
{
    switch (rows) {
    case 1: groups(wp, x, y, bias, add, N, K, g0, g1, 1); break;
    case 2: groups(wp, x, y, bias, add, N, K, g0, g1, 2); break;
    case 3: groups(wp, x, y, bias, add, N, K, g0, g1, 3); break;
    case 4: groups(wp, x, y, bias, add, N, K, g0, g1, 4); break;
    default: groups(wp, x, y, bias, add, N, K, g0, g1, 5); break;
    }
}

static void
gemv(const uint16_t *wp, const float *x, float *y, const float *bias, const float *add, int M, int N, int K,
     int threads)
{
    int n_groups = (N + GROUP - 1) / GROUP;
    if (threads > n_groups) threads = n_groups;
    if (threads < 1) threads = 1;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        int t = 0, T = 1;
#ifdef _OPENMP
        extern int omp_get_thread_num(void);
        extern int omp_get_num_threads(void);
        t = omp_get_thread_num();
        T = omp_get_num_threads();
#endif
        int g0 = (int)((long)n_groups * t / T), g1 = (int)((long)n_groups * (t + 1) / T);
        for (int m = 0; m < M; m += MAX_ROWS) {
            int rows = M - m < MAX_ROWS ? M - m : MAX_ROWS;
            pass(wp, x + (size_t)m * K, y + (size_t)m * N, bias, add ? add + (size_t)m * N : NULL, N, K, g0, g1,
                 rows);
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

static void *
as_pointer(PyObject *o)
{
    return o == Py_None ? NULL : PyLong_AsVoidPtr(o);
}

/* gemv(w, x, y, bias, add, M, N, K, threads): pointers as ints (bias/add: 0 or None for none) */
static PyObject *
py_gemv(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "gemv takes 9 arguments: w, x, y, bias, add, M, N, K, threads");
        return NULL;
    }
    void *p[5];
    for (int i = 0; i < 5; i++) p[i] = as_pointer(args[i]);
    long d[4];
    for (int i = 0; i < 4; i++) d[i] = PyLong_AsLong(args[5 + i]);
    if (PyErr_Occurred()) return NULL;
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
    gemv(p[0], p[1], p[2], p[3], p[4], (int)d[0], (int)d[1], (int)d[2], (int)d[3]);
    Py_END_ALLOW_THREADS
#endif
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"supported", py_supported, METH_NOARGS, "Whether this CPU runs the kernel (AVX-512 with F16C and FMA)."},
    {"gemv", (PyCFunction)(void (*)(void))py_gemv, METH_FASTCALL,
     "gemv(w, x, y, bias, add, M, N, K, threads): y = x @ W.T + bias + add over fp16-packed W (pointers)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_halfgemv", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__halfgemv(void)
{
    return PyModule_Create(&module);
}
