/* worker/model_internal.h: the model's state, shared by the files that implement model.h
 * (model.c: create and forward/backward; init.c: weights; optimizer.c: norm and AdamW).
 * Nothing outside those files includes it.
 */
#ifndef ATOM_WORKER_MODEL_INTERNAL_H
#define ATOM_WORKER_MODEL_INTERNAL_H

#include "worker/model.h"

/* The activations one micro-batch keeps for its backward, and the backward's scratch.
 * N = B*T positions; Cl = C/P, Fl = 4C/P, Vl = Vp/P, NHl = NH/P this rank's share. */
typedef struct atom_activations {
    int *inputs;      /* (B, T) tokens */
    int *targets;     /* (B, T) */
    float *encoded;   /* (N, C) the residual stream entering layer 0 */
    float *ln1;       /* (L, N, C) */
    float *ln1_mean;  /* (L, N) */
    float *ln1_rstd;  /* (L, N) */
    float *qkv;       /* (L, N, 3Cl) */
    float *att;       /* (att_layers, B, NHl, T, T) softmax probabilities: every layer's, or
                         one layer's that the backward recomputes (att_layers) */
    int att_layers;   /* L when every layer's probabilities are kept, 1 when recomputed */
    float *atty;      /* (L, N, Cl) attention output, heads concatenated */
    float *res2;      /* (L, N, C) residual after attention */
    float *ln2;       /* (L, N, C) */
    float *ln2_mean;  /* (L, N) */
    float *ln2_rstd;  /* (L, N) */
    float *fch;       /* (L, N, Fl) before GELU */
    float *fch_gelu;  /* (L, N, Fl) after GELU */
    float *res3;      /* (L, N, C) residual after the MLP: the layer's output */
    float *lnf;       /* (N, C) */
    float *lnf_mean;  /* (N) */
    float *lnf_rstd;  /* (N) */
    float *logits;    /* (N, Vl); the backward overwrites it with dlogits */
    float *rowmax;    /* (N) */
    float *rowmax_all;/* (P, N) every TP rank's row maxima */
    float *ce_sums;   /* (2N) sum of exps, target logit */
    float *losses;    /* (N) */
    /* backward scratch */
    float *partial;   /* (N, C) a row-parallel matmul's output before its all-reduce */
    float *dresidual; /* (N, C) */
    float *dln;       /* (N, C) gradient into a LayerNorm's output */
    float *dfch_gelu; /* (N, Fl) gradient into the GELU's output */
    float *dfch;      /* (N, Fl) gradient into its input */
    float *dqkv;      /* (N, 3Cl) */
    float *datty;     /* (N, Cl) */
    float *datt;      /* (B, NHl, T, T) */
} atom_activations;

struct atom_model {
    atom_model_opts opts;
    const atom_backend *be;
    atom_param_table table;
    int Vp, Vl, vocab_start, vocab_valid; /* this rank's vocabulary slice and its real columns */
    int Cl, Fl, NHl, hs;
    float *params, *grads, *adam_m, *adam_v;
    int64_t adam_steps;
    atom_activations act;
    int last_B;                           /* micro-batch of the last forward */
    /* data parallelism: piece ids of the bucket manager */
    struct coll_buckets *buckets;         /* NULL without data parallelism */
    int piece_global[4];                  /* wte, wpe, lnfw, lnfb */
    int *piece_layer;                     /* (L, 12): the per-layer slices, in table order */
    /* data parallelism: the tied wte's embedding part, exchanged as rows (setup_buckets) */
    struct {
        int umax;         /* the most rows one step can touch: min(D * max_batch * T, Vl) */
        int nrows;        /* rows touched this step: |U| */
        int *mine;        /* (max_batch * T) backend: this rank's inputs, -1 past the micro-batch */
        int *all;         /* (D, max_batch * T) backend: every data rank's */
        int *rows;        /* (umax) backend: U, the local wte rows the group's tokens touch */
        int *slots;       /* (max_batch * T) backend: each of this rank's tokens' index in U, or -1 */
        float *grad;      /* (umax, C) backend: the embedding's gradient of U's rows */
        float *wpe_sink;  /* (C) backend: encoder_backward's dwpe when it only adds rows */
        int *host_all;    /* (D, max_batch * T) */
        int *host_rows;   /* (umax) */
        int *host_slots;  /* (max_batch * T) */
        int *host_index;  /* (Vl) a row's index in U, or -1; all -1 between steps */
    } emb;
    /* host scratch */
    float *host_losses;                   /* (N) */
    float *scalars;                       /* (ATOM_MODEL_MAX_SCALARS) backend memory */
};

/* The layer slice of a per-layer parameter in a flat buffer. */
static inline float *atom_layer_ptr(const atom_model *m, float *base, atom_param_id id, int l)
{
    const atom_param *p = &m->table.params[id];
    return base + p->offset + (int64_t)l * (p->numel / m->opts.cfg.layers);
}

static inline float *atom_param_ptr(const atom_model *m, float *base, atom_param_id id)
{
    return base + m->table.params[id].offset;
}

/* All-reduce (sum) over the tensor-parallel group; nothing when the group has one rank. */
int atom_model_tp_sum(atom_model *m, float *buf, size_t n, atom_err *err);

#endif
