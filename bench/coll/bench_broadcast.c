/* bench/coll/bench_broadcast.c: broadcast from rank 0 for atom-coll-bench. */
#include "bench/coll/coll_bench.h"

static void counts(size_t size, int n, size_t *send, size_t *recv)
{
    (void)n;
    *send = *recv = size / sizeof(float);
}

static void fill(float *send, size_t sc, float *recv, size_t rc, int rank, int n)
{
    (void)send, (void)sc, (void)n;
    for (size_t i = 0; i < rc; i++)
        recv[i] = rank == 0 ? coll_bench_value(0, i) : -1.0f;
}

static size_t check(const float *recv, size_t rc, int rank, int n)
{
    (void)rank, (void)n;
    size_t wrong = 0;
    for (size_t i = 0; i < rc; i++)
        wrong += recv[i] != coll_bench_value(0, i);
    return wrong;
}

static int run(coll_group *g, float *send, float *recv, size_t sc, size_t rc, coll_err *err)
{
    (void)send, (void)sc;
    return coll_broadcast(g, recv, rc, COLL_F32, 0, err);
}

static int run_mpi(MPI_Comm comm, float *send, float *recv, size_t sc, size_t rc)
{
    (void)send, (void)sc;
    return MPI_Bcast(recv, (int)rc, MPI_FLOAT, 0, comm);
}

static double factor(int n) { (void)n; return 1.0; }

const coll_bench_op coll_bench_broadcast = {"broadcast", counts, fill, check, run, run_mpi, factor};
