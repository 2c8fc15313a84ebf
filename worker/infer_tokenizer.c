/* worker/infer_tokenizer.c: the tokenizers atom-infer decodes and encodes with, opened by name in
 * one place (atom_infer_tokenizer_open), and the name the worker records in its checkpoints. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/infer.h"

/* ---- bytes: id b is the byte b ---- */

static const unsigned char *bytes_token(const atom_infer_tokenizer *tok, int id, size_t *len)
{
    static unsigned char all[256];
    static int ready;
    (void)tok;
    if (!ready) {
        for (int i = 0; i < 256; i++)
            all[i] = (unsigned char)i;
        ready = 1;
    }
    if (id < 0 || id > 255) {
        *len = 0;
        return NULL;
    }
    *len = 1;
    return &all[id];
}

static int bytes_encode(const atom_infer_tokenizer *tok, const unsigned char *text, size_t len,
                        int **ids, int *n, atom_err *err)
{
    (void)tok;
    int *grown = realloc(*ids, ((size_t)*n + len + 1) * sizeof(int));
    if (!grown)
        return atom_errf(err, "out of memory for %zu tokens", len);
    *ids = grown;
    for (size_t i = 0; i < len; i++)
        grown[(*n)++] = text[i];
    return 0;
}

static void no_close(atom_infer_tokenizer *tok) { (void)tok; }

int atom_infer_tokenizer_open(const char *name, atom_infer_tokenizer *tok, atom_err *err)
{
    memset(tok, 0, sizeof *tok);
    if (!strcmp(name, "bytes")) {
        snprintf(tok->name, sizeof tok->name, "bytes");
        tok->vocab = 256;
        tok->eot = -1;
        tok->encode = bytes_encode;
        tok->token_bytes = bytes_token;
        tok->close = no_close;
        return 0;
    }
    if (!strcmp(name, "gpt2"))
        /* HOOK (GPT-2 BPE): open the data module's tokenizer here (data/data.h:
         * atom_tokenizer_open("gpt2"), atom_encode for encode, atom_tokenizer_token for
         * token_bytes, atom_tokenizer_eot for eot) once that module is part of the build. */
        return atom_errf(err, "the gpt2 tokenizer is not part of this build of atom yet "
                              "(only bytes is)");
    return atom_errf(err, "unknown tokenizer '%s' (known: bytes, gpt2)", name);
}

void atom_infer_tokenizer_close(atom_infer_tokenizer *tok)
{
    if (tok->close)
        tok->close(tok);
    memset(tok, 0, sizeof *tok);
}

void atom_infer_data_tokenizer(const atom_spec *spec, char *name, size_t size)
{
    /* HOOK (token file records): a uint16 file's tokenizer is what made it; once the data
     * module writes its record beside the file (FILE.json), read its "tokenizer" here. */
    snprintf(name, size, "%s", spec->data.format == ATOM_DATA_BYTES ? "bytes" : "");
}
