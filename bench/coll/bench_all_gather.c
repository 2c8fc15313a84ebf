/* bench/coll/bench_all_gather.c: all-gather for atom-coll-bench; size is the receive buffer
 * (n blocks). */
#include "bench/coll/coll_bench.h"

static void counts(size_t size, int n, size_t *send, size_t *recv)
{
    *send = size / sizeof(float) / (size_t)n;
    *recv = *send * (size_t)n;
}

static size_t check(const float *recv, size_t rc, int rank, int n)
{
    (void)rank;
    size_t wrong = 0, block = rc / (size_t)n;
    for (size_t i = 0; i < rc; i++)
        wrong += recv[i] != coll_bench_value((int)(i / block), i % block);
    return wrong;
}

static int run(coll_group *g, float *send, float *recv, size_t sc, size_t rc, coll_err *err)
{
    (void)rc;
    return coll_all_gather(g, send, recv, sc, COLL_F32, err);
}

static int run_mpi(MPI_Comm comm, float *send, float *recv, size_t sc, size_t rc)
{
    (void)rc;
    return MPI_Allgather(send, (int)sc, MPI_FLOAT, recv, (int)sc, MPI_FLOAT, comm);
}

const coll_bench_op coll_bench_all_gather = {"all_gather", counts, coll_bench_fill_send, check, run, run_mpi,
                                         coll_bench_factor_all_but_one};
