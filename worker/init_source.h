/* worker/init_source.h: the spec's init section (configs/spec-reference.md): the weights a job
 * starts from when its own checkpoint folder holds no checkpoint yet: another run's checkpoint
 * (weights, or weights and AdamW state), or a safetensors file under GPT-2's names (what `atomctl
 * ckpt export` writes, and Hugging Face's GPT-2 files). Any TP x DP layout loads any source: a
 * checkpoint through the checkpoints module, a safetensors file by every rank reading the
 * elements of its own shard.
 */
#ifndef ATOM_WORKER_INIT_SOURCE_H
#define ATOM_WORKER_INIT_SOURCE_H

#include <mpi.h>
#include <stdbool.h>
#include <stdint.h>

#include "checkpoints/checkpoints.h"
#include "common/common.h"
#include "worker/model.h"

typedef struct atom_init_result {
    int64_t step;        /* the step training continues after: 0 unless init.resume_step */
    int64_t adam_steps;  /* AdamW's bias-correction count to set */
    bool moments;        /* the tensors' adam_m and adam_v hold loaded moments; else zero them */
    char source[ATOM_PATH_MAX + 64]; /* the file loaded, for the log */
} atom_init_result;

/* Loads spec->init's source into tensors (table order; host memory), the shards of `table`.
 * Collective over comm for a checkpoint; a safetensors file needs no collective. Errors name
 * the source and, for a shape that does not match, the tensor, the shape expected and the one
 * found. Returns 0 with res->source "" when the spec has no init source. */
int atom_init_from_spec(const atom_spec *spec, const atom_param_table *table,
                        atom_ckpt_tensor *tensors, MPI_Comm comm, atom_init_result *res,
                        atom_err *err);

#endif
