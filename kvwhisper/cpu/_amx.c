/* The encoder's self-attention in bf16 on Intel's AMX matrix units: kvwhisper.cpu._amx.

softmax(q K^T / sqrt(D)) V for every (batch, head) of a bf16 model's encoder, D = 64. Python side:
kvwhisper/cpu/amx.py.

Per (batch, head), for each block of 32 queries:
- scores: the block's 32 x S products with every key, on the tiles (bf16 inputs, fp32 sums), kept in a
  32 x S fp32 buffer that stays in the core's cache;
- softmax in fp32 with AVX-512, 16 rows side by side: exp(scale * (s - max)), and its sum;
- output: the unnormalized probabilities, rounded to bf16, times V on the tiles, then divided by the row's sum
  in fp32 (as torch's bf16 flash attention rounds them). With `split`, the probabilities enter the product as
  two bf16 numbers, hi = bf16(p) and lo = bf16(p - hi), summed by the tiles: p to about 16 bits, so the result
  is close to an fp32 attention over the same bf16 q, K and V, at about 1.4 times the time.
K and V are first laid out as the tiles read them (pairs of consecutive reduction elements side by side),
zero-padded to a multiple of 64 keys; padded keys get probability 0.

Strides are given per tensor (the last one must be 1), so the fused q/k/v product's views are read where they
lie, and the output is written as (N, T, H, D), whose head merge is a view. Work is split over OpenMP threads
by (batch, head): each output is computed by one thread in one order, so results do not depend on the thread
count.

Built where the compiler knows AMX (GCC 11, Clang 12 or newer, x86-64); used where the CPU has AMX-BF16 and
AVX512-BF16 and Linux grants the tile state (arch_prctl). Elsewhere `supported()` is False and the encoder
keeps its other paths (kvwhisper/cpu/ops.py). No torch headers: the wrapper passes data pointers as ints. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && ((defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11) || \
                            (defined(__clang__) && __clang_major__ >= 12))
#define HAVE_AMX 1
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#else
#define HAVE_AMX 0
#endif

#define D_HEAD 64      /* the head size the kernel takes (every Whisper size's) */
#define QROWS 32       /* query rows per block: two tiles' rows, which share each key tile loaded */
#define KEY_ALIGN 64   /* keys are padded to a multiple of this: 4 score tiles of 16 keys at a time */
#define TILE_BYTES 1024 /* 16 rows of 64 bytes */

#if HAVE_AMX
#define TARGET __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#define INLINE static inline __attribute__((always_inline))

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

/* tiles 0-3: fp32 results (16 x 16); 4, 5: A operands (16 rows x 32 bf16); 6, 7: B operands (16 pairs x 16) */
struct tile_config {
    uint8_t palette;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((packed));

static int amx_ok = -1;

static int
cpu_has_amx(void)
{
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    int avx512f = (b >> 16) & 1, avx512bw = (b >> 30) & 1, avx512dq = (b >> 17) & 1, avx512vl = (b >> 31) & 1;
    int amx_bf16 = (d >> 22) & 1, amx_tile = (d >> 24) & 1;
    __cpuid_count(7, 1, a, b, c, d);
    int avx512_bf16 = (a >> 5) & 1;
    return avx512f && avx512bw && avx512dq && avx512vl && amx_bf16 && amx_tile && avx512_bf16;
}

static int
amx_supported(void)
{
    if (amx_ok < 0) {
        /* the tile data state must be granted to the process by Linux before the first tile instruction */
        amx_ok = cpu_has_amx() && syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    }
    return amx_ok;
}

TARGET static void
load_tiles(void)
{
    struct tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) {
        cfg.rows[i] = 16;
        cfg.colsb[i] = 64;
    }
    _tile_loadconfig(&cfg);
}

/* 2^t for t <= 0 in fp32: 2^n * 2^f, n = round(t), f in [-1/2, 1/2], 2^f by a polynomial fitted to relative
   error 1.1e-7 (degree 5: fp32's rounding is 6e-8) or, where the result is rounded to bf16 next (`precise` 0),
   1.1e-4 (degree 3: bf16's rounding is 3.9e-3); scalef gives 0 where 2^n is below fp32's range */
INLINE TARGET __m512
exp2_neg(__m512 t, int precise)
{
    __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(t, n), p;
    if (precise) {
        p = _mm512_set1_ps(1.321867248162039e-03f);
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.671697938399155e-03f));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5508929524512016e-02f));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022238002741106e-01f));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931468559416915e-01f));
    } else {
        p = _mm512_set1_ps(5.459282474189784e-02f);
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4221783810118194e-01f));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.933686012593135e-01f));
    }
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* 16 fp32 numbers rounded to bf16 (to nearest even), as 16 uint16 */
INLINE TARGET __m256i
to_bf16(__m512 x)
{
    return (__m256i)_mm512_cvtneps_pbh(x);
}

INLINE TARGET __m512
from_bf16(__m256i h)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* K (S rows of D_HEAD, row stride ks) as the B operands of q K^T: for each block of 16 keys and each half of
   the head (32 dimensions), a tile whose row r holds, for the 16 keys, their dimension pair (2r, 2r + 1) */
static void
pack_keys(const uint16_t *k, long ks, int S, int S_pad, uint32_t *kp)
{
    for (int kb = 0; kb < S_pad / 16; kb++)
        for (int half = 0; half < 2; half++) {
            uint32_t *tile = kp + (size_t)(kb * 2 + half) * 256;
            for (int j = 0; j < 16; j++) {
                int key = kb * 16 + j;
                const uint32_t *row = (const uint32_t *)(k + key * ks) + half * 16;
                for (int r = 0; r < 16; r++) tile[r * 16 + j] = key < S ? row[r] : 0;
            }
        }
}

/* V (S rows of D_HEAD, row stride vs) as the B operands of p V: for each block of 32 keys and each quarter of
   the head (16 dimensions), a tile whose row r holds, for the 16 dimensions, the values of keys 2r and 2r + 1 */
static void
pack_values(const uint16_t *v, long vs, int S, int S_pad, uint16_t *vp)
{
    for (int kb = 0; kb < S_pad / 32; kb++)
        for (int quarter = 0; quarter < 4; quarter++) {
            uint16_t *tile = vp + (size_t)(kb * 4 + quarter) * 512;
            for (int r = 0; r < 16; r++)
                for (int p = 0; p < 2; p++) {
                    int key = kb * 32 + 2 * r + p;
                    const uint16_t *row = v + key * vs + quarter * 16;
                    for (int j = 0; j < 16; j++) tile[r * 32 + 2 * j + p] = key < S ? row[j] : 0;
                }
        }
}

/* The scores and probabilities of a block of QROWS queries are kept tile by tile, each tile 1 KB contiguous
   (a tile store or load of 16 rows scattered S_pad apart costs about twice a contiguous one):
   - scores: for each key group of 16 and each row half, the 16 x 16 fp32 tile (SCORE_AT);
   - probabilities: for each key group of 32 and each row half, the 16 x 32 bf16 tile (PROB_AT).
   A row's 16 scores of key group g start at SCORE_AT(g, row); its 16 probabilities of key group g (of 16) at
   PROB_AT(g, row). */
#define SCORE_AT(g, row) ((size_t)((g) * 2 + (row) / 16) * 256 + ((row) % 16) * 16)
#define PROB_AT(g, row) ((size_t)(((g) / 2) * 2 + (row) / 16) * 512 + ((row) % 16) * 32 + ((g) % 2) * 16)

/* the scores of a block of 32 queries (32 x D_HEAD, contiguous) with every key: the block's queries stay in four
   tiles (two row halves by two head halves), each key tile is loaded once for the two row halves */
TARGET static void
block_scores(const uint16_t *qb, const uint32_t *kp, int S_pad, float *scores)
{
    _tile_loadd(4, qb, D_HEAD * 2);
    _tile_loadd(5, qb + 32, D_HEAD * 2);
    _tile_loadd(6, qb + 16 * D_HEAD, D_HEAD * 2);
    _tile_loadd(7, qb + 16 * D_HEAD + 32, D_HEAD * 2);
    for (int g = 0; g < S_pad / 16; g++) {
        const uint32_t *t = kp + (size_t)g * 2 * 256;
        _tile_zero(0);
        _tile_zero(1);
        _tile_loadd(2, t, 64);
        _tile_dpbf16ps(0, 4, 2);
        _tile_dpbf16ps(1, 6, 2);
        _tile_loadd(3, t + 256, 64);
        _tile_dpbf16ps(0, 5, 3);
        _tile_dpbf16ps(1, 7, 3);
        _tile_stored(0, scores + SCORE_AT(g, 0), 64);
        _tile_stored(1, scores + SCORE_AT(g, 16), 64);
    }
}

/* p = exp(scale * (s - max)) of 16 scores (the lanes of `keep`; 0 in the others) as hi + lo bf16 (hi alone
   where lo is NULL); returns p */
INLINE TARGET __m512
probabilities(__m512 s, __m512 sc, __m512 shift, __mmask16 keep, uint16_t *hi, uint16_t *lo)
{
    __m512 p = _mm512_maskz_mov_ps(keep, exp2_neg(_mm512_fmadd_ps(s, sc, shift), lo != NULL));
    __m256i h = to_bf16(p);
    _mm256_storeu_si256((__m256i *)hi, h);
    if (lo) _mm256_storeu_si256((__m256i *)lo, to_bf16(_mm512_sub_ps(p, from_bf16(h))));
    return p;
}

/* the softmax numerators of a block's 16 rows `half * 16` to `half * 16 + 15`: p = exp(scale * (s - max)) for
   the S keys (0 after them, to S_pad), as hi + lo bf16 (hi alone where lo is NULL), and each row's sum of p in
   sums[]. Tile by tile, the 16 rows side by side in registers: contiguous reads and writes. The exponent is
   taken base 2: scale * log2(e) * s - scale * log2(e) * max, one multiply-add. */
TARGET static void
block_softmax(const float *scores, int half, int S, int S_pad, float scale, uint16_t *hi, uint16_t *lo,
              float *sums)
{
    int full = S / 16, groups = S_pad / 16;
    __mmask16 tail = (__mmask16)((1u << (S % 16)) - 1);
    __m512 m[16], acc[16];
    for (int r = 0; r < 16; r++) m[r] = _mm512_set1_ps(-__builtin_inff());
    for (int g = 0; g < full; g++) {
        const float *t = scores + SCORE_AT(g, half * 16);
        for (int r = 0; r < 16; r++) m[r] = _mm512_max_ps(m[r], _mm512_load_ps(t + r * 16));
    }
    if (tail) {
        const float *t = scores + SCORE_AT(full, half * 16);
        for (int r = 0; r < 16; r++) m[r] = _mm512_mask_max_ps(m[r], tail, m[r], _mm512_load_ps(t + r * 16));
    }
    float c = scale * 1.44269504088896341f, shift[16];
    for (int r = 0; r < 16; r++) {
        shift[r] = -c * _mm512_reduce_max_ps(m[r]);
        acc[r] = _mm512_setzero_ps();
    }
    __m512 sc = _mm512_set1_ps(c);
    for (int g = 0; g < groups; g++) {
        const float *t = scores + SCORE_AT(g, half * 16);
        size_t at = PROB_AT(g, half * 16);
        __mmask16 keep = g < full ? 0xFFFF : (g == full ? tail : 0);
        if (keep == 0xFFFF && lo) {
            for (int r = 0; r < 16; r++)
                acc[r] = _mm512_add_ps(acc[r], probabilities(_mm512_load_ps(t + r * 16), sc, _mm512_set1_ps(shift[r]),
                                                             0xFFFF, hi + at + r * 32, lo + at + r * 32));
        } else if (keep == 0xFFFF) {
            for (int r = 0; r < 16; r++)
                acc[r] = _mm512_add_ps(acc[r], probabilities(_mm512_load_ps(t + r * 16), sc, _mm512_set1_ps(shift[r]),
                                                             0xFFFF, hi + at + r * 32, NULL));
        } else {
            for (int r = 0; r < 16; r++)
                acc[r] = _mm512_add_ps(acc[r], probabilities(_mm512_maskz_load_ps(keep, t + r * 16), sc,
                                                             _mm512_set1_ps(shift[r]), keep, hi + at + r * 32,
                                                             lo ? lo + at + r * 32 : NULL));
        }
    }
    for (int r = 0; r < 16; r++) sums[r] = _mm512_reduce_add_ps(acc[r]);
}

/* acc[16][D_HEAD] = (hi + lo) times V for one row half of the block (hi alone where lo is NULL), over the packed
   values */
TARGET static void
block_output(const uint16_t *hi, const uint16_t *lo, int half, const uint16_t *vp, int S_pad, float *acc)
{
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
#define OUT_TILE(c, b)                 \
    _tile_loadd(b, t + (c) * 512, 64); \
    _tile_dpbf16ps(c, 4, b);
    for (int kb = 0; kb < S_pad / 32; kb++) {
        const uint16_t *t = vp + (size_t)kb * 4 * 512;
        size_t at = PROB_AT(kb * 2, half * 16);
        _tile_loadd(4, hi + at, 64);
        if (lo) {
            _tile_loadd(5, lo + at, 64);
            OUT_TILE(0, 6)
            _tile_dpbf16ps(0, 5, 6);
            OUT_TILE(1, 7)
            _tile_dpbf16ps(1, 5, 7);
            OUT_TILE(2, 6)
            _tile_dpbf16ps(2, 5, 6);
            OUT_TILE(3, 7)
            _tile_dpbf16ps(3, 5, 7);
        } else {
            OUT_TILE(0, 6)
            OUT_TILE(1, 7)
            OUT_TILE(2, 6)
            OUT_TILE(3, 7)
        }
    }
#undef OUT_TILE
    _tile_stored(0, acc, D_HEAD * 4);
    _tile_stored(1, acc + 16, D_HEAD * 4);
    _tile_stored(2, acc + 32, D_HEAD * 4);
    _tile_stored(3, acc + 48, D_HEAD * 4);
}

struct buffers {
    uint16_t *q;      /* T_pad x D_HEAD: a head's queries, zero rows after T */
    uint32_t *k;      /* S_pad x D_HEAD bf16 as packed by pack_keys */
    uint16_t *v;      /* S_pad x D_HEAD as packed by pack_values */
    float *scores;    /* QROWS x S_pad */
    uint16_t *hi, *lo; /* QROWS x S_pad each */
    float *acc;       /* 16 x D_HEAD: one tile row block of the output */
};

/* one (batch, head): q (T rows, stride qs), k/v (S rows, strides ks/vs), o (T rows, stride os) */
TARGET static void
attend_head(const uint16_t *q, long qs, const uint16_t *k, long ks, const uint16_t *v, long vs, uint16_t *o,
            long os, int T, int S, float scale, int split, struct buffers *b)
{
    int T_pad = (T + QROWS - 1) / QROWS * QROWS, S_pad = (S + KEY_ALIGN - 1) / KEY_ALIGN * KEY_ALIGN;
    for (int t = 0; t < T_pad; t++) {
        if (t < T)
            memcpy(b->q + (size_t)t * D_HEAD, q + t * qs, D_HEAD * 2);
        else
            memset(b->q + (size_t)t * D_HEAD, 0, D_HEAD * 2);
    }
    pack_keys(k, ks, S, S_pad, b->k);
    pack_values(v, vs, S, S_pad, b->v);
    float sums[QROWS];
    for (int t0 = 0; t0 < T; t0 += QROWS) {
        int rows = T - t0 < QROWS ? T - t0 : QROWS;
        block_scores(b->q + (size_t)t0 * D_HEAD, b->k, S_pad, b->scores);
        for (int half = 0; half < rows; half += 16)
            block_softmax(b->scores, half / 16, S, S_pad, scale, b->hi, split ? b->lo : NULL, sums + half);
        for (int half = 0; half < rows; half += 16) {
            block_output(b->hi, split ? b->lo : NULL, half / 16, b->v, S_pad, b->acc);
            for (int r = half; r < rows && r < half + 16; r++) {
                __m512 inv = _mm512_set1_ps(1.0f / sums[r]);
                for (int d = 0; d < D_HEAD; d += 16)
                    _mm256_storeu_si256((__m256i *)(o + (t0 + r) * os + d),
                                        to_bf16(_mm512_mul_ps(_mm512_loadu_ps(b->acc + (r - half) * D_HEAD + d), inv)));
            }
        }
    }
}

static void *
alloc64(size_t bytes)
{
    return aligned_alloc(64, (bytes + 63) / 64 * 64);
}

/* every (n, h): q at n*qs[0] + h*qs[1] + t*qs[2], k and v likewise over s, o at n*os[0] + h*os[1] + t*os[2];
   returns 0, or -1 where a buffer could not be allocated */
TARGET static int
attend(const uint16_t *q, const long *qs, const uint16_t *k, const long *ks, const uint16_t *v, const long *vs,
       uint16_t *o, const long *os, int N, int H, int T, int S, float scale, int split, int threads)
{
    int pairs = N * H, failed = 0;
    if (threads > pairs) threads = pairs;
    if (threads < 1) threads = 1;
    int T_pad = (T + QROWS - 1) / QROWS * QROWS, S_pad = (S + KEY_ALIGN - 1) / KEY_ALIGN * KEY_ALIGN;
#pragma omp parallel num_threads(threads) if (threads > 1) reduction(| : failed)
    {
        struct buffers b;
        b.q = alloc64((size_t)T_pad * D_HEAD * 2);
        b.k = alloc64((size_t)S_pad * D_HEAD * 2);
        b.v = alloc64((size_t)S_pad * D_HEAD * 2);
        b.scores = alloc64((size_t)QROWS * S_pad * 4);
        b.hi = alloc64((size_t)QROWS * S_pad * 2);
        b.lo = alloc64((size_t)QROWS * S_pad * 2);
        b.acc = alloc64((size_t)16 * D_HEAD * 4);
        int ok = b.q && b.k && b.v && b.scores && b.hi && b.lo && b.acc;
        if (ok) {
            memset(b.hi, 0, (size_t)QROWS * S_pad * 2); /* rows after the last query's are read, never used */
            memset(b.lo, 0, (size_t)QROWS * S_pad * 2);
            load_tiles();
        } else {
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int i = 0; i < pairs; i++) {
            if (!ok) continue;
            int n = i / H, h = i % H;
            attend_head(q + n * qs[0] + h * qs[1], qs[2], k + n * ks[0] + h * ks[1], ks[2], v + n * vs[0] + h * vs[1],
                        vs[2], o + n * os[0] + h * os[1], os[2], T, S, scale, split, &b);
        }
        if (ok) _tile_release();
        free(b.q);
        free(b.k);
        free(b.v);
        free(b.scores);
        free(b.hi);
        free(b.lo);
        free(b.acc);
    }
    return failed ? -1 : 0;
}
#endif

static PyObject *
py_supported(PyObject *self, PyObject *unused)
{
#if HAVE_AMX
    return PyBool_FromLong(amx_supported());
#else
    Py_RETURN_FALSE;
#endif
}

static int
strides3(PyObject *t, long *out)
{
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 3) {
        PyErr_SetString(PyExc_TypeError, "strides: a tuple of 3 ints");
        return -1;
    }
    for (int i = 0; i < 3; i++) {
        out[i] = PyLong_AsLong(PyTuple_GET_ITEM(t, i));
        if (out[i] == -1 && PyErr_Occurred()) return -1;
    }
    return 0;
}

/* attend(q, k, v, o, N, H, T, S, scale, q_strides, k_strides, v_strides, o_strides, split, threads): pointers
   as ints, strides as 3-tuples of (batch, head, row) in elements; split: the probabilities as hi + lo (1) or as
   one bf16 (0) */
static PyObject *
py_attend(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 15) {
        PyErr_SetString(PyExc_TypeError, "attend: 15 arguments");
        return NULL;
    }
    void *p[4];
    for (int i = 0; i < 4; i++) {
        p[i] = PyLong_AsVoidPtr(args[i]);
        if (PyErr_Occurred()) return NULL;
    }
    long d[4];
    for (int i = 0; i < 4; i++) {
        d[i] = PyLong_AsLong(args[4 + i]);
        if (d[i] == -1 && PyErr_Occurred()) return NULL;
    }
    double scale = PyFloat_AsDouble(args[8]);
    if (scale == -1.0 && PyErr_Occurred()) return NULL;
    long qs[3], ks[3], vs[3], os[3];
    if (strides3(args[9], qs) || strides3(args[10], ks) || strides3(args[11], vs) || strides3(args[12], os))
        return NULL;
    long split = PyLong_AsLong(args[13]), threads = PyLong_AsLong(args[14]);
    if ((split == -1 || threads == -1) && PyErr_Occurred()) return NULL;
#if HAVE_AMX
    if (!amx_supported()) {
        PyErr_SetString(PyExc_RuntimeError, "attend: this CPU does not run AMX-BF16");
        return NULL;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = attend(p[0], qs, p[1], ks, p[2], vs, p[3], os, (int)d[0], (int)d[1], (int)d[2],
                                       (int)d[3], (float)scale, (int)(split != 0), (int)threads);
    Py_END_ALLOW_THREADS if (rc) return PyErr_NoMemory();
    Py_RETURN_NONE;
#else
    PyErr_SetString(PyExc_RuntimeError, "attend: built without AMX");
    return NULL;
#endif
}

static PyMethodDef methods[] = {
    {"supported", py_supported, METH_NOARGS, "Whether this CPU and OS run the AMX kernel."},
    {"attend", (PyCFunction)(void (*)(void))py_attend, METH_FASTCALL, "bf16 self-attention on AMX (D = 64)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_amx", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__amx(void)
{
    return PyModule_Create(&module);
}
