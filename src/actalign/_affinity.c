/*
 * C kernel of actalign.align.StreamingAffinity: the products a block of frames contributes to
 * Eq. 7-9, read straight from the frames as an index stores them (float32, bfloat16 or float16),
 * widened to float32 in registers and accumulated in float32 against float32 step vectors.
 *
 *   products(tail, block, kind, d, u, K, lags, rows, first, generic)
 *
 *   tail   (m, d)  the frames before the block (m >= 0, only for the lag products)
 *   block  (n, d)  this block's frames
 *   u      (K, d)  float32 step vectors, unit rows
 *   rows   (N, K + lags + 1) float64, written in place: block frame i's row is first + i; it gets
 *          block[i] . u[k] in column k, and frame(i - l) . block[i] (frames counted over tail +
 *          block, l = 0 .. lags) goes to column K + l of the earlier frame's row, first + i - l
 *          (nothing where that frame is before the tail or its row before row 0)
 *
 * What numpy does for the same job (widen the whole block to float32, then sgemm) reads and
 * writes the block twice more; here each frame is widened once into a small buffer. On CPUs with
 * AVX-512F a register-blocked loop (3 frames x 8 steps) runs; elsewhere a plain loop that the
 * compiler vectorises. `generic` forces the plain loop (for tests). Results differ from numpy's
 * only in the order of float32 additions.
 *
 *   emit(rows, K, w, base, first, stop, n, scale, bias, linear, out)
 *
 * Eq. 7-9 for output frames first .. stop-1 from the rows those products fill (rows (N, K + w)
 * float64, frame base + r in row r: its K products with the steps, then f_t . f_(t + l) for
 * l < w). Per frame: the window's sums of products (the smoothed frame's products, as smoothing
 * is linear), its squared norm from the pairs inside the window, the cosine, and scale * cos +
 * bias (linear: (1 + cos) / 2), written to out (K, stop - first). The sigmoid is left to numpy's
 * vectorised exp. Returns False where a smoothed frame has no length.
 *
 * No numpy headers: arrays arrive through the buffer protocol, and are read in place.
 */
#include <math.h>
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { F32 = 0, BF16 = 1, F16 = 2 };

static const size_t width_of[3] = {4, 2, 2};

/* IEEE half -> float (no F16C needed; subnormals, inf and NaN kept) */
static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) { man <<= 1; exp--; }
            bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000 | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static void widen_generic(const void *row, int kind, Py_ssize_t d, float *out)
{
    if (kind == F32) {
        memcpy(out, row, d * sizeof(float));
    } else if (kind == BF16) {
        const uint16_t *r = row;
        for (Py_ssize_t j = 0; j < d; j++) {
            uint32_t bits = (uint32_t)r[j] << 16;
            memcpy(out + j, &bits, 4);
        }
    } else {
        const uint16_t *r = row;
        for (Py_ssize_t j = 0; j < d; j++) out[j] = half_to_float(r[j]);
    }
}

static double dot_generic(const float *a, const float *b, Py_ssize_t d)
{
    float s[8] = {0};
    Py_ssize_t j = 0;
    for (; j + 8 <= d; j += 8)
        for (int l = 0; l < 8; l++) s[l] += a[j + l] * b[j + l];
    float t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; j < d; j++) t += a[j] * b[j];
    return (double)t;
}

typedef struct {
    const char *tail, *block;
    Py_ssize_t m, n, d, K, lags;
    int kind;
    const float *u;
    double *rows;
    Py_ssize_t first; /* row of block frame 0 */
} Job;

static void put_product(const Job *J, Py_ssize_t i, Py_ssize_t k, double v)
{
    J->rows[(J->first + i) * (J->K + J->lags + 1) + k] = v;
}

static void put_lag(const Job *J, Py_ssize_t i, Py_ssize_t l, double v) /* frame(i - l) . block[i] */
{
    Py_ssize_t row = J->first + i - l;
    if (row >= 0 && J->m + i - l >= 0) J->rows[row * (J->K + J->lags + 1) + J->K + l] = v;
}

static const char *frame_at(const Job *J, Py_ssize_t i) /* i over tail + block */
{
    size_t row = (size_t)J->d * width_of[J->kind];
    return i < J->m ? J->tail + (size_t)i * row : J->block + (size_t)(i - J->m) * row;
}

/* ring of the last lags + 1 widened frames */
static float *ring_row(float *ring, const Job *J, Py_ssize_t i)
{
    return ring + (size_t)(i % (J->lags + 1)) * J->d;
}

static void lag_products(const Job *J, float *ring, Py_ssize_t i) /* i: block row, widened in ring */
{
    Py_ssize_t g = J->m + i;
    const float *x = ring_row(ring, J, g);
    for (Py_ssize_t l = 0; l <= J->lags && g - l >= 0; l++) put_lag(J, i, l, dot_generic(ring_row(ring, J, g - l), x, J->d));
}

static void fill_ring(const Job *J, float *ring)
{
    Py_ssize_t first = J->m > J->lags ? J->m - J->lags : 0;
    for (Py_ssize_t g = first; g < J->m; g++) widen_generic(frame_at(J, g), J->kind, J->d, ring_row(ring, J, g));
}

static void run_generic(const Job *J, float *ring)
{
    fill_ring(J, ring);
    for (Py_ssize_t i = 0; i < J->n; i++) {
        float *x = ring_row(ring, J, J->m + i);
        widen_generic(frame_at(J, J->m + i), J->kind, J->d, x);
        for (Py_ssize_t k = 0; k < J->K; k++) put_product(J, i, k, dot_generic(x, J->u + k * J->d, J->d));
        lag_products(J, ring, i);
    }
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define HAVE_AVX512 1
#define AVX512 __attribute__((target("avx512f")))

AVX512 static void widen_avx512(const void *row, int kind, Py_ssize_t d, float *out)
{
    for (Py_ssize_t j = 0; j < d; j += 16) {
        __m512 v;
        if (kind == F32) {
            v = _mm512_loadu_ps((const float *)row + j);
        } else {
            __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + j));
            if (kind == BF16)
                v = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
            else
                v = _mm512_cvtph_ps(h);
        }
        _mm512_storeu_ps(out + j, v);
    }
}

AVX512 static double dot_avx512(const float *a, const float *b, Py_ssize_t d)
{
    __m512 s = _mm512_setzero_ps();
    for (Py_ssize_t j = 0; j < d; j += 16) s = _mm512_fmadd_ps(_mm512_loadu_ps(a + j), _mm512_loadu_ps(b + j), s);
    return (double)_mm512_reduce_add_ps(s);
}

/* products of R widened frames (rows of x, R * d floats) with S steps: R * S accumulators */
#define TILE(R, S)                                                                                   \
    AVX512 static void tile_##R##x##S(const float *x, const float *u, Py_ssize_t d, double *out,     \
                                      Py_ssize_t ld)                                                 \
    {                                                                                                \
        __m512 a[R][S];                                                                              \
        for (int r = 0; r < R; r++)                                                                  \
            for (int s = 0; s < S; s++) a[r][s] = _mm512_setzero_ps();                               \
        for (Py_ssize_t j = 0; j < d; j += 16) {                                                     \
            __m512 w[S];                                                                             \
            for (int s = 0; s < S; s++) w[s] = _mm512_loadu_ps(u + s * d + j);                       \
            for (int r = 0; r < R; r++) {                                                            \
                __m512 v = _mm512_loadu_ps(x + r * d + j);                                           \
                for (int s = 0; s < S; s++) a[r][s] = _mm512_fmadd_ps(v, w[s], a[r][s]);             \
            }                                                                                        \
        }                                                                                            \
        for (int r = 0; r < R; r++)                                                                  \
            for (int s = 0; s < S; s++) out[r * ld + s] = (double)_mm512_reduce_add_ps(a[r][s]);     \
    }
TILE(6, 4)

enum { ROWS = 6, STEPS = 4 };

AVX512 static void run_avx512(const Job *J, float *ring, float *group)
{
    Py_ssize_t d = J->d, K = J->K, KS = K - K % STEPS;
    for (Py_ssize_t g = (J->m > J->lags ? J->m - J->lags : 0); g < J->m; g++)
        widen_avx512(frame_at(J, g), J->kind, d, ring_row(ring, J, g));
    for (Py_ssize_t i = 0; i < J->n; i += ROWS) {
        Py_ssize_t rows = J->n - i < ROWS ? J->n - i : ROWS;
        for (Py_ssize_t r = 0; r < rows; r++) {
            float *x = group + r * d;
            widen_avx512(frame_at(J, J->m + i + r), J->kind, d, x);
            Py_ssize_t g = J->m + i + r;
            memcpy(ring_row(ring, J, g), x, d * sizeof(float));
            for (Py_ssize_t l = 0; l <= J->lags && g - l >= 0; l++) put_lag(J, i + r, l, dot_avx512(ring_row(ring, J, g - l), x, d));
        }
        if (rows == ROWS)
            for (Py_ssize_t k = 0; k < KS; k += STEPS)
                tile_6x4(group, J->u + k * d, d, J->rows + (J->first + i) * (K + J->lags + 1) + k, K + J->lags + 1);
        for (Py_ssize_t r = 0; r < rows; r++)
            for (Py_ssize_t k = rows == ROWS ? KS : 0; k < K; k++)
                put_product(J, i + r, k, dot_avx512(group + r * d, J->u + k * d, d));
    }
}

#else
#define HAVE_AVX512 0
#endif

static int check(Py_buffer *b, Py_ssize_t size, const char *what)
{
    if (b->len != size) {
        PyErr_Format(PyExc_ValueError, "%s has %zd bytes, expected %zd", what, b->len, size);
        return 1;
    }
    return 0;
}

static PyObject *py_products(PyObject *self, PyObject *args)
{
    Py_buffer tail, block, u, rows;
    int kind, generic;
    Py_ssize_t d, K, lags, first;
    if (!PyArg_ParseTuple(args, "y*y*iny*nnw*np", &tail, &block, &kind, &d, &u, &K, &lags, &rows, &first, &generic))
        return NULL;
    PyObject *result = NULL;
    float *ring = NULL, *three = NULL;
    if (kind < 0 || kind > 2 || d < 1 || K < 1 || lags < 0) {
        PyErr_SetString(PyExc_ValueError, "bad kind, d, K or lags");
        goto done;
    }
    size_t row = (size_t)d * width_of[kind];
    if (tail.len % row || block.len % row) {
        PyErr_SetString(PyExc_ValueError, "frames are not whole rows of d elements");
        goto done;
    }
    Job J = {tail.buf, block.buf, tail.len / row, block.len / row, d, K, lags, kind, u.buf, rows.buf, first};
    Py_ssize_t line = (K + lags + 1) * 8;
    if (check(&u, K * d * 4, "u")) goto done;
    if (rows.len % line || first < 0 || first + J.n > rows.len / line) {
        PyErr_SetString(PyExc_ValueError, "rows is not (N, K + lags + 1) float64 with room for the block");
        goto done;
    }
    ring = malloc((size_t)(lags + 1) * d * sizeof(float));
    three = malloc((size_t)8 * d * sizeof(float));
    if (!ring || !three) { PyErr_NoMemory(); goto done; }
    Py_BEGIN_ALLOW_THREADS
#if HAVE_AVX512
    if (!generic && d % 16 == 0 && __builtin_cpu_supports("avx512f"))
        run_avx512(&J, ring, three);
    else
#endif
        run_generic(&J, ring);
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    free(ring);
    free(three);
    PyBuffer_Release(&tail);
    PyBuffer_Release(&block);
    PyBuffer_Release(&u);
    PyBuffer_Release(&rows);
    return result;
}

static PyObject *py_emit(PyObject *self, PyObject *args)
{
    Py_buffer rows, out;
    Py_ssize_t K, w, base, first, stop, n;
    double scale, bias;
    int linear;
    if (!PyArg_ParseTuple(args, "y*nnnnnnddpw*", &rows, &K, &w, &base, &first, &stop, &n, &scale, &bias, &linear, &out))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t width = K + w, N = rows.len / (Py_ssize_t)sizeof(double) / (width > 0 ? width : 1);
    Py_ssize_t count = stop - first;
    if (K < 1 || w < 1 || count < 0 || rows.len != N * width * (Py_ssize_t)sizeof(double) ||
        check(&out, K * count * 8, "out")) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "bad K, w, rows or frames");
        goto done;
    }
    for (Py_ssize_t t = first; t < stop; t++) { /* the window's rows must be held */
        Py_ssize_t lo = t - (w - 1) / 2, hi = t + w / 2 + 1;
        lo = (lo < 0 ? 0 : lo > n ? n : lo) - base;
        hi = (hi < 0 ? 0 : hi > n ? n : hi) - base;
        if (lo < 0 || hi > N || hi <= lo) {
            PyErr_SetString(PyExc_ValueError, "a window's rows are not held");
            goto done;
        }
    }
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
    const double *R = rows.buf;
    double *O = out.buf;
    double *dot = malloc(K * sizeof(double));
    if (!dot) ok = -1;
    for (Py_ssize_t t = first; ok == 1 && t < stop; t++) {
        Py_ssize_t lo = t - (w - 1) / 2, hi = t + w / 2 + 1;
        lo = (lo < 0 ? 0 : lo > n ? n : lo) - base;
        hi = (hi < 0 ? 0 : hi > n ? n : hi) - base;
        for (Py_ssize_t k = 0; k < K; k++) dot[k] = 0.0;
        double sq = 0.0, pairs = 0.0;
        for (Py_ssize_t r = lo; r < hi; r++) {
            const double *row = R + r * width;
            for (Py_ssize_t k = 0; k < K; k++) dot[k] += row[k];
            sq += row[K];
            for (Py_ssize_t l = 1; l < w && r + l < hi; l++) pairs += row[K + l];
        }
        sq += 2.0 * pairs;
        if (!(sq > 0.0)) { ok = 0; break; }
        double norm = sqrt(sq);
        Py_ssize_t j = t - first;
        for (Py_ssize_t k = 0; k < K; k++) {
            double cos = dot[k] / norm;
            O[k * count + j] = linear ? (1.0 + cos) / 2.0 : scale * cos + bias;
        }
    }
    free(dot);
    Py_END_ALLOW_THREADS
    if (ok < 0) { PyErr_NoMemory(); goto done; }
    result = PyBool_FromLong(ok);
done:
    PyBuffer_Release(&rows);
    PyBuffer_Release(&out);
    return result;
}

static PyObject *py_vector_path(PyObject *self, PyObject *noargs)
{
#if HAVE_AVX512
    if (__builtin_cpu_supports("avx512f")) return PyUnicode_FromString("avx512f");
#endif
    return PyUnicode_FromString("generic");
}

static PyMethodDef methods[] = {
    {"products", py_products, METH_VARARGS, "A block's products with the steps and its lag products."},
    {"emit", py_emit, METH_VARARGS, "Calibrated cosines of smoothed frames from their window's products."},
    {"vector_path", py_vector_path, METH_NOARGS, "Which loop `products` runs on this CPU (d % 16 == 0)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_affinity", NULL, -1, methods};

PyMODINIT_FUNC PyInit__affinity(void) { return PyModule_Create(&module); }
