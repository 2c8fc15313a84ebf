/* bench/coll/coll_bench.h: what each collective of atom-coll-bench fills in for the shared
 * driver (coll_bench.c), one small file per operation, as nccl-tests does: its element counts
 * for a size, the data every rank starts with, the expected result, the bus-bandwidth factor,
 * and two ways to run it: atom's collectives and Open MPI's own blocking call, side by side. */
#ifndef ATOM_COLL_BENCH_H
#define ATOM_COLL_BENCH_H

#include <mpi.h>
#include <stddef.h>

#include "collectives/collectives.h"

typedef struct coll_bench_op {
    const char *name;
    /* size: bytes of the larger buffer (as nccl-tests count them); sets the element counts */
    void (*counts)(size_t size, int nranks, size_t *send_count, size_t *recv_count);
    /* host data of rank before the operation (recv may be filled with a poison value) */
    void (*fill)(float *send, size_t send_count, float *recv, size_t recv_count, int rank, int nranks);
    /* elements of recv that differ from the expected result */
    size_t (*check)(const float *recv, size_t recv_count, int rank, int nranks);
    int (*run)(coll_group *g, float *send, float *recv, size_t send_count, size_t recv_count,
               coll_err *err);
    int (*run_mpi)(MPI_Comm comm, float *send, float *recv, size_t send_count, size_t recv_count);
    /* busbw = algbw * factor: what each link carries, comparable across rank counts */
    double (*busbw_factor)(int nranks);
} coll_bench_op;

extern const coll_bench_op coll_bench_all_reduce;
extern const coll_bench_op coll_bench_reduce_scatter;
extern const coll_bench_op coll_bench_all_gather;
extern const coll_bench_op coll_bench_broadcast;

/* The value rank r holds at element i: small integers, so float sums are exact. */
static inline float coll_bench_value(int rank, size_t i) { return (float)((rank * 5 + (int)(i % 61)) % 32); }

/* The fill of the out-of-place operations (all-gather, reduce-scatter): send holds rank's values,
 * recv the poison value -1. */
void coll_bench_fill_send(float *send, size_t send_count, float *recv, size_t recv_count, int rank,
                          int nranks);
/* Their bus-bandwidth factor: each rank sends or receives all blocks but its own. */
double coll_bench_factor_all_but_one(int nranks);

#endif
