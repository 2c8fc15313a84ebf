/* worker/infer_main.c: atom-infer, a trained model on one CPU core (`atomctl sample` and
 * `atomctl eval` run it):
 *
 *   atom-infer sample CKPT [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K]
 *                          [--seed S] [--tokenizer NAME] [--json]
 *   atom-infer eval CKPT DATA [--batches N] [--batch B] [--format bytes|uint16] [--json]
 *
 * One process: MPI is initialised as a singleton (no mpirun) because the checkpoints module
 * reads through parallel HDF5; a checkpoint of any TP x DP layout is loaded whole (TP 1).
 * Exit status: 0 done, 1 failed (the message says what and where), 2 usage.
 */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <mpi.h>

#include "worker/infer.h"

#define EXIT_USAGE 2

static char g_prog[96] = "atom-infer"; /* messages: "atomctl sample", "atom-infer eval" */
static char g_base[64] = "atom-infer"; /* usage: the program's name alone */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: %s sample CKPT [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K]\n"
            "                  [--seed S] [--tokenizer NAME] [--json]\n"
            "       %s eval CKPT DATA [--batches N] [--batch B] [--format bytes|uint16] [--json]\n"
            "\n"
            "CKPT: a checkpoint file, a checkpoint folder (its latest) or a `latest` link, of any\n"
            "tensor x data layout; it runs here on one CPU core.\n"
            "\n"
            "sample: prints the prompt and its continuation (the text, as the tokens come).\n"
            "  --prompt TEXT       the text to continue (default: empty, which starts from the\n"
            "                      tokenizer's end-of-text token; bytes has none: give a prompt)\n"
            "  --tokens N          tokens to generate (default 200)\n"
            "  --temperature T     0: always the likeliest token (greedy); higher is more varied\n"
            "                      (default 0.8)\n"
            "  --top-k K           draw among the K likeliest tokens only; 0: all (default 200)\n"
            "  --seed S            the random draws: a seed gives the same text again (default 1)\n"
            "  --tokenizer NAME    bytes or gpt2, when the checkpoint does not record its own\n"
            "  --json              one JSON object instead: ids, text and timings\n"
            "  A key/value cache makes each new token cost one position. The prompt must fit the\n"
            "  model's context; when prompt + tokens pass it, the window slides: each later token\n"
            "  sees the context - 1 tokens before it (the cache is rebuilt from them).\n"
            "\n"
            "eval: the loss of the checkpoint on a token file, with its perplexity and speed.\n"
            "  DATA is cut into consecutive sequences of context + 1 tokens (a shorter tail is\n"
            "  left out); the loss is the mean cross-entropy per predicted token (nats), as\n"
            "  training computes it, and the perplexity exp(loss).\n"
            "  --batches N         at most N batches (default: the whole file)\n"
            "  --batch B           sequences per forward (default 8)\n"
            "  --format F          bytes or uint16 (default: the checkpoint's data.format)\n"
            "  --json              one JSON object instead of the line\n"
            "\n"
            "exit status: 0 done; 1 failed; 2 usage\n",
            g_base, g_base);
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "%s: ", g_prog);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(--help describes every option)\n");
    return EXIT_USAGE;
}

static int fail(const atom_err *err)
{
    fprintf(stderr, "%s: %s\n", g_prog, err->msg);
    return 1;
}

static bool parse_long(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* ---- JSON out (the worker has no JSON library): strings as valid UTF-8 ---- */

/* Length of the valid UTF-8 sequence at s (0: not one). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80)
        return 1;
    size_t len = s[0] >= 0xF0 && s[0] <= 0xF4 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC2 ? 2 : 0;
    if (len == 0 || len > n || s[0] > 0xF4)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    if ((s[0] == 0xE0 && s[1] < 0xA0) || (s[0] == 0xED && s[1] > 0x9F) ||
        (s[0] == 0xF0 && s[1] < 0x90) || (s[0] == 0xF4 && s[1] > 0x8F))
        return 0;
    return len;
}

/* A JSON string of the bytes; bytes that are not UTF-8 become U+FFFD. */
static void json_string(FILE *out, const unsigned char *s, size_t n)
{
    fputc('"', out);
    for (size_t i = 0; i < n;) {
        size_t len = utf8_len(s + i, n - i);
        if (len == 0) {
            fputs("\\ufffd", out);
            i++;
        } else if (len > 1) {
            fwrite(s + i, 1, len, out);
            i += len;
        } else {
            unsigned char c = s[i++];
            if (c == '"' || c == '\\')
                fprintf(out, "\\%c", c);
            else if (c == '\n')
                fputs("\\n", out);
            else if (c < 0x20 || c == 0x7F)
                fprintf(out, "\\u%04x", c);
            else
                fputc(c, out);
        }
    }
    fputc('"', out);
}

static void json_ids(FILE *out, const int *ids, int n)
{
    fputc('[', out);
    for (int i = 0; i < n; i++)
        fprintf(out, i ? ",%d" : "%d", ids[i]);
    fputc(']', out);
}

/* ---- text out ---- */

typedef struct text_buf {
    unsigned char *bytes;
    size_t n, cap;
} text_buf;

static void text_append(text_buf *t, const unsigned char *p, size_t n)
{
    if (t->n + n > t->cap) {
        size_t cap = (t->cap + n) * 2 + 64;
        unsigned char *grown = realloc(t->bytes, cap);
        if (!grown)
            return; /* the JSON text is then cut short; the ids are whole */
        t->bytes = grown;
        t->cap = cap;
    }
    memcpy(t->bytes + t->n, p, n);
    t->n += n;
}

typedef struct sink {
    const atom_infer_tokenizer *tok;
    bool json;
    text_buf text;
} sink;

static void emit(sink *s, int id)
{
    size_t len = 0;
    const unsigned char *p = s->tok->token_bytes(s->tok, id, &len);
    if (!p)
        return;
    if (s->json) {
        text_append(&s->text, p, len);
    } else {
        fwrite(p, 1, len, stdout);
        fflush(stdout);
    }
}

static void on_token(void *arg, int id) { emit(arg, id); }

/* MPI as a singleton, once the command line is known good. */
static int mpi_start(void)
{
    /* ROMIO reads the checkpoint (checkpoints.h); a singleton that starts no Open MPI daemon
     * (it never spawns or connects), which halves MPI_Init's time */
    setenv("OMPI_MCA_io", "romio321", 0);
    setenv("OMPI_MCA_ess_singleton_isolated", "1", 0);
    if (MPI_Init(NULL, NULL) != MPI_SUCCESS) {
        fprintf(stderr, "%s: MPI_Init failed\n", g_prog);
        return -1;
    }
    int world = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    if (world != 1) {
        fprintf(stderr, "%s: runs as one process, not %d (start it without mpirun)\n", g_prog,
                world);
        return -1;
    }
    return 0;
}

/* ---- sample ---- */

static int cmd_sample(int argc, char **argv)
{
    static const struct option opts[] = {
        {"prompt", required_argument, NULL, 'p'},      {"tokens", required_argument, NULL, 'n'},
        {"temperature", required_argument, NULL, 't'}, {"top-k", required_argument, NULL, 'k'},
        {"seed", required_argument, NULL, 's'},        {"tokenizer", required_argument, NULL, 'z'},
        {"json", no_argument, NULL, 'j'},              {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *prompt = "", *tokenizer = NULL;
    long long tokens = 200, top_k = 200, seed = 1;
    double temperature = 0.8;
    bool json = false;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'p': prompt = optarg; break;
        case 'z': tokenizer = optarg; break;
        case 'j': json = true; break;
        case 'h': usage(stdout); return 0;
        case 'n':
            if (!parse_long(optarg, 1, 1 << 24, &tokens))
                return usage_error("--tokens wants a whole number from 1 to 16777216, not '%s'",
                                   optarg);
            break;
        case 'k':
            if (!parse_long(optarg, 0, 1 << 24, &top_k))
                return usage_error("--top-k wants a whole number, 0 (all) or more, not '%s'",
                                   optarg);
            break;
        case 's':
            if (!parse_long(optarg, 0, INT64_MAX, &seed))
                return usage_error("--seed wants a whole number, 0 or more, not '%s'", optarg);
            break;
        case 't':
            errno = 0;
            temperature = strtod(optarg, &end);
            if (errno || end == optarg || *end || !isfinite(temperature) || temperature < 0)
                return usage_error("--temperature wants a number, 0 or more, not '%s'", optarg);
            break;
        default: return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 1)
        return usage_error("sample takes one checkpoint (a file, a folder or latest)%s", "");
    const char *ckpt_path = argv[optind];
    if (mpi_start() != 0)
        return 1;

    atom_err err = {{0}};
    atom_infer_ckpt ck;
    if (atom_infer_ckpt_load(ckpt_path, MPI_COMM_SELF, &ck, &err) != 0)
        return fail(&err);
    char tok_name[32];
    atom_infer_tokenizer tok = {0};
    atom_generator *g = NULL;
    int *ids = NULL, n_prompt = 0, *out = NULL, rc = 1;
    if (atom_infer_ckpt_tokenizer(&ck, tokenizer, tok_name, sizeof tok_name, &err) != 0 ||
        atom_infer_tokenizer_open(tok_name, &tok, &err) != 0 ||
        tok.encode(&tok, (const unsigned char *)prompt, strlen(prompt), &ids, &n_prompt,
                   &err) != 0)
        goto out;
    int T = ck.spec.model.context;
    if (n_prompt == 0) {
        if (tok.eot < 0) {
            atom_errf(&err, "the prompt is empty, and the %s tokenizer has no end-of-text "
                            "token to start from: give --prompt TEXT", tok.name);
            goto out;
        }
        ids = malloc(sizeof(int));
        if (!ids) {
            atom_errf(&err, "out of memory");
            goto out;
        }
        ids[n_prompt++] = tok.eot;
    }
    if (n_prompt > T) {
        atom_errf(&err, "the prompt is %d tokens, more than the model's context of %d", n_prompt,
                  T);
        goto out;
    }
    out = malloc((size_t)tokens * sizeof(int));
    if (!out) {
        atom_errf(&err, "out of memory for %lld tokens", tokens);
        goto out;
    }
    if (atom_generator_create(&ck, &g, &err) != 0)
        goto out;
    sink s = {.tok = &tok, .json = json};
    if (prompt[0]) /* the text is the prompt's and its continuation's (not a start token's) */
        for (int i = 0; i < n_prompt; i++)
            emit(&s, ids[i]);
    atom_generate_opts go = {(int)tokens, (float)temperature, (int)top_k, (uint64_t)seed,
                             on_token, &s};
    atom_generate_stats st;
    if (atom_generate(g, ids, n_prompt, &go, out, &st, &err) != 0) {
        free(s.text.bytes);
        goto out;
    }
    double tps = st.decode_s > 0 ? (tokens - 1) / st.decode_s : 0.0;
    if (json) {
        printf("{\"checkpoint\":");
        json_string(stdout, (const unsigned char *)ck.path, strlen(ck.path));
        printf(",\"step\":%lld,\"tokenizer\":\"%s\",\"prompt_ids\":", (long long)ck.step,
               tok.name);
        json_ids(stdout, ids, n_prompt);
        printf(",\"ids\":");
        json_ids(stdout, out, (int)tokens);
        printf(",\"text\":");
        json_string(stdout, s.text.bytes, s.text.n);
        printf(",\"prefill_s\":%.6f,\"decode_s\":%.6f,\"tokens_per_s\":%.3f,"
               "\"context_slides\":%d}\n",
               st.prefill_s, st.decode_s, tps, st.slides);
    } else {
        putchar('\n');
        fprintf(stderr, "%s: %lld tokens after a %d-token prompt: prefill %.1f ms, then %.1f "
                        "tokens/s%s (%s, step %lld)\n",
                g_prog, tokens, n_prompt, 1000 * st.prefill_s, tps,
                st.slides ? ", past the context (window slid)" : "", ck.path,
                (long long)ck.step);
    }
    free(s.text.bytes);
    rc = 0;
out:
    if (rc != 0)
        fail(&err);
    atom_generator_free(g);
    if (tok.close)
        atom_infer_tokenizer_close(&tok);
    free(ids);
    free(out);
    atom_infer_ckpt_free(&ck);
    return rc;
}

/* ---- eval ---- */

static int cmd_eval(int argc, char **argv)
{
    static const struct option opts[] = {
        {"batches", required_argument, NULL, 'n'}, {"batch", required_argument, NULL, 'b'},
        {"format", required_argument, NULL, 'f'},  {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
    long long batches = 0, batch = 8;
    const char *format = NULL;
    bool json = false;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = true; break;
        case 'h': usage(stdout); return 0;
        case 'f':
            if (strcmp(optarg, "bytes") != 0 && strcmp(optarg, "uint16") != 0)
                return usage_error("--format is bytes or uint16, not '%s'", optarg);
            format = optarg;
            break;
        case 'n':
            if (!parse_long(optarg, 1, 1 << 30, &batches))
                return usage_error("--batches wants a whole number of at least 1, not '%s'",
                                   optarg);
            break;
        case 'b':
            if (!parse_long(optarg, 1, 4096, &batch))
                return usage_error("--batch wants a whole number from 1 to 4096, not '%s'",
                                   optarg);
            break;
        default: return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 2)
        return usage_error("eval takes a checkpoint and a token file%s", "");
    const char *ckpt_path = argv[optind], *data_path = argv[optind + 1];
    if (mpi_start() != 0)
        return 1;
    atom_err err = {{0}};
    atom_infer_ckpt ck;
    if (atom_infer_ckpt_load(ckpt_path, MPI_COMM_SELF, &ck, &err) != 0)
        return fail(&err);
    atom_data_format fmt = format ? (!strcmp(format, "uint16") ? ATOM_DATA_UINT16
                                                               : ATOM_DATA_BYTES)
                                  : ck.spec.data.format;
    atom_eval_result r;
    int rc = atom_eval_run(&ck, data_path, fmt, (int)batch, (int)batches, &r, &err);
    if (rc == 0 && json) {
        printf("{\"checkpoint\":");
        json_string(stdout, (const unsigned char *)ck.path, strlen(ck.path));
        printf(",\"step\":%lld,\"data\":", (long long)ck.step);
        json_string(stdout, (const unsigned char *)data_path, strlen(data_path));
        printf(",\"loss\":%.9g,\"perplexity\":%.9g,\"tokens\":%lld,\"sequences\":%lld,"
               "\"seconds\":%.6f,\"tokens_per_s\":%.3f}\n",
               r.loss, r.perplexity, (long long)r.tokens, (long long)r.sequences, r.seconds,
               r.tokens_per_s);
    } else if (rc == 0) {
        printf("loss %.4f | perplexity %.3f | %lld tokens in %.2f s (%.0f tokens/s) | %s "
               "(step %lld)\n",
               r.loss, r.perplexity, (long long)r.tokens, r.seconds, r.tokens_per_s, ck.path,
               (long long)ck.step);
    }
    atom_infer_ckpt_free(&ck);
    return rc == 0 ? 0 : fail(&err);
}

int main(int argc, char **argv)
{
    /* atomctl runs this as `atomctl sample ...`: messages then name that command */
    char *base = basename(argv[0]);
    snprintf(g_base, sizeof g_base, "%s", base);
    if (argc > 1 && (!strcmp(argv[1], "sample") || !strcmp(argv[1], "eval")))
        snprintf(g_prog, sizeof g_prog, "%s %s", base, argv[1]);
    else
        snprintf(g_prog, sizeof g_prog, "%s", base);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    bool sample = !strcmp(argv[1], "sample");
    if (!sample && strcmp(argv[1], "eval") != 0)
        return usage_error("unknown command '%s' (sample, eval)", argv[1]);
    /* one core: OpenBLAS's one thread (oneDNN's, for bf16, follow OMP_NUM_THREADS) */
    setenv("OPENBLAS_NUM_THREADS", "1", 0);
    openblas_set_num_threads(atoi(getenv("OPENBLAS_NUM_THREADS")));
    atom_log_init(g_prog, ATOM_LOG_WARN);
    optind = 1; /* the command's options follow its name */
    int rc = sample ? cmd_sample(argc - 1, argv + 1) : cmd_eval(argc - 1, argv + 1);
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (initialized)
        MPI_Finalize();
    return rc;
}
