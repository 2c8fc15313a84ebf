/* scheduler/atomctl_ckpt.c: `atomctl ckpt ls DIR`, `atomctl ckpt verify FILE` and `atomctl ckpt
 * export SRC --format safetensors [-o OUT]` (atomctl_export.c): the checkpoint tools of
 * checkpoints/, which read files without MPI. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "checkpoints/checkpoints.h"
#include "scheduler/atomctl.h"

int atomctl_cmd_ckpt(int argc, char **argv)
{
    static const struct option options[] = {
        {"help", no_argument, NULL, 'h'},
        {"format", required_argument, NULL, 'f'},
        {"output", required_argument, NULL, 'o'},
        {NULL, 0, NULL, 0},
    };
    const char *format = "safetensors", *output = NULL;
    int opt;
    while ((opt = getopt_long(argc, argv, "hf:o:", options, NULL)) != -1) {
        if (opt == 'h') {
            atomctl_print_usage("ckpt", stdout);
            return ATOMCTL_OK;
        } else if (opt == 'f') {
            format = optarg;
        } else if (opt == 'o') {
            output = optarg;
        } else {
            return atomctl_usage_error("ckpt", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 2)
        return atomctl_usage_error("ckpt", "expected an action (ls, verify, export) and a path");
    const char *action = argv[optind], *path = argv[optind + 1];
    atom_ckpt_err err = {{0}};
    int rc;
    if (!strcmp(action, "ls")) {
        rc = atom_ckpt_print_list(path, stdout, &err);
    } else if (!strcmp(action, "verify")) {
        rc = atom_ckpt_verify(path, stdout, &err);
    } else if (!strcmp(action, "export")) {
        if (strcmp(format, "safetensors") != 0)
            return atomctl_usage_error("ckpt", "unknown export format '%s' (known: safetensors)", format);
        return atomctl_ckpt_export(path, output);
    } else {
        return atomctl_usage_error("ckpt", "unknown action '%s' (ls, verify, export)", action);
    }
    if (rc != 0) {
        fprintf(stderr, "atomctl ckpt %s: %s\n", action, err.msg);
        return ATOMCTL_FAILED;
    }
    return ATOMCTL_OK;
}
