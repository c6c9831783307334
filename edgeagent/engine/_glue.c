/* The work between the kernels of one decoded token, compiled: edgeagent.engine._glue.
 *
 * A decoded token runs ~6 kernel calls per layer; between them the engine norms,
 * mixes the AltUp streams, rotates, attends over the KV cache and adds residuals.
 * As numpy that is ~60 calls per layer on vectors of 2048 floats, each costing
 * more in dispatch than in arithmetic (E2B: 9 ms a token against 55 ms of kernels).
 * Here each stretch between two kernel calls is one call, with the same arithmetic
 * as edgeagent/engine/layers.py, which stays the definition (and runs prefill).
 *
 * Plain C99, built with the platform's baseline instruction set (NEON on aarch64,
 * SSE2 on x86-64): no code path here needs more than a Raspberry Pi has. Sums run
 * in eight float lanes, which compilers vectorise without -ffast-math, then add up
 * in double; the attention's products use four-float vectors.
 *
 * Arrays arrive through the buffer protocol as float32. Vectors must be
 * C-contiguous; weight matrices and KV-cache views may be strided (their last axis
 * contiguous). A wrong dtype, shape or layout raises ValueError naming the argument.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <string.h>

#define LANES 8
#define MAX_STREAMS 16

/* Four-float vectors (GCC/Clang vector extensions: SSE2 on x86-64, NEON on aarch64), for
 * the attention loops, which compilers do not vectorise on their own when sizes are known
 * only at run time; unaligned loads and stores. */
typedef float v4 __attribute__((vector_size(16)));
typedef float v4u __attribute__((vector_size(16), aligned(4)));
#define LOAD4(p) (*(const v4u *)(p))
#define STORE4(p, x) (*(v4u *)(p) = (x))
#define PREFETCH(p) __builtin_prefetch(p)
#define MAX_ARGS 16

/* -- arguments ------------------------------------------------------------------------ */

typedef struct {
    Py_buffer views[MAX_ARGS];
    int count;
} Held;

static void release_all(Held *held) {
    for (int i = 0; i < held->count; i++) PyBuffer_Release(&held->views[i]);
    held->count = 0;
}

/* How an array's elements may lie in memory. */
enum Layout {
    C_ORDER,  /* one contiguous block: vectors, only the element count is checked */
    ROWS,     /* strided, the last axis contiguous: KV-cache views, per-head weights */
    STRIDED,  /* any float32 strides: small weight matrices kept in Fortran order */
};

/* A float32 buffer of `ndim` dimensions; shape[k] < 0 accepts any size (written back). */
static Py_buffer *take(Held *held, PyObject *obj, const char *name, int ndim, Py_ssize_t *shape,
                       int writable, enum Layout layout) {
    if (held->count >= MAX_ARGS) {
        PyErr_SetString(PyExc_RuntimeError, "_glue: too many arrays in one call");
        return NULL;
    }
    Py_buffer *view = &held->views[held->count];
    int flags = PyBUF_FORMAT | (layout == C_ORDER ? PyBUF_C_CONTIGUOUS : PyBUF_STRIDES);
    if (writable) flags |= PyBUF_WRITABLE;
    if (PyObject_GetBuffer(obj, view, flags) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s must be a %sfloat32 array%s", name,
                     writable ? "writable " : "", layout == C_ORDER ? " in C order" : "");
        return NULL;
    }
    held->count++;
    if (view->itemsize != 4 || view->format == NULL || strcmp(view->format, "f") != 0) {
        PyErr_Format(PyExc_ValueError, "%s must be float32, got format %s", name,
                     view->format ? view->format : "?");
        return NULL;
    }
    if (layout == C_ORDER) { /* only the element count matters (any, when a size is < 0) */
        Py_ssize_t want = 1;
        for (int k = 0; k < ndim; k++) want *= shape[k];
        if (want >= 0 && view->len / 4 != want) {
            PyErr_Format(PyExc_ValueError, "%s must hold %zd floats, got %zd", name, want,
                         view->len / 4);
            return NULL;
        }
        return view;
    }
    if (view->ndim != ndim) {
        PyErr_Format(PyExc_ValueError, "%s must have %d dimensions, got %d", name, ndim,
                     view->ndim);
        return NULL;
    }
    for (int k = 0; k < ndim; k++) {
        if (shape[k] >= 0 && view->shape[k] != shape[k]) {
            PyErr_Format(PyExc_ValueError, "%s: dimension %d must be %zd, got %zd", name, k,
                         shape[k], view->shape[k]);
            return NULL;
        }
        shape[k] = view->shape[k];
        if (view->strides[k] % 4 != 0) {
            PyErr_Format(PyExc_ValueError, "%s is not aligned to float32", name);
            return NULL;
        }
    }
    if (layout == ROWS && view->strides[ndim - 1] != 4) {
        PyErr_Format(PyExc_ValueError, "%s: its last axis must be contiguous", name);
        return NULL;
    }
    return view;
}

static float *vec(Held *held, PyObject *obj, const char *name, Py_ssize_t n, int writable) {
    Py_buffer *v = take(held, obj, name, 1, &n, writable, C_ORDER);
    return v ? (float *)v->buf : NULL;
}

/* A strided float32 matrix [rows, cols]: element (r, c) at base[r*rs + c*cs]. */
typedef struct {
    const float *base;
    Py_ssize_t rs, cs;
} Mat;

static int mat(Held *held, PyObject *obj, const char *name, Py_ssize_t rows, Py_ssize_t cols,
               Mat *out) {
    Py_ssize_t shape[2] = {rows, cols};
    Py_buffer *view = take(held, obj, name, 2, shape, 0, STRIDED);
    if (!view) return -1;
    out->base = (const float *)view->buf;
    out->rs = view->strides[0] / 4;
    out->cs = view->strides[1] / 4;
    return 0;
}

/* The AltUp streams [n, 1, H], C-ordered (written in place): H, or -1 with an exception. */
static Py_ssize_t streams_of(Held *held, PyObject *obj, Py_ssize_t *n, float **streams) {
    Py_ssize_t dims[3] = {-1, 1, -1};
    Py_buffer *view = take(held, obj, "streams", 3, dims, 1, ROWS);
    if (!view) return -1;
    if (dims[0] > MAX_STREAMS || view->strides[0] != 4 * dims[2]) {
        PyErr_SetString(PyExc_ValueError, "streams must be C-ordered [n <= 16, 1, H]");
        return -1;
    }
    *n = dims[0];
    *streams = (float *)view->buf;
    return dims[2];
}

static int nargs_is(Py_ssize_t nargs, Py_ssize_t want, const char *fn) {
    if (nargs == want) return 0;
    PyErr_Format(PyExc_TypeError, "%s takes %zd arguments, got %zd", fn, want, nargs);
    return -1;
}

/* -- arithmetic ----------------------------------------------------------------------- */

static double dot(const float *a, const float *b, Py_ssize_t n) {
    float lanes[LANES] = {0};
    Py_ssize_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) lanes[l] += a[i + l] * b[i + l];
    double sum = 0.0;
    for (int l = 0; l < LANES; l++) sum += lanes[l];
    for (; i < n; i++) sum += (double)a[i] * b[i];
    return sum;
}

static double sum_of(const float *a, Py_ssize_t n) {
    float lanes[LANES] = {0};
    Py_ssize_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) lanes[l] += a[i + l];
    double sum = 0.0;
    for (int l = 0; l < LANES; l++) sum += lanes[l];
    for (; i < n; i++) sum += a[i];
    return sum;
}

/* 1 / sqrt(mean(x²) + eps), as reference.inv_rms */
static float inv_rms(const float *x, Py_ssize_t n, double eps) {
    return (float)(1.0 / sqrt(dot(x, x, n) / (double)n + eps));
}

/* out = x · inv_rms(x) · w (w may be NULL: no weight); out may be x */
static void rms_norm(const float *x, const float *w, float *out, Py_ssize_t n, double eps) {
    float s = inv_rms(x, n, eps);
    if (w)
        for (Py_ssize_t i = 0; i < n; i++) out[i] = (x[i] * s) * w[i];
    else
        for (Py_ssize_t i = 0; i < n; i++) out[i] = x[i] * s;
}

#define AT(M, r, c) ((M).base[(r) * (M).rs + (c) * (M).cs])

/* tanh(inv_rms(x) · x @ router.T): the AltUp router's modalities, m[n] (n <= MAX_STREAMS) */
static void modalities(const float *x, Py_ssize_t h, const Mat *router, Py_ssize_t n,
                       double eps, float *m) {
    float s = inv_rms(x, h, eps);
    float acc[MAX_STREAMS] = {0};
    /* the n products side by side, over the columns of the Fortran order weights.py keeps */
    if (router->rs == 1) {
        for (Py_ssize_t j = 0; j < h; j++) {
            const float *col = router->base + j * router->cs;
            for (Py_ssize_t c = 0; c < n; c++) acc[c] += x[j] * col[c];
        }
    } else {
        for (Py_ssize_t j = 0; j < h; j++)
            for (Py_ssize_t c = 0; c < n; c++) acc[c] += x[j] * AT(*router, c, j);
    }
    for (Py_ssize_t c = 0; c < n; c++) m[c] = tanhf(acc[c] * s);
}

/* -- the calls ------------------------------------------------------------------------ */

PyDoc_STRVAR(predict_doc,
"predict(streams, router, prediction_coefs, input_norm, normed, active, eps)\n--\n\n"
"AltUp predict, in place, then the input RMSNorm of the active stream.\n\n"
"streams [n, 1, H] (written); router [n, H]; prediction_coefs [n*n, n];\n"
"input_norm [H]; normed [1, H] (written): rms_norm(streams[active]) * input_norm.");

static PyObject *predict(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    Held held = {.count = 0};
    PyObject *result = NULL;
    if (nargs_is(nargs, 7, "predict") < 0) return NULL;
    Py_ssize_t active = PyLong_AsSsize_t(args[5]);
    double eps = PyFloat_AsDouble(args[6]);
    if (PyErr_Occurred()) return NULL;
    Py_ssize_t n;
    float *streams;
    Py_ssize_t h = streams_of(&held, args[0], &n, &streams);
    if (h < 0) goto done;
    if (active < 0 || active >= n) {
        PyErr_Format(PyExc_ValueError, "active stream %zd is not one of the %zd", active, n);
        goto done;
    }
    Mat router, coefs;
    if (mat(&held, args[1], "router", n, h, &router) < 0) goto done;
    if (mat(&held, args[2], "prediction_coefs", n * n, n, &coefs) < 0) goto done;
    const float *norm = vec(&held, args[3], "input_norm", h, 0);
    float *normed = vec(&held, args[4], "normed", h, 1);
    if (!norm || !normed) goto done;

    float m[MAX_STREAMS], c[MAX_STREAMS * MAX_STREAMS];
    modalities(streams + active * h, h, &router, n, eps, m);
    for (Py_ssize_t ab = 0; ab < n * n; ab++) {
        float acc = 0.0f;
        for (Py_ssize_t k = 0; k < n; k++) acc += m[k] * AT(coefs, ab, k);
        c[ab] = acc;
    }
    /* pred[a] = streams[a] + Σ_b c[a, b] · streams[b], four columns at a time, in place */
    Py_ssize_t j = 0;
    for (; j + 4 <= h; j += 4) {
        v4 old[MAX_STREAMS];
        for (Py_ssize_t b = 0; b < n; b++) old[b] = LOAD4(streams + b * h + j);
        for (Py_ssize_t a = 0; a < n; a++) {
            v4 acc = old[a];
            for (Py_ssize_t b = 0; b < n; b++) acc += c[a * n + b] * old[b];
            STORE4(streams + a * h + j, acc);
        }
    }
    for (; j < h; j++) {
        float old[MAX_STREAMS];
        for (Py_ssize_t b = 0; b < n; b++) old[b] = streams[b * h + j];
        for (Py_ssize_t a = 0; a < n; a++) {
            float acc = 0.0f;
            for (Py_ssize_t b = 0; b < n; b++) acc += c[a * n + b] * old[b];
            streams[a * h + j] = old[a] + acc;
        }
    }
    rms_norm(streams + active * h, norm, normed, h, eps);
    result = Py_NewRef(Py_None);
done:
    release_all(&held);
    return result;
}

PyDoc_STRVAR(norm_rope_doc,
"norm_rope(x, norm, cos, sin, out, rotate, eps)\n--\n\n"
"Per-head RMSNorm of x [heads*hd] with weights norm [heads, hd], written to out\n"
"[heads*hd]; the first `rotate` heads are then rotated by cos, sin [hd] (sin's\n"
"first half negated, as reference.rope_tables makes it).");

static PyObject *norm_rope(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    Held held = {.count = 0};
    PyObject *result = NULL;
    if (nargs_is(nargs, 7, "norm_rope") < 0) return NULL;
    Py_ssize_t rotate = PyLong_AsSsize_t(args[5]);
    double eps = PyFloat_AsDouble(args[6]);
    if (PyErr_Occurred()) return NULL;
    Mat norm;
    Py_ssize_t dims[2] = {-1, -1};
    Py_buffer *nv = take(&held, args[1], "norm", 2, dims, 0, ROWS);
    if (!nv) goto done;
    Py_ssize_t heads = dims[0], hd = dims[1];
    norm.base = (const float *)nv->buf;
    norm.rs = nv->strides[0] / 4;
    norm.cs = 1;
    if (hd % 2 || rotate < 0 || rotate > heads) {
        PyErr_SetString(PyExc_ValueError, "norm_rope: head_dim must be even, rotate <= heads");
        goto done;
    }
    const float *x = vec(&held, args[0], "x", heads * hd, 0);
    const float *cosv = vec(&held, args[2], "cos", hd, 0);
    const float *sinv = vec(&held, args[3], "sin", hd, 0);
    float *out = vec(&held, args[4], "out", heads * hd, 1);
    if (!x || !cosv || !sinv || !out) goto done;
    Py_ssize_t half = hd / 2;
    float tmp[1024];
    if (hd > 1024) {
        PyErr_SetString(PyExc_ValueError, "norm_rope: head_dim above 1024");
        goto done;
    }
    for (Py_ssize_t head = 0; head < heads; head++) {
        const float *xh = x + head * hd;
        float *oh = out + head * hd;
        rms_norm(xh, norm.base + head * norm.rs, head < rotate ? tmp : oh, hd, eps);
        if (head >= rotate) continue;
        for (Py_ssize_t j = 0; j < half; j++) {
            oh[j] = tmp[j] * cosv[j] + tmp[j + half] * sinv[j];
            oh[j + half] = tmp[j + half] * cosv[j + half] + tmp[j] * sinv[j + half];
        }
    }
    result = Py_NewRef(Py_None);
done:
    release_all(&held);
    return result;
}

/* Queries per pass over a KV head's entries: their sums stay in registers (4 × 8 lanes).
 * Gemma 3n's E2B and E4B group 4 query heads per KV head; other groupings take the plain
 * loops. */
#define QROWS 4

/* scores[r, s] = Σ_d q[r, d] · K[d, s] for `rows` <= QROWS queries; K's row d at
 * kbase + d·kstride bytes. Blocks of 8 keys, all rows at once, so each K element is
 * loaded once and every multiply-add stays in registers. Walking a block down its
 * 256 rows is a stride the hardware prefetchers follow badly, so each row's line two
 * blocks ahead is prefetched by hand: the cache arrives cold, after the layer's weights
 * have streamed through. With the values asked for before the scores (attend), E2B's 30
 * layers at 143 entries take 3.4 instead of 4.1 ms of a decode step (A/B in one process,
 * thread CPU time). */
static void scores_block(const float *q, Py_ssize_t rows, Py_ssize_t hd, const char *kbase,
                         Py_ssize_t kstride, Py_ssize_t s_len, float *scores) {
    Py_ssize_t s0 = 0;
    if (rows == QROWS) {
        const float *q0 = q, *q1 = q + hd, *q2 = q + 2 * hd, *q3 = q + 3 * hd;
        for (; s0 + LANES <= s_len; s0 += LANES) {
            v4 a0 = {0}, b0 = {0}, a1 = {0}, b1 = {0}, a2 = {0}, b2 = {0}, a3 = {0}, b3 = {0};
            for (Py_ssize_t d = 0; d < hd; d++) {
                const float *k = (const float *)(kbase + d * kstride) + s0;
                PREFETCH(k + 4 * LANES); /* this row, two lines ahead */
                v4 lo = LOAD4(k), hi = LOAD4(k + 4);
                float x0 = q0[d], x1 = q1[d], x2 = q2[d], x3 = q3[d];
                a0 += x0 * lo, b0 += x0 * hi;
                a1 += x1 * lo, b1 += x1 * hi;
                a2 += x2 * lo, b2 += x2 * hi;
                a3 += x3 * lo, b3 += x3 * hi;
            }
            float *row = scores + s0;
            STORE4(row, a0), STORE4(row + 4, b0);
            row += s_len;
            STORE4(row, a1), STORE4(row + 4, b1);
            row += s_len;
            STORE4(row, a2), STORE4(row + 4, b2);
            row += s_len;
            STORE4(row, a3), STORE4(row + 4, b3);
        }
    }
    for (; s0 < s_len; s0++) /* the last keys, or every key for fewer queries: plainly */
        for (Py_ssize_t r = 0; r < rows; r++) {
            float acc = 0.0f;
            for (Py_ssize_t d = 0; d < hd; d++)
                acc += q[r * hd + d] * ((const float *)(kbase + d * kstride))[s0];
            scores[r * s_len + s0] = acc;
        }
}

/* out[r, :] = Σ_s p[r, s] · V[s, :] for `rows` <= QROWS; V's row s at vbase + s·vstride
 * bytes. */
static void mix_block(const float *p, Py_ssize_t rows, Py_ssize_t s_len, const char *vbase,
                      Py_ssize_t vstride, Py_ssize_t hd, float *out) {
    Py_ssize_t d0 = 0;
    if (rows == QROWS) {
        const float *p0 = p, *p1 = p + s_len, *p2 = p + 2 * s_len, *p3 = p + 3 * s_len;
        for (; d0 + LANES <= hd; d0 += LANES) {
            v4 a0 = {0}, b0 = {0}, a1 = {0}, b1 = {0}, a2 = {0}, b2 = {0}, a3 = {0}, b3 = {0};
            for (Py_ssize_t s = 0; s < s_len; s++) {
                const float *v = (const float *)(vbase + s * vstride) + d0;
                PREFETCH(v + 4 * LANES); /* this row, two lines ahead */
                v4 lo = LOAD4(v), hi = LOAD4(v + 4);
                float x0 = p0[s], x1 = p1[s], x2 = p2[s], x3 = p3[s];
                a0 += x0 * lo, b0 += x0 * hi;
                a1 += x1 * lo, b1 += x1 * hi;
                a2 += x2 * lo, b2 += x2 * hi;
                a3 += x3 * lo, b3 += x3 * hi;
            }
            float *row = out + d0;
            STORE4(row, a0), STORE4(row + 4, b0);
            row += hd;
            STORE4(row, a1), STORE4(row + 4, b1);
            row += hd;
            STORE4(row, a2), STORE4(row + 4, b2);
            row += hd;
            STORE4(row, a3), STORE4(row + 4, b3);
        }
    }
    for (; d0 < hd; d0++) /* the last columns, or all of them for fewer queries: plainly */
        for (Py_ssize_t r = 0; r < rows; r++) {
            float acc = 0.0f;
            for (Py_ssize_t s = 0; s < s_len; s++)
                acc += p[r * s_len + s] * ((const float *)(vbase + s * vstride))[d0];
            out[r * hd + d0] = acc;
        }
}

/* Weights below e^-60 (1e-26, far below float32's 1e-7 resolution) are set to 0: exp
 * would give subnormals there, and on x86 each product with a subnormal costs ~100 cycles
 * (normed queries and keys make a decoded token's scores spread that wide). */
#define SOFTMAX_FLOOR (-60.0f)

/* Ask for `rows` rows of `width` floats, row r at base + r·stride bytes, to be brought into
 * the caches; nothing waits for them. */
static void prefetch_rows(const char *base, Py_ssize_t stride, Py_ssize_t rows,
                          Py_ssize_t width) {
    for (Py_ssize_t r = 0; r < rows; r++) {
        const float *row = (const float *)(base + r * stride);
        for (Py_ssize_t i = 0; i < width; i += 16) PREFETCH(row + i);
    }
}

/* x := softmax(x) over n entries */
static void softmax(float *x, Py_ssize_t n) {
    float top = x[0];
    for (Py_ssize_t s = 1; s < n; s++) top = x[s] > top ? x[s] : top;
    for (Py_ssize_t s = 0; s < n; s++) {
        float shifted = x[s] - top;
        x[s] = shifted < SOFTMAX_FLOOR ? 0.0f : expf(shifted);
    }
    float inv = (float)(1.0 / sum_of(x, n));
    for (Py_ssize_t s = 0; s < n; s++) x[s] *= inv;
}

PyDoc_STRVAR(attend_doc,
"attend(q, keys, values, out)\n--\n\n"
"One token's grouped-query attention, scale 1.0, over every cached entry:\n"
"q [nH*hd]; keys [n_kv, hd, S] and values [n_kv, S, hd] (the KV cache's layouts,\n"
"views allowed); out [nH*hd] (written).");

static PyObject *attend(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    Held held = {.count = 0};
    PyObject *result = NULL;
    float *scores = NULL;
    if (nargs_is(nargs, 4, "attend") < 0) return NULL;
    Py_ssize_t kd[3] = {-1, -1, -1};
    Py_buffer *kv = take(&held, args[1], "keys", 3, kd, 0, ROWS);
    if (!kv) goto done;
    Py_ssize_t n_kv = kd[0], hd = kd[1], s_len = kd[2];
    Py_ssize_t vd[3] = {n_kv, s_len, hd};
    Py_buffer *vv = take(&held, args[2], "values", 3, vd, 0, ROWS);
    if (!vv) goto done;
    Py_buffer *qv = take(&held, args[0], "q", 1, (Py_ssize_t[]){-1}, 0, C_ORDER);
    if (!qv) goto done;
    Py_ssize_t n_heads = qv->len / 4 / hd;
    if (n_heads * hd * 4 != qv->len || n_heads % n_kv || s_len < 1) {
        PyErr_SetString(PyExc_ValueError,
                        "attend: q must be [nH*hd] with nH a multiple of n_kv, and S >= 1");
        goto done;
    }
    float *out = vec(&held, args[3], "out", n_heads * hd, 1);
    if (!out) goto done;
    const float *q = (const float *)qv->buf;
    Py_ssize_t group = n_heads / n_kv;
    scores = PyMem_Malloc(sizeof(float) * QROWS * s_len);
    if (!scores) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t h = 0; h < n_kv; h++) {
        const char *kbase = (const char *)kv->buf + h * kv->strides[0];
        const char *vbase = (const char *)vv->buf + h * vv->strides[0];
        const float *qh = q + h * group * hd;
        float *oh = out + h * group * hd;
        prefetch_rows(vbase, vv->strides[1], s_len, hd); /* arrives while the scores run */
        for (Py_ssize_t g = 0; g < group; g += QROWS) {
            Py_ssize_t rows = group - g < QROWS ? group - g : QROWS;
            scores_block(qh + g * hd, rows, hd, kbase, kv->strides[1], s_len, scores);
            for (Py_ssize_t r = 0; r < rows; r++) softmax(scores + r * s_len, s_len);
            mix_block(scores, rows, s_len, vbase, vv->strides[1], hd, oh + g * hd);
        }
    }
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(scores);
    release_all(&held);
    return result;
}

PyDoc_STRVAR(post_attention_doc,
"post_attention(attn, attn_norm, active, low_rank, laurel_norm, normed, ffn_norm,\n"
"               x, ffn_in, eps)\n--\n\n"
"The residuals after attention and the FFN's input norm, all [H]:\n"
"x = (rms_norm(attn)·attn_norm + active + rms_norm(low_rank)·laurel_norm + normed) / √2,\n"
"ffn_in = rms_norm(x)·ffn_norm. x and ffn_in are written.");

static PyObject *post_attention(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    Held held = {.count = 0};
    PyObject *result = NULL;
    if (nargs_is(nargs, 10, "post_attention") < 0) return NULL;
    double eps = PyFloat_AsDouble(args[9]);
    if (PyErr_Occurred()) return NULL;
    Py_buffer *av = take(&held, args[0], "attn", 1, (Py_ssize_t[]){-1}, 0, C_ORDER);
    if (!av) goto done;
    Py_ssize_t h = av->len / 4;
    const float *attn = (const float *)av->buf;
    const float *attn_norm = vec(&held, args[1], "attn_norm", h, 0);
    const float *active = vec(&held, args[2], "active", h, 0);
    const float *low = vec(&held, args[3], "low_rank", h, 0);
    const float *laurel_norm = vec(&held, args[4], "laurel_norm", h, 0);
    const float *normed = vec(&held, args[5], "normed", h, 0);
    const float *ffn_norm = vec(&held, args[6], "ffn_norm", h, 0);
    float *x = vec(&held, args[7], "x", h, 1);
    float *ffn_in = vec(&held, args[8], "ffn_in", h, 1);
    if (!attn_norm || !active || !low || !laurel_norm || !normed || !ffn_norm || !x || !ffn_in)
        goto done;
    float sa = inv_rms(attn, h, eps), sl = inv_rms(low, h, eps);
    const float root_half = (float)(1.0 / sqrt(2.0));
    for (Py_ssize_t j = 0; j < h; j++) {
        float laurel = (low[j] * sl) * laurel_norm[j] + normed[j];
        x[j] = (((attn[j] * sa) * attn_norm[j] + active[j]) + laurel) * root_half;
    }
    rms_norm(x, ffn_norm, ffn_in, h, eps);
    result = Py_NewRef(Py_None);
done:
    release_all(&held);
    return result;
}

PyDoc_STRVAR(cutoff_doc,
"sparsity_cutoff(gates, quantile, out)\n--\n\n"
"mean + std·quantile over the concatenated [1, w_k] gate slabs (a sequence), as\n"
"reference.sparsity_cutoff (population std); written to out [1, 1].");

static PyObject *sparsity_cutoff(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    Held held = {.count = 0};
    PyObject *result = NULL, *seq = NULL;
    if (nargs_is(nargs, 3, "sparsity_cutoff") < 0) return NULL;
    double quantile = PyFloat_AsDouble(args[1]);
    if (PyErr_Occurred()) return NULL;
    seq = PySequence_Fast(args[0], "gates must be a sequence of arrays");
    if (!seq) return NULL;
    Py_ssize_t parts = PySequence_Fast_GET_SIZE(seq);
    if (parts < 1 || parts > MAX_ARGS - 1) {
        PyErr_SetString(PyExc_ValueError, "sparsity_cutoff: 1 to 15 gate slabs");
        goto done;
    }
    float *out = vec(&held, args[2], "out", 1, 1);
    if (!out) goto done;
    const float *gate[MAX_ARGS];
    Py_ssize_t width[MAX_ARGS], total = 0;
    double sum = 0.0;
    for (Py_ssize_t k = 0; k < parts; k++) {
        Py_buffer *g = take(&held, PySequence_Fast_GET_ITEM(seq, k), "gate", 1,
                            (Py_ssize_t[]){-1}, 0, C_ORDER);
        if (!g) goto done;
        gate[k] = (const float *)g->buf;
        width[k] = g->len / 4;
        total += width[k];
        sum += sum_of(gate[k], width[k]);
    }
    float mean = (float)(sum / (double)total);
    double var = 0.0;
    for (Py_ssize_t k = 0; k < parts; k++) {
        float lanes[LANES] = {0};
        Py_ssize_t i = 0;
        for (; i + LANES <= width[k]; i += LANES)
            for (int l = 0; l < LANES; l++) {
                float d = gate[k][i + l] - mean;
                lanes[l] += d * d;
            }
        for (int l = 0; l < LANES; l++) var += lanes[l];
        for (; i < width[k]; i++) var += (double)(gate[k][i] - mean) * (gate[k][i] - mean);
    }
    out[0] = (float)(sqrt(var / (double)total) * quantile + mean);
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(seq);
    release_all(&held);
    return result;
}

PyDoc_STRVAR(correct_doc,
"correct(ffn_parts, ffn_norm, x, streams, router, correction_coefs, output_scale,\n"
"        first, active, eps)\n--\n\n"
"The FFN's residual, then AltUp correct in place, then the per-layer gate's input:\n"
"activated = rms_norm(Σ ffn_parts)·ffn_norm + x; every stream a gets\n"
"(coef_a + 1)·(activated − streams[active]); first = streams[active]·output_scale\n"
"(output_scale None: unscaled). ffn_parts: a sequence of [1, H]; streams [n, 1, H];\n"
"router [n, H]; correction_coefs [n, n]; first [1, H] (written).");

static PyObject *correct(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    Held held = {.count = 0};
    PyObject *result = NULL, *seq = NULL;
    if (nargs_is(nargs, 10, "correct") < 0) return NULL;
    Py_ssize_t active = PyLong_AsSsize_t(args[8]);
    double eps = PyFloat_AsDouble(args[9]);
    if (PyErr_Occurred()) return NULL;
    Py_ssize_t n;
    float *streams;
    Py_ssize_t h = streams_of(&held, args[3], &n, &streams);
    if (h < 0) goto done;
    if (active < 0 || active >= n) {
        PyErr_Format(PyExc_ValueError, "active stream %zd is not one of the %zd", active, n);
        goto done;
    }
    seq = PySequence_Fast(args[0], "ffn_parts must be a sequence of arrays");
    if (!seq) goto done;
    Py_ssize_t parts = PySequence_Fast_GET_SIZE(seq);
    if (parts < 1 || parts > 8) {
        PyErr_SetString(PyExc_ValueError, "correct: 1 to 8 FFN slab outputs");
        goto done;
    }
    const float *part[8];
    for (Py_ssize_t k = 0; k < parts; k++) {
        part[k] = vec(&held, PySequence_Fast_GET_ITEM(seq, k), "ffn part", h, 0);
        if (!part[k]) goto done;
    }
    const float *ffn_norm = vec(&held, args[1], "ffn_norm", h, 0);
    const float *x = vec(&held, args[2], "x", h, 0);
    Mat router, coefs;
    if (!ffn_norm || !x) goto done;
    if (mat(&held, args[4], "router", n, h, &router) < 0) goto done;
    if (mat(&held, args[5], "correction_coefs", n, n, &coefs) < 0) goto done;
    const float *scale = NULL;
    if (args[6] != Py_None && !(scale = vec(&held, args[6], "output_scale", h, 0))) goto done;
    float *first = vec(&held, args[7], "first", h, 1);
    if (!first) goto done;

    /* the FFN's sum goes through `first` as scratch; activated then lives there too */
    float *act = first;
    for (Py_ssize_t j = 0; j < h; j++) act[j] = part[0][j];
    for (Py_ssize_t k = 1; k < parts; k++)
        for (Py_ssize_t j = 0; j < h; j++) act[j] += part[k][j];
    float sf = inv_rms(act, h, eps);
    for (Py_ssize_t j = 0; j < h; j++) act[j] = (act[j] * sf) * ffn_norm[j] + x[j];
    float m[MAX_STREAMS], c[MAX_STREAMS];
    modalities(act, h, &router, n, eps, m);
    for (Py_ssize_t a = 0; a < n; a++) {
        float acc = 0.0f;
        for (Py_ssize_t k = 0; k < n; k++) acc += m[k] * AT(coefs, a, k);
        c[a] = acc + 1.0f;
    }
    /* every stream a += c[a] · (activated − pred[active]); the active stream last */
    float *pa = streams + active * h;
    for (Py_ssize_t a = 0; a < n; a++) {
        if (a == active) continue;
        float *sa = streams + a * h;
        for (Py_ssize_t j = 0; j < h; j++) sa[j] += c[a] * (act[j] - pa[j]);
    }
    for (Py_ssize_t j = 0; j < h; j++) {
        pa[j] += c[active] * (act[j] - pa[j]);
        first[j] = scale ? pa[j] * scale[j] : pa[j];
    }
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(seq);
    release_all(&held);
    return result;
}

PyDoc_STRVAR(add_update_doc,
"add_update(projected, norm, streams, eps)\n--\n\n"
"streams[1:] += rms_norm(projected)·norm: the per-layer input's update.\n"
"projected [1, H]; norm [H]; streams [n, 1, H] (written).");

static PyObject *add_update(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    Held held = {.count = 0};
    PyObject *result = NULL;
    if (nargs_is(nargs, 4, "add_update") < 0) return NULL;
    double eps = PyFloat_AsDouble(args[3]);
    if (PyErr_Occurred()) return NULL;
    Py_ssize_t n;
    float *streams;
    Py_ssize_t h = streams_of(&held, args[2], &n, &streams);
    if (h < 0) goto done;
    const float *projected = vec(&held, args[0], "projected", h, 0);
    const float *norm = vec(&held, args[1], "norm", h, 0);
    if (!projected || !norm) goto done;
    float s = inv_rms(projected, h, eps);
    for (Py_ssize_t j = 0; j < h; j++) {
        float u = (projected[j] * s) * norm[j];
        for (Py_ssize_t a = 1; a < n; a++) streams[a * h + j] += u;
    }
    result = Py_NewRef(Py_None);
done:
    release_all(&held);
    return result;
}

static PyMethodDef methods[] = {
    {"predict", (PyCFunction)(void (*)(void))predict, METH_FASTCALL, predict_doc},
    {"norm_rope", (PyCFunction)(void (*)(void))norm_rope, METH_FASTCALL, norm_rope_doc},
    {"attend", (PyCFunction)(void (*)(void))attend, METH_FASTCALL, attend_doc},
    {"post_attention", (PyCFunction)(void (*)(void))post_attention, METH_FASTCALL,
     post_attention_doc},
    {"sparsity_cutoff", (PyCFunction)(void (*)(void))sparsity_cutoff, METH_FASTCALL, cutoff_doc},
    {"correct", (PyCFunction)(void (*)(void))correct, METH_FASTCALL, correct_doc},
    {"add_update", (PyCFunction)(void (*)(void))add_update, METH_FASTCALL, add_update_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_glue",
    .m_doc = "The engine's work between kernels for one decoded token, compiled (_glue.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__glue(void) { return PyModule_Create(&module); }
