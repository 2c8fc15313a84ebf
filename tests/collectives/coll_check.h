/* tests/collectives/coll_check.h: the checks of the multi-rank collectives tests. A failed check
 * prints its rank, host and line and ends the whole job with a non-zero status (MPI_Abort), so
 * one rank's mismatch cannot leave the others waiting. */
#ifndef ATOM_TEST_COLL_CHECK_H
#define ATOM_TEST_COLL_CHECK_H

#include <mpi.h>
#include <stdio.h>

#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            int r_;                                                                            \
            MPI_Comm_rank(MPI_COMM_WORLD, &r_);                                                \
            fprintf(stderr, "FAIL rank %d %s:%d: %s: ", r_, __FILE__, __LINE__, #cond);        \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fprintf(stderr, "\n");                                                             \
            fflush(stderr);                                                                    \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                      \
        }                                                                                      \
    } while (0)

/* A collectives call that must succeed; err's message is printed when it does not. */
#define CHECK_OK(call) CHECK((call) == 0, "%s", err.msg)

#endif
