/* worker/optimizer.c: the global gradient norm and the AdamW step over this rank's shard
 * (docs/model.md, "Optimizer").
 */
#include <math.h>

#include "worker/model_internal.h"

int atom_model_grad_norm(atom_model *m, double *norm, atom_err *err)
{
    /* A replicated parameter has the same gradient on every TP rank: count it on rank 0 only,
     * so the sum over the group counts every element of the model once. */
    double local = 0.0;
    for (int id = 0; id < ATOM_N_PARAMS; id++) {
        const atom_param *p = &m->table.params[id];
        if (!p->tp_split && m->opts.tp_rank != 0)
            continue;
        double s = 0.0;
        m->be->sum_squares(&s, m->grads + p->offset, p->numel);
        local += s;
    }
    if (m->opts.tp_size > 1) {
        if (!m->opts.tensor_group)
            return atom_errf(err, "model: tensor size %d but no tensor group for the grad norm",
                             m->opts.tp_size);
        /* the collectives reduce float32: send the double as a high and a low part */
        float parts[2];
        parts[0] = (float)local;
        parts[1] = (float)(local - (double)parts[0]);
        if (atom_model_sum_scalars(m, m->opts.tensor_group, parts, 2, err) != 0)
            return -1;
        local = (double)parts[0] + (double)parts[1];
    }
    *norm = sqrt(local);
    return 0;
}

int atom_model_adamw_step(atom_model *m, float lr, float weight_decay, float grad_multiplier,
                          atom_err *err)
{
    (void)err;
    m->adam_steps++;
    float b1c = 1.0f - powf(ATOM_ADAM_BETA1, (float)m->adam_steps);
    float b2c = 1.0f - powf(ATOM_ADAM_BETA2, (float)m->adam_steps);
    for (int id = 0; id < ATOM_N_PARAMS; id++) {
        const atom_param *p = &m->table.params[id];
        m->be->adamw(m->params + p->offset, m->grads + p->offset, m->adam_m + p->offset,
                     m->adam_v + p->offset, p->numel, lr, ATOM_ADAM_BETA1, ATOM_ADAM_BETA2,
                     ATOM_ADAM_EPS, p->decay ? weight_decay : 0.0f, b1c, b2c, grad_multiplier);
    }
    return 0;
}
