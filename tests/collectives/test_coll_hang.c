/* tests/collectives/test_coll_hang.c: the hang path. Every rank runs a few collectives on the
 * named group; then the last world rank never joins the next all-reduce (it naps instead), and
 * the others must end the job within the 2 s timeout with a message naming that rank and its
 * host. coll_hang_check.sh runs this under mpirun and reads the message and the exit status.
 *   test_coll_hang TENSOR_SIZE GROUP(world|tensor|data) */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "collectives/collectives.h"
#include "tests/collectives/coll_check.h"

int main(int argc, char **argv)
{
    int provided, wr, ws;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &wr);
    MPI_Comm_size(MPI_COMM_WORLD, &ws);
    CHECK(argc == 3, "usage: test_coll_hang TENSOR_SIZE GROUP");
    coll_group_id id = strcmp(argv[2], "tensor") == 0 ? COLL_TENSOR
                       : strcmp(argv[2], "data") == 0 ? COLL_DATA
                                                      : COLL_WORLD;
    coll_err err = {""};
    coll_config cfg = {.backend = COLL_BACKEND_MPI, .tensor_size = atoi(argv[1]),
                       .hang_timeout_s = 2.0, .hang_action = COLL_HANG_ABORT};
    coll_ctx *ctx;
    CHECK_OK(coll_open(&cfg, &ctx, &err));
    coll_group *g = coll_group_of(ctx, id);
    float buf[64];
    for (int i = 0; i < 3; i++) {
        for (int k = 0; k < 64; k++)
            buf[k] = 1.0f;
        CHECK_OK(coll_all_reduce(g, buf, 64, COLL_F32, COLL_SUM, &err));
        CHECK(buf[0] == (float)coll_group_size(g), "warm-up all-reduce");
    }
    if (wr == ws - 1) {
        /* Never joins: naps outside MPI until the job is ended for it. */
        struct timespec nap = {0, 100 * 1000 * 1000};
        for (int i = 0; i < 300; i++)
            nanosleep(&nap, NULL);
        fprintf(stderr, "rank %d: nobody ended the job\n", wr);
        return 0;
    }
    int rc = coll_all_reduce(g, buf, 64, COLL_F32, COLL_SUM, &err);
    /* Reached only when the group's all-reduce finished: in a group without the victim. */
    CHECK(rc == 0, "%s", err.msg);
    struct timespec nap = {0, 100 * 1000 * 1000};
    for (int i = 0; i < 300; i++) /* wait for the job to end, from elsewhere */
        nanosleep(&nap, NULL);
    coll_close(ctx);
    MPI_Finalize();
    return 0;
}
