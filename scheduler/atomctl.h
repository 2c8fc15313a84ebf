/* scheduler/atomctl.h: atomctl's commands and exit codes (private to atomctl's files).
 *
 * Every command is one row of the table in atomctl.c (name, handler, one-line summary, usage), so a
 * new command (submit, run, status, queue, show, cancel, logs, nodes, drain, resume, ckpt ...) is
 * one handler in its own file and one row.
 */
#ifndef ATOM_SCHEDULER_ATOMCTL_H
#define ATOM_SCHEDULER_ATOMCTL_H

#include <stdio.h>

/* atomctl's exit codes (also printed by `atomctl --help`). */
enum {
    ATOMCTL_OK = 0,          /* the command did what was asked */
    ATOMCTL_FAILED = 1,      /* it could not: an invalid spec, a job that does not fit, an I/O error */
    ATOMCTL_USAGE = 2,       /* the command line is wrong (unknown command or flag, missing file) */
    ATOMCTL_NO_DAEMON = 3,   /* atomd cannot be reached (commands that talk to atomd) */
};

/* A command's handler gets argv from the command's name on (argv[0] is the name) and returns an
 * exit code. It prints usage errors with atomctl_usage_error. */
typedef int (*atomctl_handler)(int argc, char **argv);

typedef struct atomctl_command {
    const char *name;
    atomctl_handler handler;
    const char *summary;  /* one line for `atomctl --help` */
    const char *usage;    /* the synopsis and flags for `atomctl <command> --help` */
} atomctl_command;

/* Prints "atomctl <command>: <message>" and the command's synopsis to stderr; returns
 * ATOMCTL_USAGE. */
int atomctl_usage_error(const char *command, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prints the command's usage to out. */
void atomctl_print_usage(const char *command, FILE *out);

int atomctl_cmd_validate(int argc, char **argv);
int atomctl_cmd_plan(int argc, char **argv);
int atomctl_cmd_ckpt(int argc, char **argv);
int atomctl_cmd_plot(int argc, char **argv);
/* `atomctl ckpt export SRC [-o OUT]` (atomctl_export.c): an exit code. */
int atomctl_ckpt_export(const char *src, const char *out);
/* atomctl_infer.c: run atom-infer, which loads the model (the worker module) */
int atomctl_cmd_sample(int argc, char **argv);
int atomctl_cmd_eval(int argc, char **argv);

#endif
