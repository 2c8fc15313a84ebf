/* tests/ops/test_simulate.c: `atomd --simulate` on traces whose outcome is known by hand.
 *
 * Each case builds a small inventory and a trace, runs atomd's real scheduling pass in virtual
 * time (scheduler/simulate.h) and checks start and end times job by job: EASY backfill starts a
 * short job early but never one that would delay the head job; fair share between two projects
 * that flood the queue gives each half of the GPUs (FIFO does not); a job that fails partway is
 * restarted away from its node and finishes, one past its limit is stopped there; the three policies agree when nothing waits.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "scheduler/atomd.h"
#include "scheduler/simulate.h"

/* Two nodes of 4 GPUs under one switch. */
static const char two_nodes[] = "name: two-nodes\n"
                                "switches: [leaf01]\n"
                                "nodes:\n"
                                "  - {name: \"n[1-2]\", switch: leaf01, gpus: 4}\n";

static void load_inventory(const char *yaml, atom_inventory *inv)
{
    atom_diags diags = {0};
    int rc = atom_inventory_parse(yaml, strlen(yaml), "test", inv, &diags);
    if (rc)
        atom_diags_print(&diags, stderr);
    atom_diags_free(&diags);
    assert_int_equal(rc, 0);
}

static atomd_sim_job job(double submit, int gpus, double duration, int64_t limit, const char *project)
{
    atomd_sim_job j = {.submit = submit, .gpus = gpus, .duration = duration, .tensor = 1,
                       .priority = 100, .time_limit = limit};
    snprintf(j.project, sizeof j.project, "%s", project);
    return j;
}

static void run(const atom_inventory *inv, atomd_sim_job *jobs, int n, int policy, atomd_sim_result *r)
{
    atomd_sim_trace trace = {.jobs = jobs, .n = n};
    atom_err err = {{0}};
    int rc = atomd_simulate(inv, &trace, policy, 0, r, &err);
    if (rc)
        fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(rc, 0);
}

/* A (1 node, 100 s) runs; B wants both nodes; C (short) fits beside A and ends before A does, so
 * it backfills; D fits too but its limit runs past A's end, so it would delay B and must wait. */
static void test_backfill_never_delays_the_head(void **state)
{
    (void)state;
    atom_inventory inv;
    load_inventory(two_nodes, &inv);
    atomd_sim_job jobs[] = {
        job(0, 4, 100, 100, "p"),   /* A */
        job(1, 8, 50, 50, "p"),     /* B: the head */
        job(2, 4, 50, 60, "p"),     /* C: 2 + 60 <= 100 */
        job(3, 4, 500, 500, "p"),   /* D: 3 + 500 > 100 */
    };
    atomd_sim_result r;
    run(&inv, jobs, 4, ATOMD_POLICY_BACKFILL, &r);
    assert_int_equal(r.done, 4);
    assert_true(r.jobs[0].start == 0);
    assert_true(r.jobs[1].start == 100); /* exactly when A ends: not delayed */
    assert_true(r.jobs[2].start == 2);   /* backfilled */
    assert_true(r.jobs[3].start == 150); /* after B */
    atomd_sim_result_free(&r);

    /* Without backfill, C waits behind B. */
    run(&inv, jobs, 4, ATOMD_POLICY_FIFO, &r);
    assert_true(r.jobs[1].start == 100);
    assert_true(r.jobs[2].start == 150);
    assert_true(r.jobs[3].start == 150);
    assert_true(r.wait_mean > 0);
    atomd_sim_result_free(&r);
    atom_inventory_free(&inv);
}

/* GPU-seconds of project a among those used in [0, horizon). */
static double share_of_a(const atomd_sim_result *r, const atomd_sim_job *jobs, double horizon)
{
    double a = 0, all = 0;
    for (int i = 0; i < r->n_jobs; i++) {
        if (r->jobs[i].start < 0 || r->jobs[i].start >= horizon)
            continue;
        double end = r->jobs[i].end < horizon ? r->jobs[i].end : horizon;
        double gs = (end - r->jobs[i].start) * jobs[i].gpus;
        all += gs;
        if (strcmp(jobs[i].project, "a") == 0)
            a += gs;
    }
    return all > 0 ? a / all : 0;
}

/* Two projects each submit 40 one-GPU jobs at once, a's first. Fair share orders the queue by
 * decayed usage, so they alternate and each gets half of the GPUs; FIFO gives a everything first. */
static void test_fair_share_converges(void **state)
{
    (void)state;
    atom_inventory inv;
    load_inventory(two_nodes, &inv);
    atomd_sim_job jobs[80];
    for (int i = 0; i < 80; i++)
        jobs[i] = job(0, 1, 100, 100, i < 40 ? "a" : "b");
    atomd_sim_result r;
    const int fair[] = {ATOMD_POLICY_PRIORITY, ATOMD_POLICY_BACKFILL};
    for (int p = 0; p < 2; p++) {
        run(&inv, jobs, 80, fair[p], &r);
        assert_int_equal(r.done, 80);
        assert_true(r.makespan == 1000);
        /* Rounds of 100 s go to a and b in turn: any even number of rounds is an exact half. */
        for (double horizon = 200; horizon <= 800; horizon += 200) {
            double share = share_of_a(&r, jobs, horizon);
            if (share < 0.45 || share > 0.55)
                fprintf(stderr, "%s: share of a in the first %.0f s: %.3f\n", atomd_policy_name(fair[p]), horizon,
                        share);
            assert_true(share >= 0.45 && share <= 0.55);
        }
        atomd_sim_result_free(&r);
    }
    run(&inv, jobs, 80, ATOMD_POLICY_FIFO, &r);
    assert_true(share_of_a(&r, jobs, 400) > 0.99);
    atomd_sim_result_free(&r);
    atom_inventory_free(&inv);
}

/* A job failing halfway is requeued (restart rules of jobs.c), avoids its node, resumes from the
 * failure point and finishes; the other node was free, so no time is lost waiting. */
static void test_failure_restarts_elsewhere(void **state)
{
    (void)state;
    atom_inventory inv;
    load_inventory(two_nodes, &inv);
    atomd_sim_job jobs[] = {job(0, 4, 100, 200, "p")};
    jobs[0].fails_at = 0.5;
    atomd_sim_result r;
    run(&inv, jobs, 1, ATOMD_POLICY_BACKFILL, &r);
    assert_int_equal(r.done, 1);
    assert_int_equal(r.restarts, 1);
    assert_int_equal(r.jobs[0].attempts, 2);
    assert_true(r.jobs[0].end == 100);
    atomd_sim_result_free(&r);

    /* Longer than its limit: stopped at the limit, state timeout, not restarted. */
    atomd_sim_job late[] = {job(0, 4, 200, 100, "p")};
    run(&inv, late, 1, ATOMD_POLICY_BACKFILL, &r);
    assert_int_equal(r.timeouts, 1);
    assert_int_equal(r.jobs[0].state, ATOMD_JOB_TIMEOUT);
    assert_true(r.jobs[0].end == 100);
    assert_int_equal(r.restarts, 0);
    atomd_sim_result_free(&r);
    atom_inventory_free(&inv);
}

/* Two nodes of 3 GPUs. A and B are tensor-parallel pairs (a pair never crosses a node), so they
 * take one node each and leave one GPU free on each; C, another pair, finds two GPUs free in total
 * and still waits. Those two GPUs are idle through fragmentation for 100 s, out of 6 GPUs x 200 s. */
static void test_fragmentation_is_measured(void **state)
{
    (void)state;
    atom_inventory inv;
    load_inventory("name: three-gpu-nodes\nswitches: [leaf01]\nnodes:\n  - {name: \"n[1-2]\", switch: leaf01, gpus: 3}\n",
                   &inv);
    atomd_sim_job jobs[] = {job(0, 2, 100, 100, "p"), job(0, 2, 100, 100, "p"), job(0, 2, 100, 100, "p")};
    for (int i = 0; i < 3; i++)
        jobs[i].tensor = 2;
    atomd_sim_result r;
    run(&inv, jobs, 3, ATOMD_POLICY_BACKFILL, &r);
    assert_int_equal(r.done, 3);
    assert_true(r.jobs[2].start == 100);
    assert_true(r.makespan == 200);
    assert_true(fabs(r.idle_fragmented - 2.0 * 100 / (6 * 200)) < 1e-9);
    assert_true(fabs(r.idle_queued - 2.0 * 100 / (6 * 200)) < 1e-9);
    assert_true(fabs(r.utilisation - (4.0 * 100 + 2.0 * 100) / (6 * 200)) < 1e-9);
    atomd_sim_result_free(&r);
    atom_inventory_free(&inv);
}

/* The CSV reader: comments, a header, optional priority; a bad row is refused with its line. */
static void test_trace_file(void **state)
{
    (void)state;
    char path[] = "/tmp/atom-trace-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char text[] = "# a comment\nsubmit_s,gpus,duration_s,tensor,project,fails_at,time_limit_s,priority\n"
                        "0,8,3600,8,x,0,7200,300\n5,2,60,1,y,0.5,0\n";
    assert_int_equal(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    atomd_sim_trace t;
    atom_err err = {{0}};
    assert_int_equal(atomd_sim_trace_load(path, &t, &err), 0);
    assert_int_equal(t.n, 2);
    assert_int_equal(t.jobs[0].priority, 300);
    assert_int_equal(t.jobs[0].tensor, 8);
    assert_int_equal(t.jobs[1].priority, 100);
    assert_true(t.jobs[1].fails_at == 0.5);
    assert_string_equal(t.jobs[1].project, "y");
    atomd_sim_trace_free(&t);

    FILE *f = fopen(path, "w");
    fputs("submit_s,gpus,duration_s,tensor,project,fails_at,time_limit_s\n0,6,60,4,x,0,0\n", f);
    fclose(f);
    assert_int_equal(atomd_sim_trace_load(path, &t, &err), -1);
    assert_non_null(strstr(err.msg, ":2:"));
    unlink(path);
}

int main(void)
{
    atom_log_init("ops_simulate", ATOM_LOG_WARN); /* one line per attempt otherwise */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backfill_never_delays_the_head),
        cmocka_unit_test(test_fair_share_converges),
        cmocka_unit_test(test_failure_restarts_elsewhere),
        cmocka_unit_test(test_fragmentation_is_measured),
        cmocka_unit_test(test_trace_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
