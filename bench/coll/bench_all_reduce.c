/* bench/coll/bench_all_reduce.c: all-reduce (sum, in place) for atom-coll-bench. */
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
        recv[i] = coll_bench_value(rank, i);
}

static size_t check(const float *recv, size_t rc, int rank, int n)
{
    (void)rank;
    size_t wrong = 0;
    for (size_t i = 0; i < rc; i++) {
        float want = 0;
        for (int r = 0; r < n; r++)
            want += coll_bench_value(r, i);
        wrong += recv[i] != want;
    }
    return wrong;
}

static int run(coll_group *g, float *send, float *recv, size_t sc, size_t rc, coll_err *err)
{
    (void)send, (void)sc;
    return coll_all_reduce(g, recv, rc, COLL_F32, COLL_SUM, err);
}

static int run_mpi(MPI_Comm comm, float *send, float *recv, size_t sc, size_t rc)
{
    (void)send, (void)sc;
    return MPI_Allreduce(MPI_IN_PLACE, recv, (int)rc, MPI_FLOAT, MPI_SUM, comm);
}

/* each rank sends and receives 2(n-1)/n of the data in a ring */
static double factor(int n) { return 2.0 * (n - 1) / n; }

const coll_bench_op coll_bench_all_reduce = {"all_reduce", counts, fill, check, run, run_mpi, factor};
