/* scheduler/atomctl_validate.c: `atomctl validate JOB.yaml...`: parses and checks job specs,
 * printing a one-paragraph summary of each valid one and every diagnostic of each invalid one. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "common/common.h"
#include "scheduler/atomctl.h"

static const char *device_name(atom_device d)
{
    return d == ATOM_DEVICE_CPU ? "cpu" : d == ATOM_DEVICE_CUDA ? "cuda" : "auto";
}

static const char *schedule_name(atom_lr_schedule s)
{
    return s == ATOM_LR_LINEAR     ? "linear"
           : s == ATOM_LR_CONSTANT ? "constant"
           : s == ATOM_LR_WSD      ? "wsd"
                                   : "cosine";
}

/* "124.4M" style: parameter counts read at a glance. */
static void human_count(int64_t n, char *buf, size_t len)
{
    if (n >= 1000000000)
        snprintf(buf, len, "%.2fB", (double)n / 1e9);
    else if (n >= 1000000)
        snprintf(buf, len, "%.1fM", (double)n / 1e6);
    else if (n >= 1000)
        snprintf(buf, len, "%.1fk", (double)n / 1e3);
    else
        snprintf(buf, len, "%lld", (long long)n);
}

/* The summary paragraph: what will run, on what, for how long, and where its state goes. */
static void print_summary(const atom_spec *s, FILE *out)
{
    char params[32];
    human_count(atom_model_params(&s->model), params, sizeof params);
    fprintf(out, "  %s (project %s, priority %d): model %s%s(L=%d C=%d heads=%d vocab=%d "
            "context=%d, %s parameters); ",
            s->name, s->project[0] ? s->project : "-", s->priority, s->model_preset,
            s->model_preset[0] ? " " : "", s->model.layers, s->model.channels, s->model.heads,
            s->model.vocab, s->model.context, params);
    fprintf(out, "%d rank%s = tensor %d x data %d", s->resources.gpus,
            s->resources.gpus == 1 ? "" : "s", s->parallelism.tensor, s->parallelism.data);
    if (s->resources.gpus_per_node)
        fprintf(out, ", %d per node", s->resources.gpus_per_node);
    fprintf(out, " on device %s; ", device_name(s->resources.device));
    fprintf(out, "%lld steps of %d samples (micro-batch %d, %d accumulation step%s), lr %g %s "
            "with %lld warm-up steps, weight decay %g, grad clip %g, seed %llu; ",
            (long long)s->training.steps, s->training.global_batch, s->training.micro_batch,
            atom_spec_accum_steps(s), atom_spec_accum_steps(s) == 1 ? "" : "s", s->training.lr,
            schedule_name(s->training.lr_schedule), (long long)s->training.warmup,
            s->training.weight_decay, s->training.grad_clip,
            (unsigned long long)s->training.seed);
    if (s->training.lr_schedule == ATOM_LR_WSD || s->training.lr_decay_steps) {
        int64_t horizon = s->training.lr_decay_steps ? s->training.lr_decay_steps
                                                     : s->training.steps;
        fprintf(out, "the schedule spans %lld steps", (long long)horizon);
        if (s->training.lr_schedule == ATOM_LR_WSD)
            fprintf(out, " with a %s cooldown over its last %lld",
                    s->training.cooldown_shape == ATOM_COOLDOWN_LINEAR ? "linear" : "1-sqrt",
                    (long long)(s->training.cooldown_steps ? s->training.cooldown_steps
                                                           : horizon / 5));
        fprintf(out, "; ");
    }
    fprintf(out, "data %s (%s); ", s->data.path,
            s->data.format == ATOM_DATA_UINT16 ? "uint16 tokens" : "bytes");
    if (s->checkpoint.dir[0])
        fprintf(out, "checkpoints every %lld steps to %s (keep %d%s); ",
                (long long)s->checkpoint.every, s->checkpoint.dir, s->checkpoint.keep,
                s->checkpoint.async ? ", written in the background" : "");
    else
        fprintf(out, "no checkpoints; ");
    if (s->init.checkpoint[0] || s->init.safetensors[0])
        fprintf(out, "starting from %s%s (unless checkpoint.dir already holds a checkpoint); ",
                s->init.checkpoint[0] ? s->init.checkpoint : s->init.safetensors,
                s->init.checkpoint[0] && s->init.load == ATOM_INIT_WEIGHTS_OPTIMIZER
                    ? " with its optimizer state" : "");
    fprintf(out, "up to %d restart%s", s->restart.max_restarts,
            s->restart.max_restarts == 1 ? "" : "s");
    if (s->resources.time_limit)
        fprintf(out, ", time limit %llds", (long long)s->resources.time_limit);
    fprintf(out, ".\n");
}

int atomctl_cmd_validate(int argc, char **argv)
{
    static const struct option options[] = {
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        if (opt == 'h') {
            atomctl_print_usage("validate", stdout);
            return ATOMCTL_OK;
        }
        return atomctl_usage_error("validate", "unknown option '%s'", argv[optind - 1]);
    }
    if (optind >= argc)
        return atomctl_usage_error("validate", "no job spec given");
    int rc = ATOMCTL_OK;
    for (int i = optind; i < argc; i++) {
        atom_spec spec;
        atom_diags diags = {0};
        /* The data file is part of the job: missing, unreadable or holding ids beyond the
         * model's vocabulary, the job cannot run (submit and run refuse it too). */
        if (atom_spec_load(argv[i], &spec, &diags) == 0 && diags.count == 0 &&
            atom_spec_check_data(&spec, argv[i], &diags) == 0) {
            printf("%s: ok\n", argv[i]);
            print_summary(&spec, stdout);
        } else {
            atom_diags_print(&diags, stderr);
            fprintf(stderr, "%s: %d error%s\n", argv[i], diags.count, diags.count == 1 ? "" : "s");
            rc = ATOMCTL_FAILED;
        }
        atom_diags_free(&diags);
    }
    return rc;
}
