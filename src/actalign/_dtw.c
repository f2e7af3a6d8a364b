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

/* Write the path of `length` cells ending at (k, t) into P (int64 pairs), following moves. */
static void write_path(const uint8_t *pred, Py_ssize_t T, Py_ssize_t k, Py_ssize_t t, int64_t length, int64_t *P)
{
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
    write_path(pred, T, K - 1, T - 1, length, out.buf);
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
   On return W holds the last row; out (if not NULL, K values each) the last column.
   starts = 0 skips the start frames (W.S untouched): the scores need only D, L and R. The
   values of the current row's previous cell travel in registers. */
static inline void sub_one_impl(const double *A, Py_ssize_t K, Py_ssize_t T, const double *tau, int64_t t0,
                                Carry carry, SubRows W, uint8_t *pred, double *oD, double *oR, int64_t *oL,
                                int64_t *oS, const int starts)
{
    double *D = W.D, *R = W.R;
    int64_t *L = W.L, *S = W.S;
    /* row 0: start afresh or continue from the left (ties continue) */
    {
        const double t0v = tau[0];
        double lD = carry.has ? carry.D[0] : -1.0, lR = carry.has ? carry.R[0] : 0.0;
        int64_t lL = carry.has ? carry.L[0] : 0, lS = carry.has ? carry.S[0] : 0;
        int have = carry.has;
        for (Py_ssize_t t = 0; t < T; t++) {
            double e = A[t] - t0v;
            if (have && lD >= 0.0) {
                lD = lD + e; lL = lL + 1; lR = lR + A[t];
                if (pred) pred[t] = LEFT;
            } else {
                lD = 0.0 + e; lL = 1; lR = A[t];
                if (starts) lS = t0 + t;
                if (pred) pred[t] = START;
            }
            have = 1;
            D[t] = lD; L[t] = lL; R[t] = lR;
            if (starts) S[t] = lS;
        }
        if (oD) { oD[0] = lD; oR[0] = lR; oL[0] = lL; oS[0] = starts ? lS : 0; }
    }
    for (Py_ssize_t k = 1; k < K; k++) {
        const double *a = A + k * T;
        uint8_t *p = pred ? pred + k * T : NULL;
        const double tk = tau[k];
        /* t = 0: up, or (with a carry) the diagonal and left from the previous chunk */
        double dD = D[0], dR = R[0];
        int64_t dL = L[0], dS = starts ? S[0] : 0;
        double lD, lR;
        int64_t lL, lS;
        double e = a[0] - tk;
        if (carry.has && carry.D[k - 1] >= carry.D[k] && carry.D[k - 1] >= dD) {
            lD = carry.D[k - 1] + e; lL = carry.L[k - 1] + 1; lR = carry.R[k - 1] + a[0]; lS = carry.S[k - 1];
            if (p) p[0] = DIAG;
        } else if (carry.has && carry.D[k] >= dD) {
            lD = carry.D[k] + e; lL = carry.L[k] + 1; lR = carry.R[k] + a[0]; lS = carry.S[k];
            if (p) p[0] = LEFT;
        } else {
            lD = dD + e; lL = dL + 1; lR = dR + a[0]; lS = dS;
            if (p) p[0] = UP;
        }
        D[0] = lD; L[0] = lL; R[0] = lR;
        if (starts) S[0] = lS;
        for (Py_ssize_t t = 1; t < T; t++) {
            double uD = D[t], uR = R[t];
            int64_t uL = L[t], uS = starts ? S[t] : 0;
            double best, rb;
            int64_t lb, sb;
            uint8_t move;
            if (dD >= lD && dD >= uD) {
                best = dD; lb = dL; rb = dR; sb = dS; move = DIAG;
            } else if (lD >= uD) {
                best = lD; lb = lL; rb = lR; sb = lS; move = LEFT;
            } else {
                best = uD; lb = uL; rb = uR; sb = uS; move = UP;
            }
            dD = uD; dL = uL; dR = uR; dS = uS;
            lD = best + (a[t] - tk); lL = lb + 1; lR = rb + a[t]; lS = sb;
            D[t] = lD; L[t] = lL; R[t] = lR;
            if (starts) S[t] = lS;
            if (p) p[t] = move;
        }
        if (oD) { oD[k] = lD; oR[k] = lR; oL[k] = lL; oS[k] = starts ? lS : 0; }
    }
}

static void sub_one(const double *A, Py_ssize_t K, Py_ssize_t T, const double *tau, int64_t t0, Carry carry,
                    SubRows W, uint8_t *pred, double *oD, double *oR, int64_t *oL, int64_t *oS)
{
    sub_one_impl(A, K, T, tau, t0, carry, W, pred, oD, oR, oL, oS, 1);
}

/* The best end frame of the last row (first maximum). */
static Py_ssize_t best_end(const double *D, Py_ssize_t T)
{
    Py_ssize_t best = 0;
    for (Py_ssize_t t = 1; t < T; t++)
        if (D[t] > D[best]) best = t;
    return best;
}

/* The scores' lean pass: only D (one row) and the moves, like the global path kernel; the
   best path's raw sum, length and start are then read off by backtracking (O(K + T)). Same
   float operations, values and ties as sub_one_impl, so the same path.

   Each cell's best non-left predecessor (diagonal or up) comes from the row above, so the only
   loop-carried work is D[t] = max(D[t-1], above) + e[t]; moves are computed arithmetically
   (excess affinities make the winning move unpredictable: branches would mispredict). */
static void sub_scores_one(const double *A, Py_ssize_t K, Py_ssize_t T, const double *tau, double *D,
                           uint8_t *pred, double *gain, double *raw, int64_t *length, int64_t *start,
                           int64_t *end)
{
    double lD = -1.0;  /* no cell before frame 0: start there */
    for (Py_ssize_t t = 0; t < T; t++) {
        int cont = lD >= 0.0;
        lD = (cont ? lD : 0.0) + (A[t] - tau[0]);
        pred[t] = cont ? LEFT : START;
        D[t] = lD;
    }
    for (Py_ssize_t k = 1; k < K; k++) {
        const double *a = A + k * T;
        uint8_t *p = pred + k * T;
        const double tk = tau[k];
        double dD = D[0];  /* the row above, one frame back (the diagonal) */
        lD = dD + (a[0] - tk);
        D[0] = lD;
        p[0] = UP;
        for (Py_ssize_t t = 1; t < T; t++) {
            /* the best non-left predecessor comes from the row above only: off the dependency
               chain, which is one max and one add per cell */
            double uD = D[t];
            int fd = dD >= uD;
            double ab = fd ? dD : uD;
            /* ties: a diagonal beats the left, the left beats up (arithmetic, not branches) */
            int x = ab >= lD, y = lD >= ab;
            p[t] = (uint8_t)(fd * (LEFT - x) + (1 - fd) * (UP - y));
            lD = (lD > ab ? lD : ab) + (a[t] - tk);
            D[t] = lD;
            dD = uD;
        }
    }
    Py_ssize_t e = best_end(D, T), k = K - 1, t = e;
    double r = 0.0;
    int64_t n = 0;
    for (;;) {
        r += A[k * T + t];
        n++;
        uint8_t m = pred[k * T + t];
        if (m == START) break;
        if (m == DIAG) { k--; t--; }
        else if (m == LEFT) t--;
        else k--;
    }
    *gain = D[e]; *raw = r; *length = n; *start = t; *end = e;
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

/* Sum of a[0..n) with four accumulators (no single chain of dependent adds). */
static double sum4(const double *a, Py_ssize_t n)
{
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    Py_ssize_t t = 0;
    for (; t + 4 <= n; t += 4) { s0 += a[t]; s1 += a[t + 1]; s2 += a[t + 2]; s3 += a[t + 3]; }
    for (; t < n; t++) s0 += a[t];
    return (s0 + s1) + (s2 + s3);
}

/* Sum of (a[t] - m)^2, four accumulators. */
static double sqdev4(const double *a, Py_ssize_t n, double m)
{
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    Py_ssize_t t = 0;
    for (; t + 4 <= n; t += 4) {
        double d0 = a[t] - m, d1 = a[t + 1] - m, d2 = a[t + 2] - m, d3 = a[t + 3] - m;
        s0 += d0 * d0; s1 += d1 * d1; s2 += d2 * d2; s3 += d3 * d3;
    }
    for (; t < n; t++) { double d = a[t] - m; s0 += d * d; }
    return (s0 + s1) + (s2 + s3);
}

/* Row thresholds tau[k] = mean + z * std (population, two passes) of row k; returns the
   matrix mean. */
static double row_thresholds(const double *A, Py_ssize_t K, Py_ssize_t T, double z, double *tau)
{
    double total = 0.0;
    for (Py_ssize_t k = 0; k < K; k++) {
        const double *a = A + k * T;
        double s = sum4(a, T), mean = s / (double)T;
        tau[k] = mean + z * sqrt(sqdev4(a, T, mean) / (double)T);
        total += s;
    }
    return total / ((double)K * (double)T);
}

/* subseq_scores(mats, z, taus or None, prior, out) -> index of the first matrix holding NaN or
   inf, or -1. out: (N, 7) float64 rows of (gain, raw sum, length, start frame, end frame, matrix
   mean, score) of each matrix's best subsequence path; score = (raw + prior * mean) /
   (length + prior). Thresholds: taus[i] (K_i,) when given, else each row's
   mean + z * std, computed here. */
static PyObject *py_subseq_scores(PyObject *self, PyObject *args)
{
    PyObject *mats, *taus;
    double z, prior;
    Py_buffer out;
    if (!PyArg_ParseTuple(args, "O!dOdw*", &PyList_Type, &mats, &z, &taus, &prior, &out)) return NULL;
    PyObject *result = NULL;
    int given = taus != Py_None;
    Py_ssize_t n = PyList_GET_SIZE(mats), bad = -1, tmax = 0, kmax = 0, cells = 0;
    SubRows W = {0};
    double *own_tau = NULL;
    uint8_t *pred = NULL;
    Py_buffer view = {0}, tv = {0};
    if (given && (!PyList_Check(taus) || PyList_GET_SIZE(taus) != n)) {
        PyErr_SetString(PyExc_ValueError, "taus must be None or a list with one array per matrix");
        goto done;
    }
    if (check_size(&out, n * 7 * 8, "out")) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyObject_GetBuffer(PyList_GET_ITEM(mats, i), &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_ND) < 0)
            goto done;
        int ok = view.ndim == 2 && view.format && strcmp(view.format, "d") == 0 && view.shape[0] > 0 &&
                 view.shape[1] > 0;
        if (ok && given) {
            if (PyObject_GetBuffer(PyList_GET_ITEM(taus, i), &tv, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_ND) < 0) {
                PyBuffer_Release(&view);
                goto done;
            }
            ok = tv.ndim == 1 && tv.format && strcmp(tv.format, "d") == 0 && tv.shape[0] == view.shape[0];
        }
        Py_ssize_t K = ok ? view.shape[0] : 0, T = ok ? view.shape[1] : 0;
        if (!ok) {
            PyBuffer_Release(&view);
            if (given) PyBuffer_Release(&tv);
            PyErr_Format(PyExc_ValueError, "matrix %zd or its tau is malformed", i);
            goto done;
        }
        if (T > tmax) {
            free_rows(&W);
            tmax = T;
            if (!alloc_rows(&W, T)) { PyBuffer_Release(&view); if (given) PyBuffer_Release(&tv); PyErr_NoMemory(); goto done; }
        }
        if (K > kmax) {
            free(own_tau);
            kmax = K;
            own_tau = malloc(K * sizeof(double));
            if (!own_tau) { PyBuffer_Release(&view); if (given) PyBuffer_Release(&tv); PyErr_NoMemory(); goto done; }
        }
        if (K * T > cells) {
            free(pred);
            cells = K * T;
            pred = malloc((size_t)cells);
            if (!pred) { PyBuffer_Release(&view); if (given) PyBuffer_Release(&tv); PyErr_NoMemory(); goto done; }
        }
        const double *A = view.buf;
        double *o = (double *)out.buf + 7 * i;
        Py_BEGIN_ALLOW_THREADS
        if (bad < 0 && !all_finite(A, K * T)) bad = i;
        double mean = row_thresholds(A, K, T, z, own_tau);
        const double *tau = given ? (const double *)tv.buf : own_tau;
        double g, r;
        int64_t n_cells, first, last;
        sub_scores_one(A, K, T, tau, W.D, pred, &g, &r, &n_cells, &first, &last);
        o[0] = g; o[1] = r; o[2] = (double)n_cells; o[3] = (double)first; o[4] = (double)last; o[5] = mean;
        o[6] = (r + prior * mean) / ((double)n_cells + prior);
        Py_END_ALLOW_THREADS
        PyBuffer_Release(&view);
        if (given) PyBuffer_Release(&tv);
    }
    result = PyLong_FromSsize_t(bad);
done:
    free_rows(&W);
    free(own_tau);
    free(pred);
    PyBuffer_Release(&out);
    return result;
}

/* subseq_path(A, K, T, tau, path_out) -> (gain, raw sum, length, start, end); path_out gets
   `length` (k, t) int64 pairs of the best subsequence path. tau: (K,) float64 thresholds. */
static PyObject *py_subseq_path(PyObject *self, PyObject *args)
{
    Py_buffer a, tv, out;
    Py_ssize_t K, T;
    if (!PyArg_ParseTuple(args, "y*nny*w*", &a, &K, &T, &tv, &out)) return NULL;
    PyObject *result = NULL;
    SubRows W = {0};
    uint8_t *pred = NULL;
    if (K < 1 || T < 1) { PyErr_SetString(PyExc_ValueError, "K and T must be >= 1"); goto done; }
    if (check_size(&a, K * T * 8, "A") || check_size(&tv, K * 8, "tau") ||
        check_size(&out, (K + T - 1) * 16, "path"))
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
    write_path(pred, T, K - 1, e, length, out.buf);
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

/* thresholds(A, K, T, z, tau_out) -> the matrix mean; tau_out (K,) gets mean + z * std of each
   row (the same thresholds subseq_scores computes). */
static PyObject *py_thresholds(PyObject *self, PyObject *args)
{
    Py_buffer a, tv;
    Py_ssize_t K, T;
    double z, mean = 0.0;
    if (!PyArg_ParseTuple(args, "y*nndw*", &a, &K, &T, &z, &tv)) return NULL;
    PyObject *result = NULL;
    if (K < 1 || T < 1) { PyErr_SetString(PyExc_ValueError, "K and T must be >= 1"); goto done; }
    if (check_size(&a, K * T * 8, "A") || check_size(&tv, K * 8, "tau")) goto done;
    Py_BEGIN_ALLOW_THREADS
    mean = row_thresholds(a.buf, K, T, z, tv.buf);
    Py_END_ALLOW_THREADS
    result = PyFloat_FromDouble(mean);
done:
    PyBuffer_Release(&a);
    PyBuffer_Release(&tv);
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
    {"thresholds", py_thresholds, METH_VARARGS, "Row thresholds mean + z * std and the matrix mean."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_dtw", NULL, -1, methods};

PyMODINIT_FUNC PyInit__dtw(void) { return PyModule_Create(&module); }
