/* data/atom_data.c: atom-data, the command that turns text into token files and back. */
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/encode_jobs.h"
#include "data/prepare.h"

static void usage(FILE *f)
{
    fprintf(f,
"usage: atom-data prepare [--tokenizer gpt2|bytes] [--val-fraction F | --val-files GLOB]\n"
"                         [--threads N] -o OUTDIR INPUT...\n"
"       atom-data decode [--tokenizer gpt2|bytes] FILE\n"
"       atom-data encode [--tokenizer gpt2|bytes] [--threads N] [--binary] < TEXT\n"
"\n"
"prepare: turns text files into token files a job trains on (data.path, data.format).\n"
"  INPUT is a file or a folder (its files, recursively, in name order; names starting\n"
"  with '.' and empty files are skipped). Each file is one document; with gpt2, every\n"
"  document is followed by <|endoftext|> (id 50256), so documents are separated by it; with\n"
"  bytes (no such token) documents are simply concatenated. Text is taken as it is: bytes\n"
"  that are not UTF-8 are encoded byte by byte, and '<|endoftext|>' written in a file is text.\n"
"  Writes OUTDIR/train.bin and OUTDIR/val.bin, each with a sidecar FILE.json (tokenizer,\n"
"  vocabulary size, token count, largest id, source files) that atomctl validate reads.\n"
"  gpt2 writes little-endian uint16 ids (data.format: uint16), bytes one byte per token\n"
"  (data.format: bytes).\n"
"  --tokenizer T       gpt2 (GPT-2's byte-level BPE, 50,257 tokens; the default) or bytes\n"
"  --val-fraction F    the last F of the tokens go to val.bin (default 0.1; 0: no val.bin)\n"
"  --val-files GLOB    instead, the files whose path or name matches GLOB go to val.bin\n"
"  --threads N         encoding threads (default: every core); the output is the same\n"
"  --job-bytes N       the size of the parts a file is cut into to be encoded in parallel\n"
"                      (default 1048576; tests use small ones to test the cuts)\n"
"  -o, --output DIR    the output folder (made when missing)\n"
"decode: prints the text of a token file; the tokenizer comes from FILE.json when there is\n"
"  one, else from --tokenizer (default gpt2).\n"
"encode: prints the ids of standard input's text, one per line (--binary: the token file\n"
"  format instead).\n"
"Exit status: 0 done, 1 failed, 2 usage error.\n");
}

static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "atom-data: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(atom-data --help for usage)\n");
    return 2;
}

static int default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

static int parse_threads(const char *s, int *out)
{
    char *end;
    long n = strtol(s, &end, 10);
    if (*end || end == s || n < 1 || n > 1024)
        return -1;
    *out = (int)n;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"help", no_argument, NULL, 'h'},
        {"tokenizer", required_argument, NULL, 't'},
        {"val-fraction", required_argument, NULL, 'f'},
        {"val-files", required_argument, NULL, 'v'},
        {"threads", required_argument, NULL, 'j'},
        {"output", required_argument, NULL, 'o'},
        {"binary", no_argument, NULL, 'b'},
        {"job-bytes", required_argument, NULL, 'J'},
        {NULL, 0, NULL, 0},
    };
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
                      !strcmp(argv[1], "help"))) {
        usage(stdout);
        return 0;
    }
    if (argc < 2)
        return usage_error("no command given (prepare, decode or encode)");
    const char *cmd = argv[1];
    if (strcmp(cmd, "prepare") && strcmp(cmd, "decode") && strcmp(cmd, "encode"))
        return usage_error("unknown command '%s' (prepare, decode or encode)", cmd);
    prepare_opts o = {.tokenizer = NULL, .val_fraction = -1, .threads = default_threads(),
                      .job_bytes = ENCODE_JOB_BYTES};
    int binary = 0, opt;
    optind = 2;
    while ((opt = getopt_long(argc, argv, "ho:t:j:", options, NULL)) != -1) {
        char *end;
        switch (opt) {
        case 'h':
            usage(stdout);
            return 0;
        case 't':
            if (strcmp(optarg, "gpt2") && strcmp(optarg, "bytes"))
                return usage_error("--tokenizer %s: gpt2 or bytes", optarg);
            o.tokenizer = optarg;
            break;
        case 'f':
            o.val_fraction = strtod(optarg, &end);
            if (*end || end == optarg || !(o.val_fraction >= 0 && o.val_fraction < 1))
                return usage_error("--val-fraction %s: a number from 0 to below 1", optarg);
            break;
        case 'v':
            o.val_files = optarg;
            break;
        case 'j':
            if (parse_threads(optarg, &o.threads))
                return usage_error("--threads %s: a whole number from 1 to 1024", optarg);
            break;
        case 'o':
            o.out_dir = optarg;
            break;
        case 'b':
            binary = 1;
            break;
        case 'J':
            o.job_bytes = strtoull(optarg, &end, 10);
            if (*end || end == optarg || o.job_bytes < 1 || o.job_bytes > (1ull << 34))
                return usage_error("--job-bytes %s: a whole number from 1 to 2^34", optarg);
            break;
        default:
            return usage_error("%s: unknown option or missing value", cmd);
        }
    }
    atom_err err = {{0}};
    int rc;
    if (!strcmp(cmd, "prepare")) {
        if (o.val_files && o.val_fraction >= 0)
            return usage_error("prepare: --val-fraction and --val-files exclude each other");
        if (!o.out_dir)
            return usage_error("prepare: no output folder (-o OUTDIR)");
        if (optind >= argc)
            return usage_error("prepare: no input files or folders");
        if (!o.val_files && o.val_fraction < 0)
            o.val_fraction = 0.1;
        if (!o.tokenizer)
            o.tokenizer = "gpt2";
        o.inputs = argv + optind;
        o.n_inputs = argc - optind;
        rc = data_prepare(&o, &err);
    } else if (!strcmp(cmd, "decode")) {
        if (optind != argc - 1)
            return usage_error("decode: one token file expected");
        rc = data_decode(argv[optind], o.tokenizer, stdout, &err);
    } else {
        if (optind != argc)
            return usage_error("encode: reads standard input, takes no file");
        rc = data_encode(o.tokenizer ? o.tokenizer : "gpt2", o.threads, o.job_bytes, binary,
                         stdin, stdout, &err);
    }
    if (fflush(stdout) != 0 && rc == 0)
        rc = atom_errf(&err, "writing the output: %s", "standard output failed");
    if (rc != 0) {
        fprintf(stderr, "atom-data %s: %s\n", cmd, err.msg);
        return 1;
    }
    return 0;
}
