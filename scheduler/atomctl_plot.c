/* scheduler/atomctl_plot.c: `atomctl plot`: a PNG of a run's training loss, validation loss and
 * learning rate against steps, drawn by gnuplot (Debian's gnuplot-nox) from train.jsonl, for
 * those who would rather look than read.
 *
 * The run is a train.jsonl file, a folder holding one (a checkpoint folder, an attempt's output
 * folder), or a job id, whose attempts' train.jsonl files atomd names (`show`). A step logged by
 * several attempts (a restart resumes from its last checkpoint and logs the steps after it again)
 * keeps the values of the last attempt that logged it: the curve of the run that went on. The
 * script and the data go to gnuplot on its standard input (argv only, never a shell), so no file
 * name of the run is ever part of a command.
 */
#include "scheduler/atomctl.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/common.h"
#include "scheduler/client.h"

typedef struct plot_point {
    long long step;
    double loss, val_loss, lr; /* NAN: not logged at that step */
} plot_point;

typedef struct plot_series {
    plot_point *p;
    int n, cap;
} plot_series;

/* Sets step's values (a later file's line replaces an earlier one's). */
static int series_put(plot_series *s, const plot_point *pt)
{
    for (int i = s->n - 1; i >= 0 && i >= s->n - 64; i--)
        if (s->p[i].step == pt->step) {
            /* The same step again: a restart's line, or a validation line beside the train one. */
            if (!isnan(pt->loss))
                s->p[i].loss = pt->loss;
            if (!isnan(pt->lr))
                s->p[i].lr = pt->lr;
            if (!isnan(pt->val_loss))
                s->p[i].val_loss = pt->val_loss;
            return 0;
        }
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 256;
        plot_point *p = realloc(s->p, (size_t)cap * sizeof *p);
        if (!p)
            return -1;
        s->p = p;
        s->cap = cap;
    }
    s->p[s->n++] = *pt;
    return 0;
}

static double number_or_nan(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* Reads one train.jsonl into s. A line that is not a JSON object with a step (a line cut short
 * by a killed rank) is skipped. Returns the number of lines used, -1 when the file cannot be
 * read. */
static int read_train_log(const char *path, plot_series *s)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    char *line = NULL;
    size_t cap = 0;
    int used = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *o = json_loads(line, 0, NULL);
        json_t *step = json_object_get(o, "step");
        if (json_is_integer(step)) {
            plot_point pt = {json_integer_value(step), number_or_nan(o, "loss"),
                             number_or_nan(o, "val_loss"), number_or_nan(o, "lr")};
            if (series_put(s, &pt) == 0)
                used++;
        }
        json_decref(o);
    }
    free(line);
    fclose(f);
    return used;
}

static int by_step(const void *a, const void *b)
{
    long long x = ((const plot_point *)a)->step, y = ((const plot_point *)b)->step;
    return (x > y) - (x < y);
}

/* The train.jsonl of path: the file itself, or the one in the folder path. */
static void train_log_of(const char *path, char *out, size_t len)
{
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        snprintf(out, len, "%s/train.jsonl", path);
    else
        snprintf(out, len, "%s", path);
}

/* A job id: its attempts' train.jsonl files, oldest attempt first, from atomd's `show`. */
static int read_job(const char *socket, long long job, plot_series *s)
{
    atom_client c;
    atom_err err = {{0}};
    int not_running = 0;
    if (atom_client_connect(&c, socket, &not_running, &err)) {
        fprintf(stderr, "atomctl plot: %s\n", err.msg);
        return ATOMCTL_NO_DAEMON;
    }
    json_t *req = json_pack("{s:s,s:I}", "op", "show", "job", (json_int_t)job);
    json_t *ans = atom_client_call(&c, req, &err);
    json_decref(req);
    atom_client_close(&c);
    if (!ans) {
        fprintf(stderr, "atomctl plot: %s\n", err.msg);
        return ATOMCTL_NO_DAEMON;
    }
    if (!json_is_true(json_object_get(ans, "ok"))) {
        fprintf(stderr, "atomctl plot: atomd: %s\n", json_string_value(json_object_get(ans, "error")));
        json_decref(ans);
        return ATOMCTL_FAILED;
    }
    int files = 0;
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(ans, "attempts"), i, a) {
        /* The attempt's output folder (the owner's, where rank 0 writes train.jsonl). */
        const char *dir = json_string_value(json_object_get(a, "output_dir"));
        if (!dir || !dir[0])
            dir = json_string_value(json_object_get(a, "run_dir"));
        char path[ATOM_PATH_MAX + 32];
        if (dir && dir[0]) {
            train_log_of(dir, path, sizeof path);
            files += read_train_log(path, s) > 0;
        }
    }
    json_decref(ans);
    if (!files) {
        fprintf(stderr, "atomctl plot: job %lld has no train.jsonl yet (or none this user can "
                        "read here)\n", job);
        return ATOMCTL_FAILED;
    }
    return ATOMCTL_OK;
}

/* A string for gnuplot's single quotes, where '' stands for one quote. */
static void gnuplot_quoted(FILE *f, const char *s)
{
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'')
            fputc('\'', f);
        fputc(*s, f);
    }
    fputc('\'', f);
}

/* One inline data block: the steps where column has a value. */
static void data_block(FILE *f, const plot_series *s, int column)
{
    for (int i = 0; i < s->n; i++) {
        const plot_point *p = &s->p[i];
        double v = column == 0 ? p->loss : column == 1 ? p->val_loss : p->lr;
        if (!isnan(v) && !isinf(v))
            fprintf(f, "%lld %.9g\n", p->step, v);
    }
    fputs("e\n", f);
}

static int count_values(const plot_series *s, int column)
{
    int n = 0;
    for (int i = 0; i < s->n; i++) {
        double v = column == 0 ? s->p[i].loss : column == 1 ? s->p[i].val_loss : s->p[i].lr;
        n += !isnan(v) && !isinf(v);
    }
    return n;
}

/* Runs gnuplot with the script and data on its standard input. */
static int draw(const plot_series *s, const char *title, const char *out)
{
    int in[2];
    if (pipe(in) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(in[0], STDIN_FILENO);
        close(in[0]);
        close(in[1]);
        char *argv[] = {"gnuplot", NULL};
        execvp(argv[0], argv);
        fprintf(stderr, "atomctl plot: cannot run gnuplot: %s (Debian: apt-get install "
                        "gnuplot-nox; deploy/setup.sh installs it)\n", strerror(errno));
        _exit(127);
    }
    close(in[0]);
    void (*old)(int) = signal(SIGPIPE, SIG_IGN); /* gnuplot may stop reading on an error */
    FILE *f = fdopen(in[1], "w");
    int n_train = count_values(s, 0), n_val = count_values(s, 1), n_lr = count_values(s, 2);
    fputs("set terminal pngcairo size 1100,800 font ',10'\nset output ", f);
    gnuplot_quoted(f, out);
    fputs("\nset multiplot layout 2,1 title ", f);
    gnuplot_quoted(f, title);
    fputs("\nset grid\nset xlabel 'step'\nset ylabel 'loss'\nset key top right\n", f);
    fputs("plot ", f);
    if (n_train)
        fputs("'-' using 1:2 with lines lw 1.5 title 'train loss'", f);
    if (n_val)
        fprintf(f, "%s'-' using 1:2 with linespoints pt 7 ps 0.6 lw 1.5 title 'validation loss'",
                n_train ? ", " : "");
    fputc('\n', f);
    if (n_train)
        data_block(f, s, 0);
    if (n_val)
        data_block(f, s, 1);
    fputs("set ylabel 'learning rate'\nset format y '%.1e'\n"
          "plot '-' using 1:2 with lines lw 1.5 title 'learning rate'\n", f);
    if (n_lr)
        data_block(f, s, 2);
    else
        fputs("0 0\ne\n", f);
    fputs("unset multiplot\n", f);
    int wrote = fclose(f) == 0;
    signal(SIGPIPE, old);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return wrote && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

int atomctl_cmd_plot(int argc, char **argv)
{
    static const struct option longopts[] = {{"output", required_argument, NULL, 'o'},
                                              {"socket", required_argument, NULL, 's'},
                                              {"table", no_argument, NULL, 't'},
                                              {"help", no_argument, NULL, 'h'},
                                              {NULL, 0, NULL, 0}};
    const char *out = NULL;
    bool table = false;
    char socket[ATOM_PATH_MAX];
    atom_client_default_socket(socket, sizeof socket);
    atom_client_default_server(socket, sizeof socket);
    optind = 0;
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "o:s:h", longopts, NULL)) != -1) {
        if (opt == 'h') {
            atomctl_print_usage("plot", stdout);
            return ATOMCTL_OK;
        } else if (opt == 'o') {
            out = optarg;
        } else if (opt == 't') {
            table = true;
        } else if (opt == 's') {
            snprintf(socket, sizeof socket, "%s", optarg);
        } else {
            return atomctl_usage_error("plot", "unknown option %s", argv[optind - 1]);
        }
    }
    if (optind != argc - 1)
        return atomctl_usage_error("plot", "give one job id, train.jsonl file or folder");
    const char *what = argv[optind];
    if (out && (strchr(out, '\n') || !out[0]))
        return atomctl_usage_error("plot", "the output name is empty or holds a line break");

    plot_series s = {0};
    char path[ATOM_PATH_MAX + 32], title[ATOM_PATH_MAX + 64], out_buf[64];
    struct stat st;
    char *end = NULL;
    long long job = strtoll(what, &end, 10);
    int rc = ATOMCTL_OK;
    if (stat(what, &st) != 0 && end && !*end && job > 0) {
        rc = read_job(socket, job, &s);
        snprintf(title, sizeof title, "job %lld", job);
        snprintf(out_buf, sizeof out_buf, "job-%lld.png", job);
    } else {
        train_log_of(what, path, sizeof path);
        int used = read_train_log(path, &s);
        if (used < 0) {
            fprintf(stderr, "atomctl plot: cannot read %s: %s\n", path, strerror(errno));
            rc = ATOMCTL_FAILED;
        } else if (used == 0) {
            fprintf(stderr, "atomctl plot: %s has no step lines\n", path);
            rc = ATOMCTL_FAILED;
        }
        snprintf(title, sizeof title, "%s", path);
        snprintf(out_buf, sizeof out_buf, "train.png");
    }
    if (rc == ATOMCTL_OK && table) {
        /* What would be drawn, as numbers: for tools, and for checking the merge of attempts. */
        qsort(s.p, (size_t)s.n, sizeof *s.p, by_step);
        printf("step\tloss\tval_loss\tlr\n");
        for (int i = 0; i < s.n; i++)
            printf("%lld\t%.9g\t%.9g\t%.9g\n", s.p[i].step, s.p[i].loss, s.p[i].val_loss, s.p[i].lr);
    } else if (rc == ATOMCTL_OK) {
        qsort(s.p, (size_t)s.n, sizeof *s.p, by_step);
        if (!out)
            out = out_buf;
        if (draw(&s, title, out) != 0) {
            fprintf(stderr, "atomctl plot: gnuplot could not write %s\n", out);
            rc = ATOMCTL_FAILED;
        } else {
            printf("%s: %d steps (train loss %d, validation loss %d)\n", out, s.n,
                   count_values(&s, 0), count_values(&s, 1));
        }
    }
    free(s.p);
    return rc;
}
