/* The compiled parts of MC dropout: `models._kernels`.
 *
 * - `philox`: the one random source of the masks, Philox4x64-10 (numpy.random.Philox's stream).
 * - `masked_output`: the last dropout and the output layer of T passes, drawing the masks as it goes.
 * - `accumulate` and `finish`: the uncertainty statistics of the passes (models/uncertainty.py wraps
 *   them; a plain Python reference lives in the tests).
 * - `temper`: temperature scaling of the MC mean (models/calibration.py wraps it).
 *
 * At one image and T = 100 the same work in torch and numpy is some twenty calls of a few
 * microseconds each; here it is four (docs/performance.md). Arrays are read through the buffer
 * protocol (no numpy headers). Each pass of each input is its own loop in a fixed order, plain IEEE
 * arithmetic with no reassociation and no FMA contraction (pyproject.toml), so its result depends
 * neither on the batch around it nor on the CPU's vector width. Written for GCC or Clang (128-bit
 * products, vector extensions, count-trailing-zeros) on a little-endian 64-bit machine.
 *
 * State of one input, float64 (2 + 3C): [passes, sum of H[p_t], mean p (C), sum of squared
 * deviations from the mean (C), votes per class (C)]. Chunks of passes merge as in Chan, Golub and
 * LeVeque's parallel variance, so the std has no cancellation.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the masks read Philox's 64-bit words bit by bit as numpy's little-endian unpackbits does"
#endif

/* Work past this many inner steps runs without the GIL; below it the release and the wait to take
 * the GIL back would cost more than the work. */
#define GIL_FREE_STEPS (1 << 16)

/* The set of dimension counts {n} for get_array. */
#define DIMS(n) (1 << (n))

/* Fill `view` with `object`'s buffer if it is C-contiguous with the struct format `format` and a
 * number of dimensions in `dims` (of DIMS); else set a ValueError naming `name`. Returns 0 on success. */
static int get_array(PyObject *object, Py_buffer *view, const char *name, const char *format, int dims,
                     int writable) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object, view, flags) < 0) return -1;
    const char *have = view->format;
    if (have[0] == '<' || have[0] == '=' || have[0] == '@') have++;
    if (!(dims & DIMS(view->ndim)) || strcmp(have, format) != 0) {
        PyErr_Format(PyExc_ValueError, "%s must be a C-contiguous '%s' array of the documented shape", name,
                     format);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static void release_all(Py_buffer *views, int count) {
    for (int i = 0; i < count; i++) PyBuffer_Release(&views[i]);
}

/* Philox4x64-10 (Salmon et al. 2011, as in Random123 and numpy): block i of the stream keyed by `key`
 * from block `first` is the cipher of the 256-bit counter first + i + 1 (numpy's Philox counts up
 * before each block) under the key (key, 0). Writes 32 bytes a block: four 64-bit words in the
 * machine's byte order, as numpy's random_raw. */
static void philox_blocks(uint64_t key, uint64_t first, Py_ssize_t blocks, void *out) {
    uint64_t counter[4] = {first, 0, 0, 0};
    for (Py_ssize_t i = 0; i < blocks; i++) {
        for (int w = 0; w < 4 && ++counter[w] == 0; w++) {} /* carry */
        uint64_t x[4] = {counter[0], counter[1], counter[2], counter[3]}, k0 = key, k1 = 0;
        for (int round = 0; round < 10; round++) {
            if (round > 0) {
                k0 += 0x9E3779B97F4A7C15ULL;
                k1 += 0xBB67AE8584CAA73BULL;
            }
            const unsigned __int128 p0 = (unsigned __int128)0xD2E7470EE14C6C93ULL * x[0];
            const unsigned __int128 p1 = (unsigned __int128)0xCA5A826395121157ULL * x[2];
            x[0] = (uint64_t)(p1 >> 64) ^ x[1] ^ k0;
            x[1] = (uint64_t)p1;
            x[2] = (uint64_t)(p0 >> 64) ^ x[3] ^ k1;
            x[3] = (uint64_t)p0;
        }
        memcpy((char *)out + 32 * i, x, 32);
    }
}

/* philox(key, first_block, words): fill words (uint8, whole blocks of 32 bytes) with the stream
 * from block `first_block`. */
static PyObject *philox(PyObject *self, PyObject *args) {
    PyObject *object;
    unsigned long long key, first;
    if (!PyArg_ParseTuple(args, "KKO", &key, &first, &object)) return NULL;
    Py_buffer view;
    if (get_array(object, &view, "words", "B", DIMS(1), 1) < 0) return NULL;
    if (view.len % 32 != 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "philox: words must be whole blocks of 32 bytes");
        return NULL;
    }
    philox_blocks(key, first, view.len / 32, view.buf);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

/* Bit i of the result (i < n <= 64): whether unit u + i is kept, its draw (draw u + i of `bits` bits
 * in the stream `words`, as numpy reads it through a uint8 or uint16 view) being at least
 * `threshold`; with bits 0 every unit is kept. */
static inline uint64_t keep_mask(const uint64_t *words, uint64_t u, int n, int bits, unsigned threshold) {
    const uint64_t all = n == 64 ? ~0ULL : (1ULL << n) - 1;
    if (bits == 0) return all;
    if (bits == 1) { /* a draw is a bit, kept when set: the 64 bits from bit u */
        const unsigned shift = u & 63;
        uint64_t window = words[u >> 6] >> shift;
        if (shift != 0 && n > 64 - (int)shift) window |= words[(u >> 6) + 1] << (64 - shift);
        return window & all;
    }
    uint64_t mask = 0;
    if (bits == 8)
        for (int i = 0; i < n; i++) mask |= (uint64_t)(((const uint8_t *)words)[u + i] >= threshold) << i;
    else
        for (int i = 0; i < n; i++) mask |= (uint64_t)(((const uint16_t *)words)[u + i] >= threshold) << i;
    return mask;
}

/* Classes are summed LANES at a time: fixed-size accumulators the compiler keeps in registers. Three
 * vectors of 4 floats: ten classes fit one block of lanes. */
#define LANES 12
typedef float vector __attribute__((vector_size(16)));

/* sum += x[j] * rows[j] (LANES floats at stride `stride`) for each set bit j of `mask`, in increasing j. */
static inline void add_kept(float *sum, const float *rows, const float *x, Py_ssize_t stride, uint64_t mask) {
    vector s[LANES / 4];
    memcpy(s, sum, sizeof s);
    for (; mask != 0; mask &= mask - 1) {
        const int j = __builtin_ctzll(mask);
        for (int v = 0; v < LANES / 4; v++) {
            vector row;
            memcpy(&row, rows + j * stride + 4 * v, sizeof row);
            s[v] += x[j] * row;
        }
    }
    memcpy(sum, s, sizeof s);
}

/* When the passes share h, units go in groups of 4 and a pass adds one precomputed sum per group, its
 * kept subset's: table (groups, 16, padded) holds for group g and subset e (bit k: unit 4g + k kept)
 * the sum of h[j] * columns[j] over the subset, in increasing j; units past D count 0. Built once per
 * input, it turns a pass's one addition per kept unit into one per 4 units. */
#define GROUP 4
#define SUBSETS (1 << GROUP)

static void build_table(float *table, const float *h, const float *columns, Py_ssize_t D, Py_ssize_t padded) {
    for (Py_ssize_t g = 0; g * GROUP < D; g++) {
        float *sums = table + g * SUBSETS * padded;
        memset(sums, 0, sizeof(float) * (size_t)padded); /* the empty subset */
        for (int e = 1; e < SUBSETS; e++) { /* the subset less its highest unit j, then j */
            const int k = 31 - __builtin_clz((unsigned)e);
            const Py_ssize_t j = g * GROUP + k;
            const float *rest = sums + (e ^ (1 << k)) * padded;
            if (j >= D) {
                memcpy(sums + e * padded, rest, sizeof(float) * (size_t)padded);
                continue;
            }
            for (Py_ssize_t c = 0; c < padded; c++) sums[e * padded + c] = rest[c] + h[j] * columns[j * padded + c];
        }
    }
}

/* s += LANES floats of sums */
static inline void add_sums(vector *s, const float *sums) {
    for (int v = 0; v < LANES / 4; v++) {
        vector x;
        memcpy(&x, sums + 4 * v, sizeof x);
        s[v] += x;
    }
}

/* sum += the table's sums (LANES floats at stride `padded`) of the kept subsets in `mask`, groups of
 * its n units in increasing order, the even and the odd ones in two sums (two chains of additions)
 * added at the end. */
static inline void add_groups(float *sum, const float *table, Py_ssize_t padded, uint64_t mask, int n) {
    vector even[LANES / 4], odd[LANES / 4] = {0};
    memcpy(even, sum, sizeof even);
    const int groups = (n + GROUP - 1) / GROUP;
    const Py_ssize_t step = SUBSETS * padded; /* a group's sums */
    int g = 0;
    for (; g + 1 < groups; g += 2, mask >>= 2 * GROUP) {
        add_sums(even, table + g * step + (mask & (SUBSETS - 1)) * padded);
        add_sums(odd, table + (g + 1) * step + ((mask >> GROUP) & (SUBSETS - 1)) * padded);
    }
    if (g < groups) add_sums(even, table + g * step + (mask & (SUBSETS - 1)) * padded); /* one left */
    for (int v = 0; v < LANES / 4; v++) even[v] += odd[v];
    memcpy(sum, even, sizeof even);
}

/* masked_output(h, weight, bias, logits, scale, key, first_block, bits, threshold): T passes of
 * inverted dropout and the output layer, logits[t, b] = bias + scale * weight @ (keep[t, b] * h[b]).
 * h (B, D), shared by the T passes, or (T, B, D), float32; weight (C, D), bias (C), logits (T, B, C)
 * float32, written. Unit (t, b, j) is draw (t * B + b) * D + j of `bits` bits (1, 8 or 16) of the
 * Philox stream keyed by `key` from block `first_block`, kept when the draw is at least `threshold`;
 * with bits 0 every unit is kept and nothing is drawn. Each logit sums the float32 products
 * h[j] * weight[c, j] of the kept units in a fixed order, then scales and adds the bias: in increasing
 * j when h is per pass; in increasing groups of 4 units (build_table) when the passes share h. */
static PyObject *masked_output(PyObject *self, PyObject *args) {
    PyObject *objects[4];
    double scale;
    unsigned long long key, first;
    int bits, threshold;
    if (!PyArg_ParseTuple(args, "OOOOdKKii", &objects[0], &objects[1], &objects[2], &objects[3], &scale, &key,
                          &first, &bits, &threshold))
        return NULL;
    static const char *names[4] = {"h", "weight", "bias", "logits"};
    static const int dims[4] = {DIMS(2) | DIMS(3), DIMS(2), DIMS(1), DIMS(3)};
    Py_buffer views[4];
    for (int i = 0; i < 4; i++) {
        if (get_array(objects[i], &views[i], names[i], "f", dims[i], i == 3) < 0) {
            release_all(views, i);
            return NULL;
        }
    }
    const Py_ssize_t T = views[3].shape[0], B = views[3].shape[1], C = views[3].shape[2];
    const Py_ssize_t D = views[1].shape[1], *hs = views[0].shape;
    const int shared = views[0].ndim == 2;
    if (C < 1 || views[1].shape[0] != C || views[2].shape[0] != C
        || (shared ? (hs[0] != B || hs[1] != D) : (hs[0] != T || hs[1] != B || hs[2] != D))
        || !(bits == 0 || bits == 1 || bits == 8 || bits == 16) || threshold < 0 || threshold > (1 << bits)) {
        release_all(views, 4);
        PyErr_SetString(PyExc_ValueError,
                        "masked_output: h (B, D) or (T, B, D), weight (C, D), bias (C) and logits (T, B, C) "
                        "disagree, or bits is not 0, 1, 8 or 16 with 0 <= threshold <= 2^bits");
        return NULL;
    }
    const Py_ssize_t padded = (C + LANES - 1) / LANES * LANES, units = T * B * D;
    const Py_ssize_t blocks = (units * bits + 255) / 256;
    /* columns (D, padded): weight transposed, zero past C; table: see build_table */
    float *columns = calloc((size_t)(D * padded), sizeof(float));
    float *table = shared ? malloc(sizeof(float) * (size_t)((D + GROUP - 1) / GROUP * SUBSETS * padded)) : NULL;
    uint64_t *words = malloc(sizeof(uint64_t) * (size_t)(4 * blocks + 1));
    if (columns == NULL || (shared && table == NULL) || words == NULL) {
        free(columns);
        free(table);
        free(words);
        release_all(views, 4);
        return PyErr_NoMemory();
    }
    const float *h = views[0].buf, *weight = views[1].buf, *bias = views[2].buf;
    float *logits = views[3].buf;
    const float factor = (float)scale;
    const int gil_free = units * padded > GIL_FREE_STEPS;
    PyThreadState *thread = gil_free ? PyEval_SaveThread() : NULL;
    for (Py_ssize_t c = 0; c < C; c++)
        for (Py_ssize_t j = 0; j < D; j++) columns[j * padded + c] = weight[c * D + j];
    philox_blocks(key, first, blocks, words);
    for (Py_ssize_t b = 0; b < (shared ? B : 1); b++) { /* shared: input b's passes, with its table */
        if (shared) build_table(table, h + b * D, columns, D, padded);
        for (Py_ssize_t row = shared ? b : 0; row < T * B; row += shared ? B : 1) { /* row = t * B + b */
            float *out = logits + row * C;
            for (Py_ssize_t c0 = 0; c0 < padded; c0 += LANES) {
                float sum[LANES] = {0.0f};
                for (Py_ssize_t j0 = 0; j0 < D; j0 += 64) {
                    const int n = D - j0 < 64 ? (int)(D - j0) : 64;
                    const uint64_t mask = keep_mask(words, (uint64_t)(row * D + j0), n, bits, (unsigned)threshold);
                    if (shared) add_groups(sum, table + j0 / GROUP * SUBSETS * padded + c0, padded, mask, n);
                    else add_kept(sum, columns + j0 * padded + c0, h + row * D + j0, padded, mask);
                }
                for (Py_ssize_t c = c0; c < C && c < c0 + LANES; c++)
                    out[c] = bias[c] + factor * sum[c - c0];
            }
        }
    }
    if (gil_free) PyEval_RestoreThread(thread);
    free(columns);
    free(table);
    free(words);
    release_all(views, 4);
    Py_RETURN_NONE;
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
        if (get_array(objects[i], &views[i], names[i], formats[i], DIMS(dims[i]), i > 0) < 0) {
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
    if (get_array(objects[0], &views[0], "state", "d", DIMS(2), 0) < 0) return NULL;
    if (get_array(objects[1], &views[1], "stats", "d", DIMS(2), 1) < 0) {
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

/* temper(p, temperature, out): each row of p (B, C) float64 -> softmax(log p / temperature) into out
 * (B, C) float64, as (p / max p)^(1 / temperature) (libm's pow) divided by their sum, added left to
 * right; a class with p = 0 keeps 0. */
static PyObject *temper(PyObject *self, PyObject *args) {
    PyObject *objects[2];
    double temperature;
    if (!PyArg_ParseTuple(args, "OdO", &objects[0], &temperature, &objects[1])) return NULL;
    Py_buffer views[2];
    if (get_array(objects[0], &views[0], "p", "d", DIMS(2), 0) < 0) return NULL;
    if (get_array(objects[1], &views[1], "out", "d", DIMS(2), 1) < 0) {
        release_all(views, 1);
        return NULL;
    }
    const Py_ssize_t B = views[0].shape[0], C = views[0].shape[1];
    if (!(temperature > 0.0) || memcmp(views[1].shape, views[0].shape, 2 * sizeof(Py_ssize_t)) != 0) {
        release_all(views, 2);
        PyErr_SetString(PyExc_ValueError, "temper: p and out (B, C) disagree, or the temperature is not positive");
        return NULL;
    }
    const double exponent = 1.0 / temperature;
    for (Py_ssize_t b = 0; b < B; b++) {
        const double *row = (const double *)views[0].buf + b * C;
        double *out = (double *)views[1].buf + b * C, top = 0.0, total = 0.0;
        for (Py_ssize_t c = 0; c < C; c++) top = row[c] > top ? row[c] : top;
        for (Py_ssize_t c = 0; c < C; c++) {
            out[c] = pow(row[c] / top, exponent);
            total += out[c];
        }
        for (Py_ssize_t c = 0; c < C; c++) out[c] /= total;
    }
    release_all(views, 2);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"philox", philox, METH_VARARGS,
     "philox(key, first_block, words): the Philox4x64-10 stream keyed by key from block first_block "
     "into words (uint8, whole blocks of 32 bytes), as numpy.random.Philox's random_raw."},
    {"masked_output", masked_output, METH_VARARGS,
     "masked_output(h, weight, bias, logits, scale, key, first_block, bits, threshold): T passes of "
     "dropout and the output layer into logits (T, B, C) float32."},
    {"accumulate", accumulate, METH_VARARGS,
     "accumulate(logits, state, probs): add the passes logits (t, B, C) float32 to state (B, 2 + 3C) "
     "float64, writing each pass's softmax into probs (t, B, C) float64."},
    {"finish", finish, METH_VARARGS,
     "finish(state, stats): the statistics of each input's passes into stats (B, 2C + 4) float64."},
    {"temper", temper, METH_VARARGS,
     "temper(p, temperature, out): softmax(log p / temperature) of each row of p (B, C) float64 into out."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "models._kernels",
                                    "The compiled parts of MC dropout: masks, the output layer and the statistics.", -1, methods};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
