/* worker/params.c: the parameter table, built in one place: for every parameter of the reference
 * (in its order) the global shape, this tensor-parallel rank's shard as an HDF5-style hyperslab
 * of it, the shard's place in the flat buffers, and whether it is split and decayed.
 */
#include <string.h>

#include "worker/model.h"

/* How a parameter is split across the TP group. */
typedef enum {
    SPLIT_NONE,    /* replicated */
    SPLIT_ROWS,    /* one contiguous block of `dim` per rank (wte's rows, fcw's rows, ...) */
    SPLIT_QKV,     /* three blocks of `dim`, one in each of q, k and v */
} split_kind;

typedef struct param_desc {
    const char *name;
    int ndim;
    split_kind split;
    int split_dim;
    bool decay;
    bool per_layer;
} param_desc;

static const param_desc DESCS[ATOM_N_PARAMS] = {
    [ATOM_P_WTE] = {"wte", 2, SPLIT_ROWS, 0, true, false},
    [ATOM_P_WPE] = {"wpe", 2, SPLIT_NONE, 0, true, false},
    [ATOM_P_LN1W] = {"ln1w", 2, SPLIT_NONE, 0, false, true},
    [ATOM_P_LN1B] = {"ln1b", 2, SPLIT_NONE, 0, false, true},
    [ATOM_P_QKVW] = {"qkvw", 3, SPLIT_QKV, 1, true, true},
    [ATOM_P_QKVB] = {"qkvb", 2, SPLIT_QKV, 1, false, true},
    [ATOM_P_ATTPROJW] = {"attprojw", 3, SPLIT_ROWS, 2, true, true},
    [ATOM_P_ATTPROJB] = {"attprojb", 2, SPLIT_NONE, 0, false, true},
    [ATOM_P_LN2W] = {"ln2w", 2, SPLIT_NONE, 0, false, true},
    [ATOM_P_LN2B] = {"ln2b", 2, SPLIT_NONE, 0, false, true},
    [ATOM_P_FCW] = {"fcw", 3, SPLIT_ROWS, 1, true, true},
    [ATOM_P_FCB] = {"fcb", 2, SPLIT_ROWS, 1, false, true},
    [ATOM_P_FCPROJW] = {"fcprojw", 3, SPLIT_ROWS, 2, true, true},
    [ATOM_P_FCPROJB] = {"fcprojb", 2, SPLIT_NONE, 0, false, true},
    [ATOM_P_LNFW] = {"lnfw", 1, SPLIT_NONE, 0, false, false},
    [ATOM_P_LNFB] = {"lnfb", 1, SPLIT_NONE, 0, false, false},
};

static void global_shape(atom_param_id id, const atom_model_cfg *cfg, int64_t shape[3])
{
    int64_t L = cfg->layers, C = cfg->channels, T = cfg->context;
    int64_t Vp = atom_padded_vocab(cfg->vocab);
    switch (id) {
    case ATOM_P_WTE: shape[0] = Vp; shape[1] = C; break;
    case ATOM_P_WPE: shape[0] = T; shape[1] = C; break;
    case ATOM_P_QKVW: shape[0] = L; shape[1] = 3 * C; shape[2] = C; break;
    case ATOM_P_QKVB: shape[0] = L; shape[1] = 3 * C; break;
    case ATOM_P_ATTPROJW: shape[0] = L; shape[1] = C; shape[2] = C; break;
    case ATOM_P_FCW: shape[0] = L; shape[1] = 4 * C; shape[2] = C; break;
    case ATOM_P_FCB: shape[0] = L; shape[1] = 4 * C; break;
    case ATOM_P_FCPROJW: shape[0] = L; shape[1] = C; shape[2] = 4 * C; break;
    case ATOM_P_LNFW:
    case ATOM_P_LNFB: shape[0] = C; break;
    default: shape[0] = L; shape[1] = C; break; /* the (L, C) vectors */
    }
}

int atom_param_table_build(atom_param_table *table, const atom_model_cfg *cfg, int tp_rank,
                           int tp_size, atom_err *err)
{
    if (cfg->layers < 1 || cfg->channels < 1 || cfg->heads < 1 || cfg->vocab < 1 ||
        cfg->context < 1)
        return atom_errf(err, "model: every dimension must be positive (L=%d C=%d NH=%d V=%d T=%d)",
                         cfg->layers, cfg->channels, cfg->heads, cfg->vocab, cfg->context);
    if (cfg->channels % cfg->heads != 0)
        return atom_errf(err, "model: channels %d is not a multiple of heads %d", cfg->channels,
                         cfg->heads);
    if (tp_size < 1 || tp_rank < 0 || tp_rank >= tp_size)
        return atom_errf(err, "model: tensor rank %d of %d is out of range", tp_rank, tp_size);
    if (cfg->heads % tp_size != 0)
        return atom_errf(err, "model: %d heads do not split over tensor size %d", cfg->heads,
                         tp_size);
    int64_t Vp = atom_padded_vocab(cfg->vocab);
    if (Vp % tp_size != 0)
        return atom_errf(err, "model: padded vocabulary %lld does not split over tensor size %d",
                         (long long)Vp, tp_size);

    memset(table, 0, sizeof *table);
    int64_t offset = 0;
    for (int id = 0; id < ATOM_N_PARAMS; id++) {
        const param_desc *d = &DESCS[id];
        atom_param *p = &table->params[id];
        p->name = d->name;
        p->ndim = d->ndim;
        p->decay = d->decay;
        p->per_layer = d->per_layer;
        p->tp_split = d->split != SPLIT_NONE && tp_size > 1;
        global_shape((atom_param_id)id, cfg, p->shape);
        int64_t numel = 1;
        for (int k = 0; k < d->ndim; k++) {
            p->start[k] = 0;
            p->stride[k] = 1;
            p->count[k] = 1;
            p->block[k] = p->shape[k];
            p->local_shape[k] = p->shape[k];
        }
        if (d->split == SPLIT_ROWS) {
            int k = d->split_dim;
            int64_t part = p->shape[k] / tp_size;
            p->start[k] = tp_rank * part;
            p->block[k] = part;
            p->local_shape[k] = part;
        } else if (d->split == SPLIT_QKV) {
            /* q, k and v each span C rows; this rank holds the C/P rows of its heads in each */
            int k = d->split_dim;
            int64_t C = p->shape[k] / 3, part = C / tp_size;
            p->start[k] = tp_rank * part;
            p->stride[k] = C;
            p->count[k] = 3;
            p->block[k] = part;
            p->local_shape[k] = 3 * part;
        }
        for (int k = 0; k < d->ndim; k++)
            numel *= p->local_shape[k];
        p->offset = offset;
        p->numel = numel;
        offset += numel;
    }
    table->total = offset;
    return 0;
}

int64_t atom_param_global_index(const atom_param *p, int64_t i)
{
    int64_t coord[ATOM_PARAM_MAX_DIMS];
    for (int k = p->ndim - 1; k >= 0; k--) {
        int64_t c = i % p->local_shape[k];
        i /= p->local_shape[k];
        coord[k] = p->start[k] + (c / p->block[k]) * p->stride[k] + c % p->block[k];
    }
    int64_t g = 0;
    for (int k = 0; k < p->ndim; k++)
        g = g * p->shape[k] + coord[k];
    return g;
}
