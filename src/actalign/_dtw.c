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
 * Subsequence mode (`subseq`, `subseq_path`) maximises the sum of excess affinities
 * E[k][t] = A[k][t] - tau[k] over paths from step 0 to step K-1 that may start and end at any
 * frame: row 0 may start afresh (D = E + max(D[0][t-1], 0), ties continue), the other rows are
 * Eq. 11 on E. Along the chosen predecessors each cell also carries the path's length, its sum
 * of raw affinities and its start frame. A carry (the last column of a previous chunk) lets a
 * long video be aligned chunk by chunk with results identical to one pass.
 *
 * No numpy headers: arrays arrive through the buffer protocol, and are read in place.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { DIAG = 0, LEFT = 1, UP = 2, START = 3 };

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


/* Work rows of subsequence mode: D (excess sums), L (path lengths), R (raw sums), S (starts). */
typedef struct {
    double *D, *R;
    int64_t *L, *S;
} SubRows;

/* Carry: the last column of the previous chunk (K values each), or has = 0 for none. */
typedef struct {
    int has;
    const double *D, *R;
    const int64_t *L, *S;
} Carry;

/* One matrix in subsequence mode over columns with absolute frame numbers t0 + t.
   On return W holds the last row; out (if not NULL, K values each) the last column. */
static void sub_one(const double *A, Py_ssize_t K, Py_ssize_t T, const double *tau, int64_t t0,
                    Carry carry, SubRows W, uint8_t *pred, double *oD, double *oR, int64_t *oL,
                    int64_t *oS)
{
    double *D = W.D, *R = W.R;
    int64_t *L = W.L, *S = W.S;
    /* row 0: start afresh or continue from the left (ties continue) */
    for (Py_ssize_t t = 0; t < T; t++) {
        double e = A[t] - tau[0];
        int have_left = t > 0 || carry.has;
        double left = t > 0 ? D[t - 1] : (carry.has ? carry.D[0] : 0.0);
        if (have_left && left >= 0.0) {
            D[t] = left + e;
            L[t] = (t > 0 ? L[t - 1] : carry.L[0]) + 1;
            R[t] = (t > 0 ? R[t - 1] : carry.R[0]) + A[t];
            S[t] = t > 0 ? S[t - 1] : carry.S[0];
            if (pred) pred[t] = LEFT;
        } else {
            D[t] = 0.0 + e;
            L[t] = 1;
            R[t] = A[t];
            S[t] = t0 + t;
            if (pred) pred[t] = START;
        }
    }
    if (oD) { oD[0] = D[T - 1]; oR[0] = R[T - 1]; oL[0] = L[T - 1]; oS[0] = S[T - 1]; }
    for (Py_ssize_t k = 1; k < K; k++) {
        const double *a = A + k * T;
        uint8_t *p = pred ? pred + k * T : NULL;
        double tk = tau[k];
        /* t = 0: up, or (with a carry) the diagonal and left from the previous chunk */
        double diag, ldiag_R; int64_t ldiag_L, ldiag_S;
        double up = D[0], upR = R[0];
        int64_t upL = L[0], upS = S[0];
        double e = a[0] - tk;
        if (carry.has) {
            double cdiag = carry.D[k - 1], cleft = carry.D[k];
            if (cdiag >= cleft && cdiag >= up) {
                D[0] = cdiag + e; L[0] = carry.L[k - 1] + 1; R[0] = carry.R[k - 1] + a[0]; S[0] = carry.S[k - 1];
                if (p) p[0] = DIAG;
            } else if (cleft >= up) {
                D[0] = cleft + e; L[0] = carry.L[k] + 1; R[0] = carry.R[k] + a[0]; S[0] = carry.S[k];
                if (p) p[0] = LEFT;
            } else {
                D[0] = up + e; L[0] = upL + 1; R[0] = upR + a[0]; S[0] = upS;
                if (p) p[0] = UP;
            }
        } else {
            D[0] = up + e; L[0] = upL + 1; R[0] = upR + a[0]; S[0] = upS;
            if (p) p[0] = UP;
        }
        diag = up; ldiag_L = upL; ldiag_R = upR; ldiag_S = upS;
        for (Py_ssize_t t = 1; t < T; t++) {
            double u = D[t], left = D[t - 1], best, rb;
            int64_t lu = L[t], su = S[t], lb, sb;
            double ru = R[t];
            uint8_t move;
            if (diag >= left && diag >= u) {
                best = diag; lb = ldiag_L; rb = ldiag_R; sb = ldiag_S; move = DIAG;
            } else if (left >= u) {
                best = left; lb = L[t - 1]; rb = R[t - 1]; sb = S[t - 1]; move = LEFT;
            } else {
                best = u; lb = lu; rb = ru; sb = su; move = UP;
            }
            diag = u; ldiag_L = lu; ldiag_R = ru; ldiag_S = su;
            D[t] = best + (a[t] - tk);
            L[t] = lb + 1;
            R[t] = rb + a[t];
            S[t] = sb;
            if (p) p[t] = move;
        }
        if (oD) { oD[k] = D[T - 1]; oR[k] = R[T - 1]; oL[k] = L[T - 1]; oS[k] = S[T - 1]; }
    }
}

static int alloc_rows(SubRows *W, Py_ssize_t T)
{
    W->D = calloc(T, sizeof(double));
    W->R = calloc(T, sizeof(double));
    W->L = calloc(T, sizeof(int64_t));
    W->S = calloc(T, sizeof(int64_t));
    return W->D && W->R && W->L && W->S;
}

static void free_rows(SubRows *W)
{
    free(W->D); free(W->R); free(W->L); free(W->S);
    W->D = W->R = NULL; W->L = W->S = NULL;
}

/* The best end frame of the last row (first maximum). */
static Py_ssize_t best_end(const double *D, Py_ssize_t T)
{
    Py_ssize_t best = 0;
    for (Py_ssize_t t = 1; t < T; t++)
        if (D[t] > D[best]) best = t;
    return best;
}

/* subseq_scores(mats, taus, out) -> index of the first matrix holding NaN or inf, or -1.
   out: (N, 5) float64 rows of (gain, raw sum, length, start frame, end frame) of each matrix's
   best subsequence path. taus: a list of float64 arrays (K_i,). */
static PyObject *py_subseq_scores(PyObject *self, PyObject *args)
{
    PyObject *mats, *taus;
    Py_buffer out;
    if (!PyArg_ParseTuple(args, "O!O!w*", &PyList_Type, &mats, &PyList_Type, &taus, &out)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = PyList_GET_SIZE(mats), bad = -1, tmax = 0;
    SubRows W = {0};
    Py_buffer view = {0}, tv = {0};
    if (PyList_GET_SIZE(taus) != n) { PyErr_SetString(PyExc_ValueError, "one tau per matrix"); goto done; }
    if (check_size(&out, n * 5 * 8, "out")) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyObject_GetBuffer(PyList_GET_ITEM(mats, i), &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_ND) < 0)
            goto done;
        if (PyObject_GetBuffer(PyList_GET_ITEM(taus, i), &tv, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_ND) < 0) {
            PyBuffer_Release(&view);
            goto done;
        }
        int ok = view.ndim == 2 && view.format && strcmp(view.format, "d") == 0 && view.shape[0] > 0 &&
                 view.shape[1] > 0 && tv.ndim == 1 && tv.format && strcmp(tv.format, "d") == 0 &&
                 tv.shape[0] == view.shape[0];
        Py_ssize_t K = ok ? view.shape[0] : 0, T = ok ? view.shape[1] : 0;
        if (!ok) {
            PyBuffer_Release(&view); PyBuffer_Release(&tv);
            PyErr_Format(PyExc_ValueError, "matrix %zd or its tau is malformed", i);
            goto done;
        }
        if (T > tmax) {
            free_rows(&W);
            tmax = T;
            if (!alloc_rows(&W, T)) { PyBuffer_Release(&view); PyBuffer_Release(&tv); PyErr_NoMemory(); goto done; }
        }
        const double *A = view.buf, *tau = tv.buf;
        double *o = (double *)out.buf + 5 * i;
        Carry none = {0};
        Py_BEGIN_ALLOW_THREADS
        if (bad < 0 && (!all_finite(A, K * T) || !all_finite(tau, K))) bad = i;
        sub_one(A, K, T, tau, 0, none, W, NULL, NULL, NULL, NULL, NULL);
        Py_ssize_t e = best_end(W.D, T);
        o[0] = W.D[e]; o[1] = W.R[e]; o[2] = (double)W.L[e]; o[3] = (double)W.S[e]; o[4] = (double)e;
        Py_END_ALLOW_THREADS
        PyBuffer_Release(&view);
        PyBuffer_Release(&tv);
    }
    result = PyLong_FromSsize_t(bad);
done:
    free_rows(&W);
    PyBuffer_Release(&out);
    return result;
}

/* subseq_path(A, K, T, tau, path_out) -> (gain, raw sum, length, start, end); path_out gets
   `length` (k, t) int64 pairs of the best subsequence path. */
static PyObject *py_subseq_path(PyObject *self, PyObject *args)
{
    Py_buffer a, tv, out;
    Py_ssize_t K, T;
    if (!PyArg_ParseTuple(args, "y*nny*w*", &a, &K, &T, &tv, &out)) return NULL;
    PyObject *result = NULL;
    SubRows W = {0};
    uint8_t *pred = NULL;
    if (K < 1 || T < 1) { PyErr_SetString(PyExc_ValueError, "K and T must be >= 1"); goto done; }
    if (check_size(&a, K * T * 8, "A") || check_size(&tv, K * 8, "tau") || check_size(&out, (K + T - 1) * 16, "path"))
        goto done;
    pred = malloc((size_t)K * (size_t)T);
    if (!alloc_rows(&W, T) || !pred) { PyErr_NoMemory(); goto done; }
    double gain, raw;
    int64_t length, start, end;
    Py_BEGIN_ALLOW_THREADS
    Carry none = {0};
    sub_one(a.buf, K, T, tv.buf, 0, none, W, pred, NULL, NULL, NULL, NULL);
    Py_ssize_t e = best_end(W.D, T);
    gain = W.D[e]; raw = W.R[e]; length = W.L[e]; start = W.S[e]; end = e;
    int64_t *P = out.buf;
    Py_ssize_t k = K - 1, t = e;
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
    result = Py_BuildValue("ddLLL", gain, raw, (long long)length, (long long)start, (long long)end);
done:
    free_rows(&W);
    free(pred);
    PyBuffer_Release(&a);
    PyBuffer_Release(&tv);
    PyBuffer_Release(&out);
    return result;
}

/* subseq_chunk(A, K, T, tau, t0, carry_in or None, carry_out, last_out)
   One chunk of a long video: A (K, T) are frames t0 .. t0+T-1. carry_in / carry_out: (4, K)
   float64 arrays of the previous / this chunk's last column (D, R, L, S); last_out: (4, T)
   float64, the last row's D, R, L, S for every frame of the chunk (the best path ending there). */
static PyObject *py_subseq_chunk(PyObject *self, PyObject *args)
{
    Py_buffer a, tv, cout, lout, cin = {0};
    Py_ssize_t K, T;
    long long t0;
    PyObject *carry_obj;
    if (!PyArg_ParseTuple(args, "y*nny*LOw*w*", &a, &K, &T, &tv, &t0, &carry_obj, &cout, &lout)) return NULL;
    PyObject *result = NULL;
    SubRows W = {0};
    double *cD = NULL, *cR = NULL;
    int64_t *cL = NULL, *cS = NULL;
    double *oD = NULL, *oR = NULL;
    int64_t *oL = NULL, *oS = NULL;
    int have_carry = carry_obj != Py_None;
    if (have_carry && PyObject_GetBuffer(carry_obj, &cin, PyBUF_SIMPLE) < 0) goto done;
    if (K < 1 || T < 1) { PyErr_SetString(PyExc_ValueError, "K and T must be >= 1"); goto done; }
    if (check_size(&a, K * T * 8, "A") || check_size(&tv, K * 8, "tau") || check_size(&cout, 4 * K * 8, "carry_out") ||
        check_size(&lout, 4 * T * 8, "last_out") || (have_carry && check_size(&cin, 4 * K * 8, "carry_in")))
        goto done;
    if (!alloc_rows(&W, T)) { PyErr_NoMemory(); goto done; }
    cD = malloc(K * sizeof(double)); cR = malloc(K * sizeof(double));
    cL = malloc(K * sizeof(int64_t)); cS = malloc(K * sizeof(int64_t));
    oD = malloc(K * sizeof(double)); oR = malloc(K * sizeof(double));
    oL = malloc(K * sizeof(int64_t)); oS = malloc(K * sizeof(int64_t));
    if (!cD || !cR || !cL || !cS || !oD || !oR || !oL || !oS) { PyErr_NoMemory(); goto done; }
    Py_BEGIN_ALLOW_THREADS
    Carry c = {0};
    if (have_carry) {
        const double *ci = cin.buf;
        for (Py_ssize_t k = 0; k < K; k++) {
            cD[k] = ci[k]; cR[k] = ci[K + k]; cL[k] = (int64_t)ci[2 * K + k]; cS[k] = (int64_t)ci[3 * K + k];
        }
        c.has = 1; c.D = cD; c.R = cR; c.L = cL; c.S = cS;
    }
    sub_one(a.buf, K, T, tv.buf, (int64_t)t0, c, W, NULL, oD, oR, oL, oS);
    double *co = cout.buf, *lo = lout.buf;
    for (Py_ssize_t k = 0; k < K; k++) {
        co[k] = oD[k]; co[K + k] = oR[k]; co[2 * K + k] = (double)oL[k]; co[3 * K + k] = (double)oS[k];
    }
    for (Py_ssize_t t = 0; t < T; t++) {
        lo[t] = W.D[t]; lo[T + t] = W.R[t]; lo[2 * T + t] = (double)W.L[t]; lo[3 * T + t] = (double)W.S[t];
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    free_rows(&W);
    free(cD); free(cR); free(cL); free(cS); free(oD); free(oR); free(oL); free(oS);
    PyBuffer_Release(&a);
    PyBuffer_Release(&tv);
    PyBuffer_Release(&cout);
    PyBuffer_Release(&lout);
    if (have_carry) PyBuffer_Release(&cin);
    return result;
}

static PyMethodDef methods[] = {
    {"scores", py_scores, METH_VARARGS, "Batched DTW totals and path lengths."},
    {"path", py_path, METH_VARARGS, "DTW total, path length and path of one matrix."},
    {"subseq_scores", py_subseq_scores, METH_VARARGS, "Batched best subsequence paths (summaries)."},
    {"subseq_path", py_subseq_path, METH_VARARGS, "Best subsequence path of one matrix."},
    {"subseq_chunk", py_subseq_chunk, METH_VARARGS, "One chunk of a streamed subsequence alignment."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_dtw", NULL, -1, methods};

PyMODINIT_FUNC PyInit__dtw(void) { return PyModule_Create(&module); }
