/* tests/collectives/test_coll_ops.c: every collective of every group (world, tensor, data)
 * against a reference computed locally, for sizes 0, 1, odd and large, blocking and
 * non-blocking, with the group layout given on the command line:
 *   test_coll_ops TENSOR_SIZE [thread]
 * Values are small integers and halves, so float sums are exact and compared with ==. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "collectives/collectives.h"
#include "tests/collectives/coll_check.h"

static const size_t sizes[] = {0, 1, 7, 1023, 65537};
#define NSIZES (sizeof sizes / sizeof sizes[0])

/* What world rank wr contributes at element i. */
static float value(int wr, size_t i) { return (float)(wr + 1) * 0.5f + (float)(i % 13); }

/* World rank of member m of g: layout rank = dp * T + tp. */
static int member(coll_group *g, coll_group_id id, int T, int world_rank, int m)
{
    int dp = world_rank / T, tp = world_rank % T;
    (void)g;
    return id == COLL_WORLD ? m : id == COLL_TENSOR ? dp * T + m : m * T + tp;
}

static float ref_sum(coll_group *g, coll_group_id id, int T, int wr, size_t i)
{
    float s = 0;
    for (int m = 0; m < coll_group_size(g); m++)
        s += value(member(g, id, T, wr, m), i);
    return s;
}

int main(int argc, char **argv)
{
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    int wr, ws;
    MPI_Comm_rank(MPI_COMM_WORLD, &wr);
    MPI_Comm_size(MPI_COMM_WORLD, &ws);
    int T = argc > 1 ? atoi(argv[1]) : 1;
    int threaded = argc > 2 && strcmp(argv[2], "thread") == 0;
    coll_err err = {""};

    /* A layout that does not fit the world fails on every rank, before any collective. */
    coll_ctx *bad = NULL;
    coll_config bad_cfg = {.tensor_size = ws + 1};
    CHECK(coll_open(&bad_cfg, &bad, &err) == -1 && bad == NULL, "open with T=%d on %d ranks", ws + 1, ws);
    CHECK(strstr(err.msg, "does not divide") != NULL, "message: %s", err.msg);
    /* The build says whether NCCL is in (CMake's ATOM_HAVE_CUDA); the chooser must agree. */
    CHECK(coll_have_nccl() == ATOM_EXPECT_NCCL, "coll_have_nccl() = %d", coll_have_nccl());
    if (!coll_have_nccl()) {
        coll_config nccl_cfg = {.backend = COLL_BACKEND_NCCL, .tensor_size = T};
        CHECK(coll_open(&nccl_cfg, &bad, &err) == -1, "NCCL opened in a build without it");
    }

    coll_config cfg = {.backend = COLL_BACKEND_MPI, .tensor_size = T, .hang_timeout_s = 60,
                       .progress = threaded ? COLL_PROGRESS_THREAD : COLL_PROGRESS_POLL};
    coll_ctx *ctx = NULL;
    CHECK_OK(coll_open(&cfg, &ctx, &err));

    int64_t expect_counts[COLL_NGROUPS] = {0, 0, 0};
    size_t maxn = sizes[NSIZES - 1];
    float *buf = malloc((maxn * (size_t)ws + 1) * sizeof *buf);
    float *out = malloc((maxn * (size_t)ws + 1) * sizeof *out);

    for (int id = 0; id < COLL_NGROUPS; id++) {
        coll_group *g = coll_group_of(ctx, (coll_group_id)id);
        int n = coll_group_size(g), me = coll_group_rank(g);
        int want_n = id == COLL_WORLD ? ws : id == COLL_TENSOR ? T : ws / T;
        int want_me = id == COLL_WORLD ? wr : id == COLL_TENSOR ? wr % T : wr / T;
        CHECK(n == want_n && me == want_me, "group %s: size %d rank %d, want %d %d",
              coll_group_name(g), n, me, want_n, want_me);

        for (size_t s = 0; s < NSIZES; s++) {
            size_t cnt = sizes[s];
            /* all-reduce, sum and average */
            for (int op = COLL_SUM; op <= COLL_AVG; op++) {
                for (size_t i = 0; i < cnt; i++)
                    buf[i] = value(wr, i);
                CHECK_OK(coll_all_reduce(g, buf, cnt, COLL_F32, (coll_redop)op, &err));
                expect_counts[id]++;
                for (size_t i = 0; i < cnt; i++) {
                    float want = ref_sum(g, (coll_group_id)id, T, wr, i);
                    if (op == COLL_AVG)
                        want /= (float)n;
                    CHECK(buf[i] == want, "all_reduce %s op %d size %zu [%zu]: %g want %g",
                          coll_group_name(g), op, cnt, i, buf[i], want);
                }
            }
            /* reduce-scatter: block b of the send buffer is worth value(wr, b*cnt + i) */
            for (int op = COLL_SUM; op <= COLL_AVG; op++) {
                for (size_t i = 0; i < cnt * (size_t)n; i++)
                    buf[i] = value(wr, i);
                CHECK_OK(coll_reduce_scatter(g, buf, out, cnt, COLL_F32, (coll_redop)op, &err));
                expect_counts[id]++;
                for (size_t i = 0; i < cnt; i++) {
                    float want = ref_sum(g, (coll_group_id)id, T, wr, (size_t)me * cnt + i);
                    if (op == COLL_AVG)
                        want /= (float)n;
                    CHECK(out[i] == want, "reduce_scatter %s op %d size %zu [%zu]: %g want %g",
                          coll_group_name(g), op, cnt, i, out[i], want);
                }
            }
            /* all-gather */
            for (size_t i = 0; i < cnt; i++)
                buf[i] = value(wr, i);
            CHECK_OK(coll_all_gather(g, buf, out, cnt, COLL_F32, &err));
            expect_counts[id]++;
            for (int m = 0; m < n; m++)
                for (size_t i = 0; i < cnt; i++)
                    CHECK(out[(size_t)m * cnt + i] == value(member(g, (coll_group_id)id, T, wr, m), i),
                          "all_gather %s size %zu block %d [%zu]", coll_group_name(g), cnt, m, i);
            /* broadcast from every root */
            for (int root = 0; root < n; root++) {
                for (size_t i = 0; i < cnt; i++)
                    buf[i] = value(wr, i);
                CHECK_OK(coll_broadcast(g, buf, cnt, COLL_F32, root, &err));
                expect_counts[id]++;
                int from = member(g, (coll_group_id)id, T, wr, root);
                for (size_t i = 0; i < cnt; i++)
                    CHECK(buf[i] == value(from, i), "broadcast %s root %d size %zu [%zu]",
                          coll_group_name(g), root, cnt, i);
            }
        }
        CHECK_OK(coll_barrier(g, &err));
        expect_counts[id]++;
        /* int32 (token ids) is moved bit for bit by all-gather and broadcast; values whose bits
         * are NaNs as floats would not survive a float path that converts */
        {
            int32_t ids[5], all[5 * 4], want;
            for (int i = 0; i < 5; i++)
                ids[i] = (int32_t)0x7fc00001 + 1000 * wr + i;
            CHECK_OK(coll_all_gather(g, ids, all, 5, COLL_I32, &err));
            expect_counts[id]++;
            for (int m = 0; m < n; m++)
                for (int i = 0; i < 5; i++) {
                    want = (int32_t)0x7fc00001 + 1000 * member(g, (coll_group_id)id, T, wr, m) + i;
                    CHECK(all[m * 5 + i] == want, "all_gather int32 %s block %d [%d]: %d want %d",
                          coll_group_name(g), m, i, all[m * 5 + i], want);
                }
            CHECK_OK(coll_broadcast(g, ids, 5, COLL_I32, n - 1, &err));
            expect_counts[id]++;
            want = (int32_t)0x7fc00001 + 1000 * member(g, (coll_group_id)id, T, wr, n - 1);
            CHECK(ids[0] == want, "broadcast int32 %s: %d want %d", coll_group_name(g), ids[0], want);
            CHECK(coll_all_reduce(g, ids, 5, COLL_I32, COLL_SUM, &err) == -1 && strstr(err.msg, "int32"),
                  "int32 all_reduce: %s", err.msg);
        }
        /* bf16 is NCCL's only; the MPI backend says so instead of computing garbage */
        CHECK(coll_all_reduce(g, buf, 4, COLL_BF16, COLL_SUM, &err) == -1 && strstr(err.msg, "bf16"),
              "bf16 on MPI: %s", err.msg);
        CHECK(coll_broadcast(g, buf, 4, COLL_F32, n, &err) == -1, "broadcast from a root outside the group");
        /* more elements than MPI's int count: refused with the group, operation and rank named */
        CHECK(coll_all_reduce(g, buf, (size_t)1 << 31, COLL_F32, COLL_SUM, &err) == -1, "2^31 elements");
        char want_msg[128];
        snprintf(want_msg, sizeof want_msg, "all_reduce on group %s (rank %d)", coll_group_name(g), me);
        CHECK(strstr(err.msg, want_msg) && strstr(err.msg, "count limit"), "message: %s", err.msg);
        /* refused calls (this one, bf16, a bad root) never entered: the counts below say so */
        /* an error of MPI itself comes back naming the group, the operation, the rank and the
         * MPI call (MPI_IN_PLACE is not a valid receive buffer for an all-gather) */
        CHECK(coll_all_gather(g, buf, MPI_IN_PLACE, 2, COLL_F32, &err) == -1, "all_gather into MPI_IN_PLACE");
        snprintf(want_msg, sizeof want_msg, "all_gather on group %s (rank %d of %d, world rank %d, host ",
                 coll_group_name(g), me, n, wr);
        CHECK(strstr(err.msg, want_msg) && strstr(err.msg, "MPI_Iallgather failed: MPI_ERR_ARG"),
              "message: %s", err.msg);
        expect_counts[id]++; /* it passed atom's checks, so it entered */
    }

    /* Non-blocking: two all-reduces on different groups in flight while this rank "computes",
     * moved by coll_progress (or the thread), then waited for. */
    size_t big = 1 << 18;
    float *a = malloc(big * sizeof *a), *d = malloc(big * sizeof *d);
    for (size_t i = 0; i < big; i++) {
        a[i] = value(wr, i);
        d[i] = value(wr, i);
    }
    coll_group *world = coll_group_of(ctx, COLL_WORLD), *data = coll_group_of(ctx, COLL_DATA);
    /* a second one on the world group in flight at once, of another size */
    size_t big2 = big / 2 + 3;
    float *a2 = malloc(big2 * sizeof *a2);
    for (size_t i = 0; i < big2; i++)
        a2[i] = value(wr, i + 5);
    coll_req *ra, *rd, *ra2;
    CHECK_OK(coll_all_reduce_start(world, a, big, COLL_F32, COLL_SUM, &ra, &err));
    CHECK_OK(coll_all_reduce_start(data, d, big, COLL_F32, COLL_AVG, &rd, &err));
    CHECK_OK(coll_all_reduce_start(world, a2, big2, COLL_F32, COLL_AVG, &ra2, &err));
    expect_counts[COLL_WORLD] += 2;
    expect_counts[COLL_DATA]++;
    volatile double sink = 0;
    int done_a = 0, done_d = 0;
    /* Bounded by time, not by a count of rounds: a sanitizer build runs each round many times
     * slower, and 4 ranks share 2 cores. */
    double give_up = MPI_Wtime() + 60.0;
    while (!(done_a && done_d) && MPI_Wtime() < give_up) {
        for (int k = 0; k < 200; k++)
            sink += k * 0.5;
        CHECK_OK(coll_progress(ctx, &err));
        CHECK_OK(coll_test(ra, &done_a, &err));
        CHECK_OK(coll_test(rd, &done_d, &err));
    }
    CHECK(done_a && done_d, "non-blocking all-reduces did not finish while progressed");
    CHECK_OK(coll_wait(ra, &err));
    CHECK_OK(coll_wait(rd, &err));
    CHECK_OK(coll_wait(ra2, &err));
    for (size_t i = 0; i < big2; i++) {
        float want = ref_sum(world, COLL_WORLD, T, wr, i + 5) / (float)ws;
        CHECK(a2[i] == want, "second world average [%zu]: %g want %g", i, a2[i], want);
    }
    free(a2);
    for (size_t i = 0; i < big; i++) {
        CHECK(a[i] == ref_sum(world, COLL_WORLD, T, wr, i), "non-blocking world sum [%zu]", i);
        float want = ref_sum(data, COLL_DATA, T, wr, i) / (float)coll_group_size(data);
        CHECK(d[i] == want, "non-blocking data average [%zu]: %g want %g", i, d[i], want);
    }

    /* Data-parallel replicas must stay identical: with arbitrary floats (sums that round), every
     * rank of a group ends with the same bits, close to a sum in double precision. */
    {
        size_t cnt = 100003;
        float *x = malloc(cnt * sizeof *x), *from0 = malloc(cnt * sizeof *from0);
        unsigned seed = 12345u + 7919u * (unsigned)wr;
        for (size_t i = 0; i < cnt; i++) {
            seed = seed * 1664525u + 1013904223u;
            x[i] = ((float)(seed >> 8) / 16777216.0f - 0.5f) * 3.7f;
        }
        for (int id = 0; id < COLL_NGROUPS; id++) {
            coll_group *g = coll_group_of(ctx, (coll_group_id)id);
            float *y = malloc(cnt * sizeof *y);
            memcpy(y, x, cnt * sizeof *y);
            CHECK_OK(coll_all_reduce(g, y, cnt, COLL_F32, COLL_AVG, &err));
            expect_counts[id]++;
            /* the group's rank 0 result, sent to every member over MPI directly */
            MPI_Comm check;
            int dp = wr / T, tp = wr % T;
            MPI_Comm_split(MPI_COMM_WORLD, id == COLL_WORLD ? 0 : id == COLL_TENSOR ? dp : tp, wr, &check);
            memcpy(from0, y, cnt * sizeof *y);
            MPI_Bcast(from0, (int)cnt, MPI_FLOAT, 0, check);
            CHECK(memcmp(from0, y, cnt * sizeof *y) == 0, "group %s: ranks differ in the bits of an average",
                  coll_group_name(g));
            /* and close to the exact average: recompute every member's values here */
            int n = coll_group_size(g);
            for (size_t i = 0; i < cnt; i += 997) {
                double want = 0;
                for (int m = 0; m < n; m++) {
                    unsigned sd = 12345u + 7919u * (unsigned)member(g, (coll_group_id)id, T, wr, m);
                    float v = 0;
                    for (size_t k = 0; k <= i; k++) {
                        sd = sd * 1664525u + 1013904223u;
                        if (k == i)
                            v = ((float)(sd >> 8) / 16777216.0f - 0.5f) * 3.7f;
                    }
                    want += v;
                }
                want /= n;
                double diff = y[i] - want;
                CHECK(diff < 1e-5 && diff > -1e-5, "group %s [%zu]: %g want %g", coll_group_name(g), i,
                      y[i], want);
            }
            MPI_Comm_free(&check);
            free(y);
        }
        free(x);
        free(from0);
    }

    /* Every start counted once per group. */
    int64_t counts[COLL_NGROUPS];
    coll_counts(ctx, counts);
    for (int id = 0; id < COLL_NGROUPS; id++)
        CHECK(counts[id] == expect_counts[id], "group %d entered %lld, want %lld", id,
              (long long)counts[id], (long long)expect_counts[id]);

    coll_close(ctx);
    free(a);
    free(d);
    free(buf);
    free(out);
    if (wr == 0)
        printf("test_coll_ops: %d ranks, T=%d%s: ok\n", ws, T, threaded ? ", progress thread" : "");
    MPI_Finalize();
    return 0;
}
