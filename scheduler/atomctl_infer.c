/* scheduler/atomctl_infer.c: `atomctl sample CKPT ...` and `atomctl eval CKPT DATA ...`. The
 * model runs in the worker module, which the scheduler may not include: atomctl hands the
 * command line, as an argv array (never a shell), to atom-infer beside its own binary (as atomd
 * finds atom-worker; ATOM_INFER overrides), which prints, times and exits for it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "scheduler/atomctl.h"

static int run_infer(const char *command, int argc, char **argv)
{
    char path[ATOM_PATH_MAX];
    atom_err err = {{0}};
    if (atom_program_path("ATOM_INFER", "atom-infer", path, sizeof path, &err) != 0) {
        fprintf(stderr, "atomctl %s: %s\n", command, err.msg);
        return ATOMCTL_FAILED;
    }
    /* argv[0] is the command's name: atom-infer's messages then read "atomctl sample: ..." */
    char **args = calloc((size_t)argc + 2, sizeof *args);
    if (!args) {
        fprintf(stderr, "atomctl %s: out of memory\n", command);
        return ATOMCTL_FAILED;
    }
    args[0] = "atomctl";
    for (int i = 0; i < argc; i++)
        args[i + 1] = argv[i];
    fflush(NULL);
    execv(path, args);
    fprintf(stderr, "atomctl %s: cannot run %s: %s\n", command, path, strerror(errno));
    free(args);
    return ATOMCTL_FAILED;
}

int atomctl_cmd_sample(int argc, char **argv) { return run_infer("sample", argc, argv); }
int atomctl_cmd_eval(int argc, char **argv) { return run_infer("eval", argc, argv); }
