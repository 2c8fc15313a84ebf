/* scheduler/atomctl.c: atomctl's entry point: global flags, the command table, help and the exit
 * code table. Each command lives in its own atomctl_<name>.c. */
#include "scheduler/atomctl.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/common.h"
#include "scheduler/atomctl_jobs.h"

static const atomctl_command commands[] = {
    {"validate", atomctl_cmd_validate, "check a job spec and summarise it",
     "atomctl validate JOB.yaml...\n"
     "  Parses and checks each spec. Prints \"JOB.yaml: ok\" and a summary, or every mistake as\n"
     "  file:line:column: key: message.\n"},
    {"plan", atomctl_cmd_plan, "show where a job's ranks would run",
     "atomctl plan JOB.yaml [--cluster INVENTORY.yaml] [--json]\n"
     "  Places the job on an idle cluster (default: this machine, one node whose CPU slots stand\n"
     "  in for GPUs) and prints the rank layout: rank, node, GPU, dp, tp; the tensor- and\n"
     "  data-parallel groups; the switches used. Or says why the job does not fit.\n"
     "  --cluster FILE  the cluster inventory (configs/clusters/*.yaml)\n"
     "  --json          print the plan file (JSON) instead of the table\n"},
    {"ckpt", atomctl_cmd_ckpt, "list, verify or export checkpoints (no atomd needed)",
     "atomctl ckpt ls DIR | verify FILE | export SRC [--format safetensors] [-o OUT]\n"
     "  ls      every checkpoint of DIR: step, layout, size, time, committed or not, latest\n"
     "  verify  checks every checksum of every dataset; exit 1 naming the first bad one\n"
     "  export  the model as transformers' GPT-2 loads it: model.safetensors under GPT-2's names\n"
     "          and config.json (docs/model.md). SRC: a checkpoint file, a checkpoint folder (its\n"
     "          latest) or a latest link. OUT: a folder (made if missing), or FILE.safetensors\n"
     "          (config.json beside it); default: ckpt-STEP-hf/ beside the checkpoint\n"},
    {"plot", atomctl_cmd_plot, "a PNG of a run's train and validation loss and learning rate",
     "atomctl plot JOB|FILE|DIR [-o OUT.png] [--table] [--socket PATH]\n"
     "  Draws loss (train, and validation where logged) and the learning rate against steps from\n"
     "  train.jsonl, with gnuplot. JOB: every attempt's log from atomd, the last attempt's values\n"
     "  for a step logged twice (a restart); FILE: a train.jsonl; DIR: the one in that folder.\n"
     "  -o OUT.png  where the picture goes (default: job-JOB.png or train.png here)\n"
     "  --table     print the steps and values instead (tab-separated; nan: not logged)\n"},
    {"sample", atomctl_cmd_sample, "generate text from a checkpoint, on one CPU core",
     "atomctl sample CKPT [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K] [--seed S]\n"
     "                    [--tokenizer bytes|gpt2] [--json]\n"
     "  Prints the prompt and its continuation. CKPT: a checkpoint file, folder or latest link.\n"
     "  `atomctl sample --help` says more (defaults, the context window, --json).\n"},
    {"eval", atomctl_cmd_eval, "a checkpoint's loss and perplexity on a token file",
     "atomctl eval CKPT DATA [--batches N] [--batch B] [--format bytes|uint16] [--json]\n"
     "  Loss (nats per token), perplexity and tokens/s over DATA's consecutive sequences.\n"
     "  `atomctl eval --help` says more.\n"},
    /* The commands that talk to atomd (atomctl_jobs.c); every one takes --socket PATH, and every
     * one but run --server HOST:PORT (atomd's TCP port from another node). */
    {"run", atomctl_cmd_run, "run a job here and follow it to its end (starts atomd if needed)",
     "atomctl run JOB.yaml [--cluster INVENTORY.yaml] [--socket PATH]\n"
     "  Validates the spec, starts a private atomd for this machine when none is reachable, submits\n"
     "  the job and shows its progress (step/steps, loss, tokens/s, ETA) until it ends. Exits 0 when\n"
     "  it is done, 1 when it failed, was cancelled or hit its time limit; ^C cancels it (exit 130).\n"},
    {"submit", atomctl_cmd_submit, "queue a job with atomd",
     "atomctl submit JOB.yaml [--json] [--socket PATH]\n"
     "  Validates the spec (file:line:column errors) and queues it; prints the job id.\n"},
    {"status", atomctl_cmd_status, "the cluster, the running and the pending jobs, in one screen",
     "atomctl status [--json] [--socket PATH]\n"
     "  Nodes up/drained/down, GPUs busy and free, and every running and the first pending jobs with\n"
     "  owner, project, size, step/steps, loss, tokens/s, last checkpoint and restarts.\n"},
    {"queue", atomctl_cmd_queue, "list the jobs that have not ended",
     "atomctl queue [--all] [--json] [--socket PATH]\n"
     "  --all  ended jobs too (the newest atomd keeps in memory)\n"},
    {"show", atomctl_cmd_show, "one job: its state, progress and attempts",
     "atomctl show JOB [--json] [--socket PATH]\n"},
    {"cancel", atomctl_cmd_cancel, "cancel a job (your own; administrators: any)",
     "atomctl cancel JOB [--socket PATH]\n"},
    {"logs", atomctl_cmd_logs, "a job's output",
     "atomctl logs JOB [-f] [--rank N] [--attempt N] [--json] [--socket PATH]\n"
     "  Without --rank: rank 0's output and, once the attempt has ended, the launcher's own\n"
     "  messages after a \"---- launcher.log ----\" line (mpirun's or Slurm's: which rank died of\n"
     "  what, a node it could not reach). Files: <state>/jobs/JOB/attempt-N/rank-R.log, launcher.log.\n"
     "  -f         follow until the job ends (through its restarts)\n"
     "  --rank N   rank N's output (its stdout and stderr) only\n"
     "  --attempt  an earlier attempt (default: the last)\n"},
    {"nodes", atomctl_cmd_nodes, "the cluster's nodes and their states",
     "atomctl nodes [--json] [--socket PATH]\n"},
    {"drain", atomctl_cmd_drain, "take a node out of service (administrators)",
     "atomctl drain NODE [--reason TEXT] [--socket PATH]\n"},
    {"resume", atomctl_cmd_resume, "put a drained node back in service (administrators)",
     "atomctl resume NODE [--socket PATH]\n"},
    {"history", atomctl_cmd_history, "ended jobs, newest first (from atomd's store)",
     "atomctl history [--all] [--json] [--socket PATH]\n"
     "  --all  every ended job (default: the newest 100)\n"},
    {"usage", atomctl_cmd_usage, "GPU-hours per user and project, and the fair-share figures",
     "atomctl usage [--json] [--socket PATH]\n"},
};
static const int n_commands = (int)(sizeof commands / sizeof commands[0]);

static const atomctl_command *find_command(const char *name)
{
    for (int i = 0; i < n_commands; i++)
        if (!strcmp(commands[i].name, name))
            return &commands[i];
    return NULL;
}

void atomctl_print_usage(const char *command, FILE *out)
{
    const atomctl_command *c = find_command(command);
    if (c)
        fprintf(out, "usage: %s", c->usage);
}

int atomctl_usage_error(const char *command, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "atomctl %s: ", command);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    atomctl_print_usage(command, stderr);
    return ATOMCTL_USAGE;
}

static void print_help(FILE *out)
{
    fprintf(out,
            "usage: atomctl [--help] [--version] COMMAND [ARGS]\n"
            "\n"
            "atom: distributed training jobs on a GPU cluster, or on this machine's CPU.\n"
            "\n"
            "commands:\n");
    for (int i = 0; i < n_commands; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out,
            "\n"
            "`atomctl COMMAND --help` describes one command.\n"
            "\n"
            "exit codes:\n"
            "  0  ok\n"
            "  1  failed: an invalid spec, a job that does not fit, an unreadable file\n"
            "  2  usage: unknown command or flag, missing argument\n"
            "  3  atomd cannot be reached\n"
            "  130  run: interrupted (^C cancelled the job)\n"
            "\n"
            "environment:\n"
            "  ATOM_SOCKET        atomd's Unix socket on this machine (as --socket PATH)\n"
            "  ATOM_SERVER        HOST:PORT: talk to atomd's TCP port from another node, every request\n"
            "                     signed by munged (as --server HOST:PORT; not for run)\n"
            "  ATOM_MUNGE_SOCKET  munged's socket when it is not munged's default\n");
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    /* '+': stop at the command name, whose own flags its handler parses. */
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "+hV", options, NULL)) != -1) {
        switch (opt) {
        case 'h':
            print_help(stdout);
            return ATOMCTL_OK;
        case 'V':
            printf("atomctl 0.1.0\n");
            return ATOMCTL_OK;
        default:
            fprintf(stderr, "atomctl: unknown option '%s'\n", argv[optind - 1]);
            print_help(stderr);
            return ATOMCTL_USAGE;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "atomctl: no command given\n");
        print_help(stderr);
        return ATOMCTL_USAGE;
    }
    const char *name = argv[optind];
    if (!strcmp(name, "help")) {
        if (optind + 1 < argc && find_command(argv[optind + 1])) {
            atomctl_print_usage(argv[optind + 1], stdout);
            return ATOMCTL_OK;
        }
        print_help(stdout);
        return ATOMCTL_OK;
    }
    const atomctl_command *c = find_command(name);
    if (!c) {
        fprintf(stderr, "atomctl: unknown command '%s'\n", name);
        print_help(stderr);
        return ATOMCTL_USAGE;
    }
    /* The handler parses from its own name on. optind = 0 makes glibc's getopt start afresh,
     * forgetting the '+' (stop at the first operand) used above. */
    int sub_argc = argc - optind;
    char **sub_argv = argv + optind;
    optind = 0;
    opterr = 0;
    return c->handler(sub_argc, sub_argv);
}
