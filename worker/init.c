/* worker/init.c: the reference initialisation of this rank's shard. Every element's value is a
 * function of (seed, parameter index, the element's GLOBAL index) only, so the weights are the
 * same whatever the TP x DP layout: each local element is mapped back to its global position
 * through the parameter's hyperslab. Values are computed on the host and uploaded, so the CUDA
 * backend needs no generator of its own.
 */
#include <math.h>
#include <stdlib.h>

#include "worker/kernels.h"
#include "worker/model_internal.h"

int atom_model_init_weights(atom_model *m, uint64_t seed, atom_err *err)
{
    const atom_model_cfg *c = &m->opts.cfg;
    float *host = malloc((size_t)m->table.total * sizeof(float));
    if (!host)
        return atom_errf(err, "model: out of memory for initial weights");
    float std = 0.02f;
    float std_proj = 0.02f / sqrtf(2.0f * (float)c->layers); /* the residual projections */
    for (int id = 0; id < ATOM_N_PARAMS; id++) {
        const atom_param *p = &m->table.params[id];
        float *dst = host + p->offset;
        for (int64_t i = 0; i < p->numel; i++) {
            float v;
            switch ((atom_param_id)id) {
            case ATOM_P_LN1W:
            case ATOM_P_LN2W:
            case ATOM_P_LNFW:
                v = 1.0f;
                break;
            case ATOM_P_WTE:
            case ATOM_P_WPE:
            case ATOM_P_QKVW:
            case ATOM_P_FCW: {
                int64_t g = atom_param_global_index(p, i);
                /* padded vocabulary rows stay zero */
                if (id == ATOM_P_WTE && g / p->shape[1] >= c->vocab)
                    v = 0.0f;
                else
                    v = std * atom_rng_normal(seed, (uint64_t)id, (uint64_t)g);
                break;
            }
            case ATOM_P_ATTPROJW:
            case ATOM_P_FCPROJW:
                v = std_proj * atom_rng_normal(seed, (uint64_t)id,
                                               (uint64_t)atom_param_global_index(p, i));
                break;
            default:
                v = 0.0f; /* biases and LayerNorm biases */
                break;
            }
            dst[i] = v;
        }
    }
    int rc = atom_model_upload(m, ATOM_BUF_PARAMS, host, err);
    free(host);
    if (rc != 0)
        return -1;
    m->be->zero(m->grads, m->table.total);
    m->be->zero(m->adam_m, m->table.total);
    m->be->zero(m->adam_v, m->table.total);
    m->adam_steps = 0;
    return 0;
}
