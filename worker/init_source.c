/* worker/init_source.c: the spec's init section (init_source.h): weights from another run's
 * checkpoint, or from a safetensors file under GPT-2's names, into this rank's shard.
 *
 * GPT-2's names and layouts (docs/model.md): per-layer tensors are h.L.*, one per layer of
 * atom's stacked (L, ...) parameters; GPT-2's Conv1D weights (c_attn, c_proj, c_fc) are stored
 * (in, out), the transpose of atom's (out, in); wte holds the V real rows (atom's padded rows
 * past V stay zero); the LM head is wte (lm_head.weight, when a file has it, is not read). Names
 * are taken with or without the "transformer." prefix (ckpt export writes it, Hugging Face's
 * gpt2 files leave it out).
 */
#include "worker/init_source.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct gpt2_name {
    const char *fmt;  /* the name; %d is the layer */
    bool transpose;   /* Conv1D: stored (in, out) */
} gpt2_name;

static const gpt2_name GPT2_NAMES[ATOM_N_PARAMS] = {
    [ATOM_P_WTE] = {"wte.weight", false},
    [ATOM_P_WPE] = {"wpe.weight", false},
    [ATOM_P_LN1W] = {"h.%d.ln_1.weight", false},
    [ATOM_P_LN1B] = {"h.%d.ln_1.bias", false},
    [ATOM_P_QKVW] = {"h.%d.attn.c_attn.weight", true},
    [ATOM_P_QKVB] = {"h.%d.attn.c_attn.bias", false},
    [ATOM_P_ATTPROJW] = {"h.%d.attn.c_proj.weight", true},
    [ATOM_P_ATTPROJB] = {"h.%d.attn.c_proj.bias", false},
    [ATOM_P_LN2W] = {"h.%d.ln_2.weight", false},
    [ATOM_P_LN2B] = {"h.%d.ln_2.bias", false},
    [ATOM_P_FCW] = {"h.%d.mlp.c_fc.weight", true},
    [ATOM_P_FCB] = {"h.%d.mlp.c_fc.bias", false},
    [ATOM_P_FCPROJW] = {"h.%d.mlp.c_proj.weight", true},
    [ATOM_P_FCPROJB] = {"h.%d.mlp.c_proj.bias", false},
    [ATOM_P_LNFW] = {"ln_f.weight", false},
    [ATOM_P_LNFB] = {"ln_f.bias", false},
};

/* ---- from a checkpoint ---------------------------------------------------------------- */

static int load_checkpoint(const atom_spec *spec, atom_ckpt_tensor *tensors, MPI_Comm comm,
                           atom_init_result *res, atom_err *err)
{
    const char *src = spec->init.checkpoint;
    struct stat st;
    bool folder = stat(src, &st) == 0 && S_ISDIR(st.st_mode);
    atom_ckpt_meta meta;
    memset(&meta, 0, sizeof meta);
    atom_ckpt_err cerr;
    int rc;
    if (folder) {
        rc = atom_ckpt_load_latest(src, comm, tensors, ATOM_N_PARAMS, &meta, res->source,
                                   sizeof res->source, &cerr);
        if (rc == 1)
            return atom_errf(err, "init.checkpoint %s holds no committed checkpoint", src);
    } else {
        snprintf(res->source, sizeof res->source, "%s", src);
        rc = atom_ckpt_load(src, comm, tensors, ATOM_N_PARAMS, &meta, true, &cerr);
    }
    if (rc != 0)
        return atom_errf(err, "init.checkpoint %s: %s", src, cerr.msg);
    int64_t step = meta.step, vocab = meta.vocab;
    atom_ckpt_meta_free(&meta);
    if (vocab != spec->model.vocab)
        return atom_errf(err, "init.checkpoint %s: its vocabulary is %lld tokens, this job's "
                              "model.vocab is %d", res->source, (long long)vocab,
                         spec->model.vocab);
    if (spec->init.resume_step && (step < 0 || step > spec->training.steps))
        return atom_errf(err, "init.checkpoint %s is at step %lld, past this job's "
                              "training.steps (%lld): nothing to resume", res->source,
                         (long long)step, (long long)spec->training.steps);
    res->moments = spec->init.load == ATOM_INIT_WEIGHTS_OPTIMIZER;
    res->adam_steps = res->moments ? step : 0;
    res->step = spec->init.resume_step ? step : 0;
    return 0;
}

/* ---- from safetensors ------------------------------------------------------------------ */

static void shape_text(char *buf, size_t size, int ndim, const int64_t *shape)
{
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < ndim && used < size; d++)
        used += (size_t)snprintf(buf + used, size - used, "%s%lld", d ? ", " : "",
                                 (long long)shape[d]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

/* The GPT-2 shape of parameter p (one layer of it), from atom's global shape. */
static int gpt2_shape(const atom_param *p, const atom_spec *spec, atom_param_id id,
                      int64_t *shape)
{
    int first = p->per_layer ? 1 : 0, ndim = p->ndim - first;
    for (int d = 0; d < ndim; d++)
        shape[d] = p->shape[first + d];
    if (GPT2_NAMES[id].transpose) {
        shape[0] = p->shape[2];
        shape[1] = p->shape[1];
    }
    if (id == ATOM_P_WTE)
        shape[0] = spec->model.vocab; /* the padded rows are atom's own */
    return ndim;
}

static const atom_st_tensor *find_tensor(const atom_safetensors *st, const char *name)
{
    char prefixed[160];
    snprintf(prefixed, sizeof prefixed, "transformer.%s", name);
    const atom_st_tensor *t = atom_safetensors_find(st, prefixed);
    return t ? t : atom_safetensors_find(st, name);
}

/* The source element of element `within` (row-major in one layer of p, atom's layout). */
static int64_t source_index(const atom_param *p, atom_param_id id, int64_t within)
{
    if (!GPT2_NAMES[id].transpose)
        return within; /* the same row-major order (wte's and wpe's rows have C columns) */
    int64_t rows = p->shape[1], cols = p->shape[2];
    return (within % cols) * rows + within / cols;
}

/* Reads one layer (or the whole of a parameter that is not per layer) of p's shard: local
 * elements [lo, hi) of dst, whose global index past layer_base is `within`. Reads the span of
 * source elements the shard touches, then places each. */
static int read_slice(const atom_safetensors *st, const atom_st_tensor *t, const atom_param *p,
                      atom_param_id id, int vocab, int64_t lo, int64_t hi, int64_t layer_size,
                      float *dst, float **buf, int64_t *buf_cap, atom_err *err)
{
    int64_t first = INT64_MAX, last = -1, C = p->shape[p->ndim - 1];
    for (int64_t i = lo; i < hi; i++) {
        int64_t within = atom_param_global_index(p, i) % layer_size;
        if (id == ATOM_P_WTE && within / C >= vocab)
            continue; /* a padded row */
        int64_t s = source_index(p, id, within);
        first = s < first ? s : first;
        last = s > last ? s : last;
    }
    if (last < 0) {
        memset(dst + lo, 0, (size_t)(hi - lo) * sizeof(float));
        return 0;
    }
    int64_t span = last - first + 1;
    if (span > *buf_cap) {
        float *grown = realloc(*buf, (size_t)span * sizeof(float));
        if (!grown)
            return atom_errf(err, "out of memory reading %s", t->name);
        *buf = grown;
        *buf_cap = span;
    }
    if (atom_safetensors_read(st, t, first, span, *buf, err) != 0)
        return -1;
    for (int64_t i = lo; i < hi; i++) {
        int64_t within = atom_param_global_index(p, i) % layer_size;
        dst[i] = id == ATOM_P_WTE && within / C >= vocab
                     ? 0.0f
                     : (*buf)[source_index(p, id, within) - first];
    }
    return 0;
}

static int load_param(const atom_safetensors *st, const atom_spec *spec, const atom_param *p,
                      atom_param_id id, float *dst, float **buf, int64_t *buf_cap, atom_err *err)
{
    const char *path = spec->init.safetensors;
    int layers = p->per_layer ? spec->model.layers : 1;
    int64_t layer_size = 1, want[ATOM_ST_MAX_DIMS];
    for (int d = p->per_layer ? 1 : 0; d < p->ndim; d++)
        layer_size *= p->shape[d];
    int ndim = gpt2_shape(p, spec, id, want);
    for (int l = 0; l < layers; l++) {
        char name[96];
        snprintf(name, sizeof name, GPT2_NAMES[id].fmt, l);
        const atom_st_tensor *t = find_tensor(st, name);
        if (!t)
            return atom_errf(err, "init.safetensors %s has no tensor %s (nor transformer.%s): "
                                  "GPT-2's names are expected (docs/model.md)", path, name, name);
        /* wpe may hold more positions than model.context: the first ones are taken */
        bool same = t->ndim == ndim;
        for (int d = 0; same && d < ndim; d++)
            same = t->shape[d] == want[d] || (id == ATOM_P_WPE && d == 0 && t->shape[d] > want[d]);
        if (!same) {
            char w[96], f[96];
            shape_text(w, sizeof w, ndim, want);
            shape_text(f, sizeof f, t->ndim, t->shape);
            return atom_errf(err, "init.safetensors %s: %s has shape %s, this job's model needs "
                                  "%s (model: layers %d, channels %d, heads %d, vocab %d, "
                                  "context %d)", path, t->name, f, w, spec->model.layers,
                             spec->model.channels, spec->model.heads, spec->model.vocab,
                             spec->model.context);
        }
        int64_t per = p->numel / layers;
        atom_err rerr;
        if (read_slice(st, t, p, id, spec->model.vocab, l * per, (l + 1) * per, layer_size, dst,
                       buf, buf_cap, &rerr) != 0)
            return atom_errf(err, "init.safetensors %s: %s", path, rerr.msg);
    }
    return 0;
}

static int load_safetensors(const atom_spec *spec, const atom_param_table *table,
                            atom_ckpt_tensor *tensors, atom_init_result *res, atom_err *err)
{
    atom_safetensors st;
    atom_err oerr;
    if (atom_safetensors_open(spec->init.safetensors, &st, &oerr) != 0)
        return atom_errf(err, "init.safetensors: %s", oerr.msg);
    snprintf(res->source, sizeof res->source, "%s", spec->init.safetensors);
    float *buf = NULL;
    int64_t cap = 0;
    int rc = 0;
    for (int id = 0; id < ATOM_N_PARAMS && rc == 0; id++)
        rc = load_param(&st, spec, &table->params[id], (atom_param_id)id, tensors[id].param, &buf,
                        &cap, err);
    free(buf);
    atom_safetensors_close(&st);
    res->step = res->adam_steps = 0;
    res->moments = false;
    return rc;
}

int atom_init_from_spec(const atom_spec *spec, const atom_param_table *table,
                        atom_ckpt_tensor *tensors, MPI_Comm comm, atom_init_result *res,
                        atom_err *err)
{
    memset(res, 0, sizeof *res);
    if (spec->init.checkpoint[0])
        return load_checkpoint(spec, tensors, comm, res, err);
    if (spec->init.safetensors[0])
        return load_safetensors(spec, table, tensors, res, err);
    return 0;
}
