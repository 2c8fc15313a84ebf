/* tests/worker/hyperslab.h: the global row-major indices an HDF5-style hyperslab selects, in the
 * order HDF5 reads them into a contiguous buffer (for each dim: start + c*stride + b over
 * c < count, b < block). Written apart from worker/init.c's mapping so the tests check the
 * parameter table's hyperslabs independently. Returns NULL when the selection does not hold
 * exactly numel elements.
 */
#ifndef ATOM_TEST_HYPERSLAB_H
#define ATOM_TEST_HYPERSLAB_H

#include <stdint.h>
#include <stdlib.h>

#include "worker/model.h"

static inline int64_t *hyperslab_indices(const atom_param *p)
{
    int64_t n = p->numel;
    int64_t *out = malloc((size_t)n * sizeof(int64_t));
    int64_t dims[3] = {1, 1, 1}, st[3] = {0, 0, 0}, sd[3] = {1, 1, 1}, ct[3] = {1, 1, 1},
            bk[3] = {1, 1, 1};
    int pad = 3 - p->ndim;
    for (int k = 0; k < p->ndim; k++) {
        dims[pad + k] = p->shape[k];
        st[pad + k] = p->start[k];
        sd[pad + k] = p->stride[k];
        ct[pad + k] = p->count[k];
        bk[pad + k] = p->block[k];
    }
    int64_t i = 0;
    for (int64_t c0 = 0; c0 < ct[0]; c0++)
        for (int64_t b0 = 0; b0 < bk[0]; b0++)
            for (int64_t c1 = 0; c1 < ct[1]; c1++)
                for (int64_t b1 = 0; b1 < bk[1]; b1++)
                    for (int64_t c2 = 0; c2 < ct[2]; c2++)
                        for (int64_t b2 = 0; b2 < bk[2]; b2++) {
                            int64_t g0 = st[0] + c0 * sd[0] + b0, g1 = st[1] + c1 * sd[1] + b1,
                                    g2 = st[2] + c2 * sd[2] + b2;
                            if (i == n) {
                                free(out);
                                return NULL;
                            }
                            out[i++] = (g0 * dims[1] + g1) * dims[2] + g2;
                        }
    if (i != n) {
        free(out);
        return NULL;
    }
    return out;
}

#endif
