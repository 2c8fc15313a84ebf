/* tests/collectives/test_coll_hang.c: the hang path. Every rank runs a few collectives on the
 * named group; then the last world rank never joins the next all-reduce (it naps instead), and
 * the others must end the job within the 2 s timeout with a message naming that rank and its
 * host. coll_hang_check.sh runs this under mpirun and reads the message and the exit status.
 * With "return", the waiting ranks get the diagnosis back as an error instead (checked here);
 * the late rank then joins and gets an error too (the group is unusable after a hang), and the
 * job still ends cleanly.
 *   test_coll_hang TENSOR_SIZE GROUP(world|tensor|data) [return] */
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
    CHECK(argc == 3 || argc == 4, "usage: test_coll_hang TENSOR_SIZE GROUP [return]");
    int ret = argc == 4 && strcmp(argv[3], "return") == 0;
    coll_group_id id = strcmp(argv[2], "tensor") == 0 ? COLL_TENSOR
                       : strcmp(argv[2], "data") == 0 ? COLL_DATA
                                                      : COLL_WORLD;
    coll_err err = {""};
    coll_config cfg = {.backend = COLL_BACKEND_MPI, .tensor_size = atoi(argv[1]),
                       .hang_timeout_s = ret ? 1.0 : 2.0,
                       .hang_action = ret ? COLL_HANG_RETURN : COLL_HANG_ABORT};
    coll_ctx *ctx;
    CHECK_OK(coll_open(&cfg, &ctx, &err));
    coll_group *g = coll_group_of(ctx, id);
    float buf[64];
    /* The abort runs hang in MPI_Iallreduce (small), the return runs in atom's ring (large). */
    enum { BIG = 1 << 14 };
    static float big[BIG];
    for (int i = 0; i < 3; i++) {
        for (int k = 0; k < 64; k++)
            buf[k] = 1.0f;
        CHECK_OK(coll_all_reduce(g, buf, 64, COLL_F32, COLL_SUM, &err));
        CHECK(buf[0] == (float)coll_group_size(g), "warm-up all-reduce");
    }
    if (ret) {
        struct timespec nap = {0, 100 * 1000 * 1000};
        MPI_Comm waiters; /* every rank but the late one */
        MPI_Comm_split(MPI_COMM_WORLD, wr == ws - 1 ? MPI_UNDEFINED : 0, wr, &waiters);
        if (wr == ws - 1) {
            /* Joins late: after the others have given up waiting. */
            int others_done = 0;
            MPI_Request note;
            MPI_Irecv(&others_done, 1, MPI_INT, 0, 99, MPI_COMM_WORLD, &note);
            for (int flag = 0; !flag;) {
                nanosleep(&nap, NULL);
                MPI_Test(&note, &flag, MPI_STATUS_IGNORE);
            }
            /* The waiters abandoned their side of atom's ring when they gave up, so this rank's
             * all-reduce cannot finish either: it must end in an error, not hang. */
            CHECK(coll_all_reduce(g, big, BIG, COLL_F32, COLL_SUM, &err) == -1,
                  "the late all-reduce finished although its partners had given up");
            CHECK(strstr(err.msg, "hang: all_reduce on group ") != NULL, "message: %s", err.msg);
        } else {
            int rc = coll_all_reduce(g, big, BIG, COLL_F32, COLL_SUM, &err);
            int in_group = 0;
            for (int m = 0; m < coll_group_size(g); m++)
                in_group |= (id == COLL_WORLD ? m : id == COLL_TENSOR ? (wr / cfg.tensor_size) * cfg.tensor_size + m
                                                                      : m * cfg.tensor_size + wr % cfg.tensor_size) == ws - 1;
            if (in_group) {
                char host[MPI_MAX_PROCESSOR_NAME], want[MPI_MAX_PROCESSOR_NAME + 64];
                int len;
                MPI_Get_processor_name(host, &len);
                snprintf(want, sizeof want, "world rank %d (host %s, entered 3 on this group)", ws - 1, host);
                CHECK(rc == -1, "the all-reduce without rank %d returned 0", ws - 1);
                CHECK(strstr(err.msg, want) != NULL, "want \"%s\" in: %s", want, err.msg);
                CHECK(strstr(err.msg, "hang: all_reduce on group ") != NULL, "message: %s", err.msg);
                for (int r = 0; r < ws - 1; r++) {
                    snprintf(want, sizeof want, "world rank %d (host", r);
                    CHECK(strstr(err.msg, want) == NULL, "rank %d named as behind: %s", r, err.msg);
                }
            } else {
                CHECK_OK(rc);
            }
            /* every waiter has its answer before the late rank may join */
            int one = 1;
            MPI_Barrier(waiters);
            MPI_Comm_free(&waiters);
            if (wr == 0)
                MPI_Send(&one, 1, MPI_INT, ws - 1, 99, MPI_COMM_WORLD);
        }
        MPI_Barrier(MPI_COMM_WORLD);
        coll_close(ctx);
        if (wr == 0)
            printf("test_coll_hang return: ok\n");
        MPI_Finalize();
        return 0;
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
