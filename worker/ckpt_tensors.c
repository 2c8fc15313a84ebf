/* worker/ckpt_tensors.c: the parameter table as checkpoint tensors (ckpt_tensors.h). */
#include <string.h>

#include "worker/ckpt_tensors.h"

void atom_ckpt_tensors_of(const atom_param_table *table, float *params, float *adam_m,
                          float *adam_v, atom_ckpt_tensor *out)
{
    for (int i = 0; i < ATOM_N_PARAMS; i++) {
        const atom_param *p = &table->params[i];
        atom_ckpt_tensor *t = &out[i];
        memset(t, 0, sizeof *t);
        t->name = p->name;
        t->ndims = p->ndim;
        for (int d = 0; d < p->ndim; d++) {
            t->dims[d] = p->shape[d];
            t->sel[d] = (atom_ckpt_dimsel){p->start[d], p->stride[d], p->count[d], p->block[d]};
        }
        t->param = params + p->offset;
        t->adam_m = adam_m + p->offset;
        t->adam_v = adam_v + p->offset;
    }
}
