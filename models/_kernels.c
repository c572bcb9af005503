/* The uncertainty statistics of MC-dropout passes, compiled: `models._kernels`.
 *
 * The one implementation of the statistics (models/uncertainty.py wraps it; a plain Python
 * reference lives in the tests). At one image and T = 100 the same arithmetic in numpy is some
 * twenty calls of a few microseconds each; here it is two calls (docs/performance.md). Inputs are
 * read through the buffer protocol (no numpy headers). Each input's arithmetic is its own loop in a
 * fixed order, plain IEEE double with no reassociation, so an input's statistics do not depend on
 * the batch around it or on the CPU's vector width.
 *
 * State of one input, float64 (2 + 3C): [passes, sum of H[p_t], mean p (C), sum of squared
 * deviations from the mean (C), votes per class (C)]. Chunks of passes merge as in Chan, Golub and
 * LeVeque's parallel variance, so the std has no cancellation.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Work past this many inner steps runs without the GIL; below it the release and the wait to take
 * the GIL back would cost more than the work. */
#define GIL_FREE_STEPS (1 << 16)

/* Fill `view` with `object`'s buffer if it is C-contiguous with the struct format `format` and
 * `ndim` dimensions; else set a ValueError naming `name`. Returns 0 on success. */
static int get_array(PyObject *object, Py_buffer *view, const char *name, const char *format, int ndim,
                     int writable) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object, view, flags) < 0) return -1;
    const char *have = view->format;
    if (have[0] == '<' || have[0] == '=' || have[0] == '@') have++;
    if (view->ndim != ndim || strcmp(have, format) != 0) {
        PyErr_Format(PyExc_ValueError, "%s must be a C-contiguous %d-d array of struct format '%s'", name,
                     ndim, format);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static void release_all(Py_buffer *views, int count) {
    for (int i = 0; i < count; i++) PyBuffer_Release(&views[i]);
}

/* accumulate(logits, state, probs): add passes to each input's state.
 * logits (t, B, C) float32, t passes; state (B, 2 + 3C) float64, updated; probs (t, B, C) float64,
 * written with each pass's softmax. A pass's vote is its first largest logit. */
static PyObject *accumulate(PyObject *self, PyObject *args) {
    PyObject *objects[3];
    if (!PyArg_UnpackTuple(args, "accumulate", 3, 3, &objects[0], &objects[1], &objects[2])) return NULL;
    static const char *names[3] = {"logits", "state", "probs"};
    static const char *formats[3] = {"f", "d", "d"};
    static const int dims[3] = {3, 2, 3};
    Py_buffer views[3];
    for (int i = 0; i < 3; i++) {
        if (get_array(objects[i], &views[i], names[i], formats[i], dims[i], i > 0) < 0) {
            release_all(views, i);
            return NULL;
        }
    }
    const Py_ssize_t T = views[0].shape[0], B = views[0].shape[1], C = views[0].shape[2];
    if (C < 1 || T < 1 || views[1].shape[0] != B || views[1].shape[1] != 2 + 3 * C
        || memcmp(views[2].shape, views[0].shape, 3 * sizeof(Py_ssize_t)) != 0) {
        release_all(views, 3);
        PyErr_SetString(PyExc_ValueError,
                        "accumulate: logits (t, B, C) with t, C >= 1, state (B, 2 + 3C) and probs (t, B, C) disagree");
        return NULL;
    }
    const float *logits = views[0].buf;
    double *state = views[1].buf, *probs = views[2].buf;
    double *chunk = malloc(sizeof(double) * (size_t)(2 * C));  /* this chunk's mean and squares */
    if (chunk == NULL) {
        release_all(views, 3);
        return PyErr_NoMemory();
    }
    const int gil_free = T * B * C > GIL_FREE_STEPS / 8; /* an exp per step */
    PyThreadState *thread = gil_free ? PyEval_SaveThread() : NULL;
    for (Py_ssize_t b = 0; b < B; b++) {
        double *s = state + b * (2 + 3 * C), *mean = s + 2, *squares = mean + C, *votes = squares + C;
        double *chunk_mean = chunk, *chunk_squares = chunk + C, entropy_sum = 0.0;
        for (Py_ssize_t c = 0; c < C; c++) chunk_mean[c] = chunk_squares[c] = 0.0;
        for (Py_ssize_t t = 0; t < T; t++) {
            const float *z = logits + (t * B + b) * C;
            double *p = probs + (t * B + b) * C;
            Py_ssize_t vote = 0;
            for (Py_ssize_t c = 1; c < C; c++)
                if (z[c] > z[vote]) vote = c;
            const double top = z[vote];
            double normalizer = 0.0, weighted = 0.0;
            for (Py_ssize_t c = 0; c < C; c++) {
                p[c] = exp((double)z[c] - top);
                normalizer += p[c];
            }
            for (Py_ssize_t c = 0; c < C; c++) {
                p[c] /= normalizer;
                weighted += p[c] * ((double)z[c] - top);
                chunk_mean[c] += p[c];
            }
            entropy_sum += log(normalizer) - weighted; /* -sum p log p, with log p = z - top - log normalizer */
            votes[vote] += 1.0;
        }
        for (Py_ssize_t c = 0; c < C; c++) chunk_mean[c] /= (double)T;
        for (Py_ssize_t t = 0; t < T; t++) {
            const double *p = probs + (t * B + b) * C;
            for (Py_ssize_t c = 0; c < C; c++) {
                const double d = p[c] - chunk_mean[c];
                chunk_squares[c] += d * d;
            }
        }
        const double before = s[0], total = before + (double)T;
        for (Py_ssize_t c = 0; c < C; c++) {
            const double delta = chunk_mean[c] - mean[c];
            mean[c] += delta * ((double)T / total);
            squares[c] += chunk_squares[c] + delta * delta * (before * (double)T / total);
        }
        s[0] = total;
        s[1] += entropy_sum;
    }
    if (gil_free) PyEval_RestoreThread(thread);
    free(chunk);
    release_all(views, 3);
    Py_RETURN_NONE;
}

/* finish(state, stats): the statistics of each input's passes.
 * state (B, 2 + 3C) float64 as `accumulate` left it; writes stats (B, 2C + 4) float64:
 * [mean probabilities (C) | population std (C) | predictive entropy H[mean p] |
 *  expected entropy mean H[p_t] | mutual information (their difference, at least 0) |
 *  variation ratio 1 - (votes for the modal class) / T], entropies in nats. */
static PyObject *finish(PyObject *self, PyObject *args) {
    PyObject *objects[2];
    if (!PyArg_UnpackTuple(args, "finish", 2, 2, &objects[0], &objects[1])) return NULL;
    Py_buffer views[2];
    if (get_array(objects[0], &views[0], "state", "d", 2, 0) < 0) return NULL;
    if (get_array(objects[1], &views[1], "stats", "d", 2, 1) < 0) {
        release_all(views, 1);
        return NULL;
    }
    const Py_ssize_t B = views[0].shape[0], C = (views[0].shape[1] - 2) / 3;
    if (C < 1 || views[0].shape[1] != 2 + 3 * C || views[1].shape[0] != B || views[1].shape[1] != 2 * C + 4) {
        release_all(views, 2);
        PyErr_SetString(PyExc_ValueError, "finish: state (B, 2 + 3C) and stats (B, 2C + 4) disagree");
        return NULL;
    }
    const double *state = views[0].buf;
    double *stats = views[1].buf;
    for (Py_ssize_t b = 0; b < B; b++) {
        const double *s = state + b * (2 + 3 * C), *mean = s + 2, *squares = mean + C, *votes = squares + C;
        double *out = stats + b * (2 * C + 4), entropy = 0.0, modal = 0.0;
        const double passes = s[0];
        if (passes < 1.0) {
            release_all(views, 2);
            PyErr_SetString(PyExc_ValueError, "finish: an input has no passes");
            return NULL;
        }
        for (Py_ssize_t c = 0; c < C; c++) {
            out[c] = mean[c];
            out[C + c] = sqrt(squares[c] / passes);
            if (mean[c] > 0.0) entropy -= mean[c] * log(mean[c]);
            if (votes[c] > modal) modal = votes[c];
        }
        const double aleatoric = s[1] / passes;
        out[2 * C] = entropy;
        out[2 * C + 1] = aleatoric;
        out[2 * C + 2] = entropy > aleatoric ? entropy - aleatoric : 0.0;
        out[2 * C + 3] = 1.0 - modal / passes;
    }
    release_all(views, 2);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"accumulate", accumulate, METH_VARARGS,
     "accumulate(logits, state, probs): add the passes logits (t, B, C) float32 to state (B, 2 + 3C) "
     "float64, writing each pass's softmax into probs (t, B, C) float64."},
    {"finish", finish, METH_VARARGS,
     "finish(state, stats): the statistics of each input's passes into stats (B, 2C + 4) float64."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "models._kernels",
                                    "The uncertainty statistics of MC-dropout passes, compiled.", -1, methods};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
