/*
 * C kernel of actalign.align: the DTW recurrence of Eq. 11 over affinity matrices A (K, T),
 * row-major float64, maximising the path sum.
 *
 *   D[k][t] = A[k][t] + max(D[k-1][t-1], D[k][t-1], D[k-1][t]),   D[0][0] = A[0][0]
 *
 * Ties pick the predecessor in the order diagonal, left (k, t-1), up (k-1, t): the order the
 * authors' backtracking uses. Each cell performs the same floating-point operations, in the same
 * order, as the plain double loop, so results are bit-identical to it.
 *
 * No numpy headers: arrays arrive through the buffer protocol, and are read in place.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>

enum { DIAG = 0, LEFT = 1, UP = 2 };

/* One matrix: total D[K-1][T-1] and the length of the tie-broken optimal path.
   D and L are work rows of length T. If pred is not NULL it receives K*T move codes. */
static void dtw_one(const double *A, Py_ssize_t K, Py_ssize_t T, double *D, int64_t *L,
                    uint8_t *pred, double *total, int64_t *length)
{
    double acc = 0.0;
    for (Py_ssize_t t = 0; t < T; t++) {
        acc += A[t];
        D[t] = acc;
        L[t] = t + 1;
        if (pred) pred[t] = LEFT;
    }
    for (Py_ssize_t k = 1; k < K; k++) {
        const double *a = A + k * T;
        uint8_t *p = pred ? pred + k * T : NULL;
        double diag = D[0];
        int64_t ldiag = L[0];
        D[0] = D[0] + a[0];
        L[0] = L[0] + 1;
        if (p) p[0] = UP;
        for (Py_ssize_t t = 1; t < T; t++) {
            double up = D[t], left = D[t - 1], best;
            int64_t lup = L[t], lbest;
            uint8_t move;
            if (diag >= left && diag >= up) {
                best = diag; lbest = ldiag; move = DIAG;
            } else if (left >= up) {
                best = left; lbest = L[t - 1]; move = LEFT;
            } else {
                best = up; lbest = lup; move = UP;
            }
            diag = up;
            ldiag = lup;
            D[t] = best + a[t];
            L[t] = lbest + 1;
            if (p) p[t] = move;
        }
    }
    *total = D[T - 1];
    *length = L[T - 1];
}

static int check_size(Py_buffer *b, Py_ssize_t n, const char *name)
{
    if (b->len < n) {
        PyErr_Format(PyExc_ValueError, "buffer %s holds %zd bytes, %zd needed", name, b->len, n);
        return -1;
    }
    return 0;
}

static int all_finite(const double *a, Py_ssize_t n)
{
    int ok = 1;
    for (Py_ssize_t i = 0; i < n; i++) ok &= isfinite(a[i]) != 0;
    return ok;
}

/* scores(mats, totals_out, lengths_out) -> index of the first matrix holding NaN or inf, or -1.
   mats: a list of C-contiguous float64 2-D arrays (K_i, T_i); read in place, never copied. */
static PyObject *py_scores(PyObject *self, PyObject *args)
{
    PyObject *mats;
    Py_buffer tot, len;
    if (!PyArg_ParseTuple(args, "O!w*w*", &PyList_Type, &mats, &tot, &len)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = PyList_GET_SIZE(mats), bad = -1, tmax = 0;
    double *D = NULL;
    int64_t *L = NULL;
    Py_buffer view = {0};
    if (check_size(&tot, n * 8, "totals") || check_size(&len, n * 8, "lengths")) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyObject_GetBuffer(PyList_GET_ITEM(mats, i), &view,
                               PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_ND) < 0) goto done;
        int ok = view.ndim == 2 && view.format && view.format[0] == 'd' && view.format[1] == 0 &&
                 view.shape[0] > 0 && view.shape[1] > 0;
        Py_ssize_t K = ok ? view.shape[0] : 0, T = ok ? view.shape[1] : 0;
        if (!ok) {
            PyBuffer_Release(&view);
            PyErr_Format(PyExc_ValueError, "matrix %zd is not a non-empty float64 2-D array", i);
            goto done;
        }
        if (T > tmax) {
            free(D);
            free(L);
            D = malloc(T * sizeof(double));
            L = malloc(T * sizeof(int64_t));
            tmax = T;
            if (!D || !L) { PyBuffer_Release(&view); PyErr_NoMemory(); goto done; }
        }
        const double *A = view.buf;
        Py_BEGIN_ALLOW_THREADS
        if (bad < 0 && !all_finite(A, K * T)) bad = i;
        dtw_one(A, K, T, D, L, NULL, (double *)tot.buf + i, (int64_t *)len.buf + i);
        Py_END_ALLOW_THREADS
        PyBuffer_Release(&view);
    }
    result = PyLong_FromSsize_t(bad);
done:
    free(D);
    free(L);
    PyBuffer_Release(&tot);
    PyBuffer_Release(&len);
    return result;
}

/* path(A, K, T, path_out) -> (total, length); path_out gets `length` (k, t) int64 pairs. */
static PyObject *py_path(PyObject *self, PyObject *args)
{
    Py_buffer a, out;
    Py_ssize_t K, T;
    if (!PyArg_ParseTuple(args, "y*nnw*", &a, &K, &T, &out)) return NULL;
    PyObject *result = NULL;
    double *D = NULL, total = 0.0;
    int64_t *L = NULL, length = 0;
    uint8_t *pred = NULL;
    if (K < 1 || T < 1) { PyErr_SetString(PyExc_ValueError, "K and T must be >= 1"); goto done; }
    if (check_size(&a, K * T * 8, "A") || check_size(&out, (K + T - 1) * 16, "path")) goto done;
    D = malloc(T * sizeof(double));
    L = malloc(T * sizeof(int64_t));
    pred = malloc((size_t)K * (size_t)T);
    if (!D || !L || !pred) { PyErr_NoMemory(); goto done; }
    Py_BEGIN_ALLOW_THREADS
    dtw_one(a.buf, K, T, D, L, pred, &total, &length);
    int64_t *P = out.buf;
    Py_ssize_t k = K - 1, t = T - 1;
    for (int64_t i = length - 1; i >= 0; i--) {
        P[2 * i] = k;
        P[2 * i + 1] = t;
        if (i == 0) break;
        switch (pred[k * T + t]) {
        case DIAG: k--; t--; break;
        case LEFT: t--; break;
        default: k--; break;
        }
    }
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("dL", total, (long long)length);
done:
    free(D);
    free(L);
    free(pred);
    PyBuffer_Release(&a);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"scores", py_scores, METH_VARARGS, "Batched DTW totals and path lengths."},
    {"path", py_path, METH_VARARGS, "DTW total, path length and path of one matrix."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_dtw", NULL, -1, methods};

PyMODINIT_FUNC PyInit__dtw(void) { return PyModule_Create(&module); }
