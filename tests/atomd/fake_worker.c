/* tests/atomd/fake_worker.c: a stand-in for atom-worker in atomd's end-to-end tests.
 *
 * It reads --plan like the real worker, sends heartbeats the way worker/train.c does (one JSON
 * datagram per heartbeat to plan.heartbeat_addr, plus a line in run_dir/heartbeat.rank-N.jsonl),
 * and behaves as the job's name says, so each test can ask for one outcome:
 *   ok*        runs training.steps steps of 20 ms and exits 0
 *   fail*      exits 3 after its first heartbeat
 *   failonce*  exits 3 in attempt 1, then behaves as ok
 *   sleep*     advances a step every 100 ms until SIGTERM or SIGUSR1, then exits 75
 *   hang*      rank 1 (rank 0 when alone) stops itself with SIGSTOP after step 2; the others
 *              keep sending heartbeats without advancing, as ranks blocked in a collective do
 *   hangonce*  hangs in attempt 1, then behaves as ok
 *   crash*     the last rank writes "rank R crashing at step 3" to stderr at step 3 and dies of
 *              SIGSEGV; the others behave as ok
 *   isolate*   rank 0 writes its environment to run_dir/env.txt (a file the umask shapes) and
 *              leaves a daemon behind (double fork, setsid, its pid in run_dir/daemon.pid) that
 *              sleeps until killed; then behaves as ok
 * It prints "rank R attempt A step S" lines to stdout for the log tests.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"

static volatile sig_atomic_t stop_requested;
static void on_stop(int sig) { (void)sig; stop_requested = 1; }

static void nap(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static void beat(const atom_plan *plan, atom_heartbeat *hb, int fd, FILE *file)
{
    hb->time = atom_now();
    char *json = atom_heartbeat_to_json(hb);
    if (!json)
        return;
    if (file) {
        fprintf(file, "%s\n", json);
        fflush(file);
    }
    if (fd >= 0) {
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        if (snprintf(addr.sun_path, sizeof addr.sun_path, "%s", plan->heartbeat_addr) < (int)sizeof addr.sun_path)
            sendto(fd, json, strlen(json), MSG_DONTWAIT, (struct sockaddr *)&addr, sizeof addr);
    }
    free(json);
}

extern char **environ;

/* isolate*: what a job could leave on its node and learn from it (see the top). */
static void leave_traces(const char *run_dir)
{
    char path[ATOM_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/env.txt", run_dir);
    FILE *f = fopen(path, "w");
    if (f) {
        for (char **e = environ; *e; e++)
            fprintf(f, "%s\n", *e);
        fclose(f);
    }
    snprintf(path, sizeof path, "%s/daemon.pid", run_dir);
    pid_t child = fork();
    if (child == 0) {
        setsid();
        if (fork() != 0)
            _exit(0); /* the daemon's parent is gone: it is init's now, outside mpirun's tree */
        FILE *p = fopen(path, "w");
        if (p) {
            fprintf(p, "%d\n", (int)getpid());
            fclose(p);
        }
        for (int fd = 0; fd < 3; fd++)
            close(fd);
        for (;;)
            pause();
    }
    if (child > 0)
        waitpid(child, NULL, 0);
}

int main(int argc, char **argv)
{
    const char *plan_path = NULL;
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], "--plan") == 0)
            plan_path = argv[i + 1];
    atom_plan plan;
    atom_err err = {{0}};
    if (!plan_path || atom_plan_read(plan_path, &plan, &err)) {
        fprintf(stderr, "fake_worker: %s\n", plan_path ? err.msg : "usage: fake_worker --plan PATH");
        return 2;
    }
    const char *r = getenv("OMPI_COMM_WORLD_RANK");
    int rank = r ? atoi(r) : 0;
    signal(SIGTERM, on_stop);
    signal(SIGUSR1, on_stop);

    atom_heartbeat hb;
    memset(&hb, 0, sizeof hb);
    snprintf(hb.job_id, sizeof hb.job_id, "%s", plan.job_id);
    hb.attempt = plan.attempt;
    hb.rank = rank;
    gethostname(hb.host, sizeof hb.host - 1);
    hb.pid = (int)getpid();
    hb.has_progress = rank == 0;
    hb.last_checkpoint_step = -1;
    int fd = plan.heartbeat_addr[0] ? socket(AF_UNIX, SOCK_DGRAM, 0) : -1;
    FILE *file = NULL;
    if (plan.run_dir[0]) {
        char path[ATOM_PATH_MAX + 64];
        snprintf(path, sizeof path, "%s/heartbeat.rank-%d.jsonl", plan.run_dir, rank);
        file = fopen(path, "a");
    }
    const char *name = plan.spec.name;
    bool fail = strncmp(name, "fail", 4) == 0 && !(strncmp(name, "failonce", 8) == 0 && plan.attempt > 1);
    bool sleeper = strncmp(name, "sleep", 5) == 0;
    bool hang = strncmp(name, "hang", 4) == 0 && !(strncmp(name, "hangonce", 8) == 0 && plan.attempt > 1);
    int hang_rank = plan.world > 1 ? 1 : 0;
    bool crash = strncmp(name, "crash", 5) == 0 && rank == plan.world - 1;
    if (strncmp(name, "isolate", 7) == 0 && rank == 0 && plan.run_dir[0])
        leave_traces(plan.run_dir);
    int rc = 0;
    for (int64_t step = 1; sleeper || hang || step <= plan.spec.training.steps; step++) {
        if (stop_requested) {
            rc = ATOM_EXIT_RESUMABLE;
            break;
        }
        nap(sleeper || hang ? 0.1 : 0.02);
        hb.step = hang && step > 2 ? 2 : step;
        hb.loss = 10.0 / (double)step;
        hb.tokens_per_s = 1000;
        hb.collectives[0] = step;
        if (plan.spec.checkpoint.every > 0 && step % plan.spec.checkpoint.every == 0)
            hb.last_checkpoint_step = step;
        beat(&plan, &hb, fd, file);
        printf("rank %d attempt %d step %lld\n", rank, plan.attempt, (long long)hb.step);
        fflush(stdout);
        if (fail) {
            rc = 3;
            break;
        }
        if (hang && rank == hang_rank && step == 2)
            raise(SIGSTOP);
        if (crash && step == 3) {
            fprintf(stderr, "rank %d crashing at step 3\n", rank);
            signal(SIGSEGV, SIG_DFL); /* no sanitizer's report: the plain death of a process */
            raise(SIGSEGV);
        }
    }
    if (file)
        fclose(file);
    atom_plan_free(&plan);
    return rc;
}
