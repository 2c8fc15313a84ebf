/* worker/model.h: the GPT model of docs/model.md as one rank's shard of it:
 * its parameter table, weight initialisation, forward and backward of one micro-batch with
 * Megatron-style tensor parallelism, the gradient norm and the AdamW step.
 *
 * One rank holds, for every parameter in the reference order, its tensor-parallel shard,
 * contiguously, in ONE flat float buffer. The gradients and both AdamW moments are flat buffers
 * of the same size and layout, so one parameter table describes all four: a checkpoint writes
 * the same hyperslabs of each, and the data-parallel bucket manager registers slices of the
 * gradient buffer by the same offsets.
 *
 * Communication: with tensor size 1 and data size 1 the model makes no collective calls at all.
 * Otherwise the caller passes the tensor-parallel and data-parallel groups of the collectives
 * module; the model does its two all-reduces per layer forward and backward over the tensor
 * group, and averages gradients over the data group through a bucket manager it registers
 * layer slices with, so the all-reduce overlaps the rest of the backward pass.
 *
 * Memory lives where the backend puts it (host for the CPU backend, device for CUDA); the
 * pointers below are the backend's, and atom_model_download / atom_model_upload move a whole
 * flat buffer to or from host memory (a checkpoint snapshot, a test).
 */
#ifndef ATOM_WORKER_MODEL_H
#define ATOM_WORKER_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "collectives/collectives.h"
#include "common/common.h"
#include "worker/backend.h"

/* ---- the parameter table -------------------------------------------------------------- */

/* The reference order: this is the order of the flat buffers. */
typedef enum atom_param_id {
    ATOM_P_WTE,      /* (Vp, C)     rows split across TP (vocab-parallel) */
    ATOM_P_WPE,      /* (T, C)      replicated */
    ATOM_P_LN1W,     /* (L, C)      replicated */
    ATOM_P_LN1B,     /* (L, C)      replicated */
    ATOM_P_QKVW,     /* (L, 3C, C)  column-parallel: the q, k and v rows of this rank's heads */
    ATOM_P_QKVB,     /* (L, 3C)     as qkvw */
    ATOM_P_ATTPROJW, /* (L, C, C)   row-parallel: the input columns of this rank's heads */
    ATOM_P_ATTPROJB, /* (L, C)      replicated, added once after the all-reduce */
    ATOM_P_LN2W,     /* (L, C)      replicated */
    ATOM_P_LN2B,     /* (L, C)      replicated */
    ATOM_P_FCW,      /* (L, 4C, C)  column-parallel */
    ATOM_P_FCB,      /* (L, 4C)     column-parallel */
    ATOM_P_FCPROJW,  /* (L, C, 4C)  row-parallel */
    ATOM_P_FCPROJB,  /* (L, C)      replicated, added once after the all-reduce */
    ATOM_P_LNFW,     /* (C)         replicated */
    ATOM_P_LNFB,     /* (C)         replicated */
    ATOM_N_PARAMS
} atom_param_id;

#define ATOM_PARAM_MAX_DIMS 3

/* One parameter as this rank holds it. The selection is an HDF5-style hyperslab of the global
 * tensor (start, stride, count, block per dim; H5Sselect_hyperslab's arguments), and the local
 * shard is the row-major order of the selected elements. Example: qkvw (L, 3C, C) on TP rank r
 * of P: dim 1 has start r*C/P, stride C, count 3, block C/P; the other dims select everything
 * (start 0, stride 1, count 1, block = the dim). */
typedef struct atom_param {
    const char *name;                         /* "wte", "qkvw", ... (reference names) */
    int ndim;                                 /* 1..3 */
    int64_t shape[ATOM_PARAM_MAX_DIMS];       /* global (unsplit) shape */
    int64_t local_shape[ATOM_PARAM_MAX_DIMS]; /* this rank's shard */
    int64_t start[ATOM_PARAM_MAX_DIMS];
    int64_t stride[ATOM_PARAM_MAX_DIMS];
    int64_t count[ATOM_PARAM_MAX_DIMS];
    int64_t block[ATOM_PARAM_MAX_DIMS];
    int64_t offset;  /* first element of the shard in the flat buffers */
    int64_t numel;   /* elements of the shard (product of local_shape) */
    bool tp_split;   /* false: every TP rank holds the whole tensor (count it once in norms) */
    bool decay;      /* weight decay applies (the 2-D weights: wte, wpe, qkvw, attprojw, fcw,
                        fcprojw) */
    bool per_layer;  /* dim 0 is the layer index: layer l's slice is numel/L elements at
                        offset + l*numel/L */
} atom_param;

typedef struct atom_param_table {
    atom_param params[ATOM_N_PARAMS];
    int64_t total;  /* elements of each flat buffer on this rank */
} atom_param_table;

/* Builds the table of rank tp_rank of tp_size. Fails when the shape does not split: heads and
 * Vp must be multiples of tp_size, C a multiple of heads. Needs no model and no memory. */
int atom_param_table_build(atom_param_table *table, const atom_model_cfg *cfg, int tp_rank,
                           int tp_size, atom_err *err);

/* The global row-major index of local element i of p's shard (through its hyperslab): the
 * initialisation keys its generator with it, init.safetensors reads the source element by it. */
int64_t atom_param_global_index(const atom_param *p, int64_t i);

/* ---- the model ------------------------------------------------------------------------ */

/* AdamW constants of the reference. */
#define ATOM_ADAM_BETA1 0.9f
#define ATOM_ADAM_BETA2 0.95f
#define ATOM_ADAM_EPS 1e-8f

typedef struct atom_model_opts {
    atom_model_cfg cfg;             /* the unsplit model (V, T, C, L, NH) */
    int max_batch;                  /* B: the largest micro-batch forward will see */
    const atom_backend *backend;    /* atom_backend_cpu(), or the CUDA one */
    int tp_rank, tp_size;           /* this rank's place in its tensor-parallel group */
    coll_group *tensor_group;       /* collectives' COLL_TENSOR group; NULL when tp_size == 1
                                       (a split shard without it can be initialised, stepped and
                                       copied, not run: forward and grad norm fail) */
    coll_group *data_group;         /* COLL_DATA group; NULL (or size 1): no gradient averaging */
    size_t bucket_bytes;            /* gradient bucket size for data parallelism (0: 4 MiB) */
    atom_precision precision;       /* bf16: the Linear matmuls' operands rounded to bf16
                                       (backend.h); everything else fp32 */
} atom_model_opts;

typedef struct atom_model atom_model;

/* Allocates parameters, gradients, moments (zeroed) and activations for max_batch. The
 * weights are zero until atom_model_init_weights. */
int atom_model_create(const atom_model_opts *opts, atom_model **out, atom_err *err);
void atom_model_free(atom_model *model);

/* Sets the weights from the reference initialisation: a counter-based generator keyed by
 * (seed, parameter index, GLOBAL element index), so the values do not depend on TP x DP.
 * Also zeroes gradients and moments and the AdamW step count. */
int atom_model_init_weights(atom_model *model, uint64_t seed, atom_err *err);

void atom_model_zero_grads(atom_model *model);

/* Forward and backward of one micro-batch. tokens is (B, T+1) on the host: inputs are
 * tokens[:, 0:T], targets tokens[:, 1:T+1]; every token must be < V. *loss is the mean
 * cross-entropy over the B*T targets (the same on every TP rank). Gradients ACCUMULATE:
 * grads += grad_scale * d(loss)/d(params), so grad_scale = 1/accumulation_steps gives the mean
 * over a step. When sync_grads is true (the last micro-batch of a step) the gradients are
 * averaged over the data group as the backward goes, and are final when this returns. */
int atom_model_forward_backward(atom_model *model, const int *tokens, int B, float grad_scale,
                                bool sync_grads, float *loss, atom_err *err);

/* Forward only (evaluation). loss may be NULL. Leaves this micro-batch's logits readable. */
int atom_model_forward(atom_model *model, const int *tokens, int B, float *loss, atom_err *err);

/* This rank's slice of the logits of the last atom_model_forward: (B, T, Vp/P), vocabulary
 * columns [tp_rank*Vp/P, (tp_rank+1)*Vp/P), copied to host memory. Padded columns hold their
 * raw value (zero weights give 0); they are excluded from the softmax. After
 * atom_model_forward_backward the buffer holds the logits' gradient instead. */
int atom_model_copy_logits(const atom_model *model, float *host, atom_err *err);

/* Global L2 norm of the gradients: this rank's shard, replicated parameters counted once per
 * TP group, summed over the TP group. Call after the DP average (identical on all replicas). */
int atom_model_grad_norm(atom_model *model, double *norm, atom_err *err);
/* Sums a few host floats (the step's loss, the stop flag, a norm) over a group of the model's
 * collectives context. The NCCL backend reduces device memory only, so the values travel through
 * a small buffer in the backend's memory; on the CPU that buffer is host memory too. */
#define ATOM_MODEL_MAX_SCALARS 8
int atom_model_sum_scalars(atom_model *model, coll_group *group, float *host, int n,
                           atom_err *err);

/* One AdamW step over this rank's shard with the reference constants, using
 * grads * grad_multiplier (the clipping factor min(1, clip / norm), or 1). Weight decay
 * applies to the 2-D weights only. Increments the step count used for bias correction. */
int atom_model_adamw_step(atom_model *model, float lr, float weight_decay, float grad_multiplier,
                          atom_err *err);

/* AdamW steps taken so far (the bias correction's t); set it when restoring a checkpoint. */
int64_t atom_model_adam_steps(const atom_model *model);
void atom_model_set_adam_steps(atom_model *model, int64_t steps);

const atom_param_table *atom_model_table(const atom_model *model);
const atom_model_opts *atom_model_options(const atom_model *model);

/* The four flat buffers (table->total floats each), in the backend's memory. */
typedef enum atom_model_buffer {
    ATOM_BUF_PARAMS,
    ATOM_BUF_GRADS,
    ATOM_BUF_ADAM_M,
    ATOM_BUF_ADAM_V
} atom_model_buffer;

float *atom_model_buffer_ptr(atom_model *model, atom_model_buffer which);
/* Whole-buffer copies between the backend's memory and the host (table->total floats). */
int atom_model_download(const atom_model *model, atom_model_buffer which, float *host,
                        atom_err *err);
int atom_model_upload(atom_model *model, atom_model_buffer which, const float *host,
                      atom_err *err);

#endif
