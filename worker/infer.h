/* worker/infer.h: using a trained model on one CPU core (atom-infer, behind `atomctl sample`
 * and `atomctl eval`): a checkpoint of any TP x DP layout loaded at TP 1, text generation with a
 * key/value cache, sampling, evaluation on a token file, and the tokenizers that turn text into
 * ids and back.
 *
 * The math is the training model's: the same CPU backend ops (worker/backend.h: LayerNorm,
 * Linear through sgemm, GELU, residual; sgemv for a single row) and kernels.h's causal softmax
 * row. The generator only
 * computes the positions it has not seen (prefill the prompt once, then one token at a time, each
 * attending over the cached keys and values of the positions before it), so generating n tokens
 * costs O(n) forward positions instead of O(n^2). Evaluation runs the training forward itself
 * (atom_model_forward): its loss is the one training logs for the same tokens.
 */
#ifndef ATOM_WORKER_INFER_H
#define ATOM_WORKER_INFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mpi.h>

#include "common/common.h"
#include "worker/model.h"

/* ---- tokenizers ------------------------------------------------------------------------- */

typedef struct atom_infer_tokenizer atom_infer_tokenizer;
struct atom_infer_tokenizer {
    char name[32];  /* "bytes", "gpt2" */
    int vocab;      /* ids it makes: 0..vocab-1 */
    int eot;        /* the end-of-text id that starts an empty prompt; -1: none */
    /* Appends the ids of text[0..len) to *ids (realloc'd; *n counts them). */
    int (*encode)(const atom_infer_tokenizer *tok, const unsigned char *text, size_t len,
                  int **ids, int *n, atom_err *err);
    /* The bytes of one id (NULL and *len 0 for an id it does not know). */
    const unsigned char *(*token_bytes)(const atom_infer_tokenizer *tok, int id, size_t *len);
    void (*close)(atom_infer_tokenizer *tok);
    void *impl;
};

/* The one place tokenizers are opened by name: "bytes" (one token per byte) and "gpt2" (GPT-2's
 * byte-level BPE), both the data module's (data/data.h), as atom-data prepare uses them. */
int atom_infer_tokenizer_open(const char *name, atom_infer_tokenizer *tok, atom_err *err);
void atom_infer_tokenizer_close(atom_infer_tokenizer *tok);

/* The tokenizer the training data of a spec was made with, as the worker records it in each
 * checkpoint: the token file's sidecar's (atom-data prepare), else "bytes" for data.format bytes,
 * else "" (unknown: sampling then asks for --tokenizer). */
void atom_infer_data_tokenizer(const atom_spec *spec, char *name, size_t size);

/* ---- a checkpoint at TP 1 ---------------------------------------------------------------- */

typedef struct atom_infer_ckpt {
    char path[ATOM_PATH_MAX + 64]; /* the file loaded (a folder's latest resolved) */
    atom_spec spec;                /* the job spec it records: the model's shape, data, precision */
    atom_param_table table;        /* TP rank 0 of 1: every parameter whole */
    float *params;                 /* table.total floats, host memory, in the reference order */
    int64_t step;                  /* optimizer steps done */
    int tp, dp;                    /* the layout that wrote it */
    char tokenizer[32];            /* recorded by the worker; "" when the checkpoint has none */
} atom_infer_ckpt;

/* Loads PATH (a checkpoint file, a checkpoint folder: its latest, or a `latest` link) whatever
 * layout wrote it, verifying every checksum. Collective over comm (MPI_COMM_SELF here). */
int atom_infer_ckpt_load(const char *path, MPI_Comm comm, atom_infer_ckpt *ck, atom_err *err);
void atom_infer_ckpt_free(atom_infer_ckpt *ck);

/* The tokenizer name to decode with: override (--tokenizer) if given, else the one the
 * checkpoint records, else "bytes" when its data was bytes or its vocabulary is at most 256;
 * else an error asking for --tokenizer. */
int atom_infer_ckpt_tokenizer(const atom_infer_ckpt *ck, const char *override, char *name,
                              size_t size, atom_err *err);

/* ---- generation with a key/value cache --------------------------------------------------- */

typedef struct atom_generator atom_generator;

/* A generator over ck's weights (which must outlive it), for sequences up to the model's
 * context T. Memory: the K and V caches, 2 x L x T x C floats, and one chunk's activations. */
int atom_generator_create(const atom_infer_ckpt *ck, atom_generator **out, atom_err *err);
void atom_generator_free(atom_generator *g);
/* Forgets every position (the next feed starts at position 0). */
void atom_generator_reset(atom_generator *g);
/* Runs ids[0..n) as the next positions (a prompt at once, or one token): their keys and values
 * join the cache, and the logits of the last one become readable. Fails when the positions
 * would pass the context (the caller slides, see atom_generate) or an id is not below V. */
int atom_generator_feed(atom_generator *g, const int *ids, int n, atom_err *err);
/* Positions in the cache. */
int atom_generator_length(const atom_generator *g);
/* The last fed position's logits over the padded vocabulary (Vp floats; columns V..Vp-1 are
 * padding, never sampled). */
const float *atom_generator_logits(const atom_generator *g);

/* The next token from logits over the real vocabulary (the first `vocab`): temperature 0 is the
 * argmax (the lowest id among equal maxima); else softmax(logits / temperature) restricted to
 * the top_k largest (0: all; ties with the k-th kept), drawn with a uniform number that is a
 * pure function of (seed, counter). scratch holds vocab floats. */
int atom_sample_token(const float *logits, int vocab, float temperature, int top_k,
                      uint64_t seed, uint64_t counter, float *scratch);

typedef struct atom_generate_opts {
    int tokens;          /* to generate, >= 1 */
    float temperature;   /* >= 0 */
    int top_k;           /* 0: no limit */
    uint64_t seed;
    /* Called with each generated id as soon as it is drawn (streaming output); may be NULL. */
    void (*on_token)(void *arg, int id);
    void *arg;
} atom_generate_opts;

typedef struct atom_generate_stats {
    double prefill_s;    /* the prompt's forward */
    double decode_s;     /* everything after it: one position per generated token, and slides */
    int slides;          /* times the window slid past the context */
} atom_generate_stats;

/* Generates opts->tokens ids after prompt[0..n_prompt) (1 <= n_prompt <= T) into out. When
 * the sequence reaches the context T, the window slides: the cache is rebuilt from the last T-1
 * tokens, and each later token sees the T-1 before it at most. */
int atom_generate(atom_generator *g, const int *prompt, int n_prompt,
                  const atom_generate_opts *opts, int *out, atom_generate_stats *stats,
                  atom_err *err);

/* ---- evaluation on a token file ---------------------------------------------------------- */

typedef struct atom_eval_result {
    double loss;         /* mean cross-entropy per predicted token (nats) */
    double perplexity;   /* exp(loss) */
    int64_t tokens;      /* predicted tokens: sequences x T */
    int64_t sequences;
    double seconds;      /* the forwards */
    double tokens_per_s;
} atom_eval_result;

/* The file cut into consecutive sequences of T+1 tokens (sequence i: tokens i(T+1) ..
 * i(T+1)+T; a shorter tail is left out), run through the training forward in batches of
 * `batch` sequences, at most max_batches of them (0: the whole file). The loss is the mean over
 * every predicted token, as training computes a batch's. */
int atom_eval_run(const atom_infer_ckpt *ck, const char *data_path, atom_data_format format,
                  int batch, int max_batches, atom_eval_result *res, atom_err *err);

#endif
