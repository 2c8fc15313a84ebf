/* bench/coll/bench_reduce_scatter.c: reduce-scatter (sum) for atom-coll-bench; size is the send
 * buffer (n blocks). */
#include "bench/coll/coll_bench.h"

static void counts(size_t size, int n, size_t *send, size_t *recv)
{
    *recv = size / sizeof(float) / (size_t)n;
    *send = *recv * (size_t)n;
}

static size_t check(const float *recv, size_t rc, int rank, int n)
{
    size_t wrong = 0;
    for (size_t i = 0; i < rc; i++) {
        float want = 0;
        for (int r = 0; r < n; r++)
            want += coll_bench_value(r, (size_t)rank * rc + i);
        wrong += recv[i] != want;
    }
    return wrong;
}

static int run(coll_group *g, float *send, float *recv, size_t sc, size_t rc, coll_err *err)
{
    (void)sc;
    return coll_reduce_scatter(g, send, recv, rc, COLL_F32, COLL_SUM, err);
}

static int run_mpi(MPI_Comm comm, float *send, float *recv, size_t sc, size_t rc)
{
    (void)sc;
    return MPI_Reduce_scatter_block(send, recv, (int)rc, MPI_FLOAT, MPI_SUM, comm);
}

const coll_bench_op coll_bench_reduce_scatter = {"reduce_scatter", counts, coll_bench_fill_send, check, run, run_mpi,
                                         coll_bench_factor_all_but_one};
