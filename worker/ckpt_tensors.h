/* worker/ckpt_tensors.h: the model's parameter table as the checkpoints module's tensor
 * descriptions (a name, the global shape, this rank's hyperslab), in one place for the training
 * loop's saves and restores and for atom-infer's loads at TP 1.
 */
#ifndef ATOM_WORKER_CKPT_TENSORS_H
#define ATOM_WORKER_CKPT_TENSORS_H

#include "checkpoints/checkpoints.h"
#include "worker/model.h"

/* Fills out[ATOM_N_PARAMS]: tensor i is parameter i of table, its param and moments pointing
 * at params + offset, adam_m + offset, adam_v + offset (flat host buffers of table->total). */
void atom_ckpt_tensors_of(const atom_param_table *table, float *params, float *adam_m,
                          float *adam_v, atom_ckpt_tensor *out);

#endif
