/* worker/infer_tokenizer.c: the tokenizers atom-infer decodes and encodes with, opened by name in
 * one place (atom_infer_tokenizer_open), and the name the worker records in its checkpoints. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/data.h"
#include "worker/infer.h"

/* Both tokenizers are the data module's (data/data.h), the ones atom-data prepare made the
 * training data with: the same ids, one implementation. */
typedef struct data_tokenizer {
    atom_tokenizer *tok;
    atom_encoder *enc;
} data_tokenizer;

static const unsigned char *data_token(const atom_infer_tokenizer *tok, int id, size_t *len)
{
    const data_tokenizer *t = tok->impl;
    *len = 0;
    return id < 0 ? NULL : atom_tokenizer_token(t->tok, (unsigned)id, len);
}

static int data_encode(const atom_infer_tokenizer *tok, const unsigned char *text, size_t len,
                       int **ids, int *n, atom_err *err)
{
    const data_tokenizer *t = tok->impl;
    atom_tokens out = {0};
    if (atom_encode(t->enc, text, len, &out, err)) {
        atom_tokens_free(&out);
        return -1;
    }
    int *grown = realloc(*ids, ((size_t)*n + out.n + 1) * sizeof(int));
    if (!grown) {
        atom_tokens_free(&out);
        return atom_errf(err, "out of memory for %zu tokens", out.n);
    }
    *ids = grown;
    for (size_t i = 0; i < out.n; i++)
        grown[(*n)++] = out.ids[i];
    atom_tokens_free(&out);
    return 0;
}

static void data_close(atom_infer_tokenizer *tok)
{
    data_tokenizer *t = tok->impl;
    if (!t)
        return;
    atom_encoder_free(t->enc);
    atom_tokenizer_close(t->tok);
    free(t);
    tok->impl = NULL;
}

int atom_infer_tokenizer_open(const char *name, atom_infer_tokenizer *tok, atom_err *err)
{
    memset(tok, 0, sizeof *tok);
    data_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return atom_errf(err, "out of memory");
    if (atom_tokenizer_open(name, &t->tok, err)) {
        free(t);
        return -1;
    }
    if (!(t->enc = atom_encoder_new(t->tok))) {
        atom_tokenizer_close(t->tok);
        free(t);
        return atom_errf(err, "out of memory for the %s encoder", name);
    }
    snprintf(tok->name, sizeof tok->name, "%s", atom_tokenizer_name(t->tok));
    tok->vocab = atom_tokenizer_vocab(t->tok);
    tok->eot = atom_tokenizer_eot(t->tok);
    tok->encode = data_encode;
    tok->token_bytes = data_token;
    tok->close = data_close;
    tok->impl = t;
    return 0;
}

void atom_infer_tokenizer_close(atom_infer_tokenizer *tok)
{
    if (tok->close)
        tok->close(tok);
    memset(tok, 0, sizeof *tok);
}

void atom_infer_data_tokenizer(const atom_spec *spec, char *name, size_t size)
{
    /* A token file's tokenizer is what made it: its sidecar (atom-data prepare) says. */
    atom_token_sidecar side;
    atom_err err = {{0}};
    if (spec->data.path[0] && atom_token_sidecar_read(spec->data.path, &side, &err) == 0 &&
        side.tokenizer[0])
        snprintf(name, size, "%s", side.tokenizer);
    else
        snprintf(name, size, "%s", spec->data.format == ATOM_DATA_BYTES ? "bytes" : "");
}
