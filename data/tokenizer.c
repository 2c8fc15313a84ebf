/* data/tokenizer.c: the two tokenizers behind data.h (gpt2 and bytes), the per-thread
 * encoder, and where a text may be cut for encoding in parallel. */
#include <stdlib.h>
#include <string.h>

#include "data/data_internal.h"
#include "data/unicode_tables.h"

typedef enum { TOK_BYTES, TOK_GPT2 } tok_kind;

struct atom_tokenizer {
    tok_kind kind;
    gpt2_merges *merges; /* gpt2 */
};

struct atom_encoder {
    const atom_tokenizer *tok;
    bpe_cache *cache; /* gpt2 */
};

int atom_tokenizer_open(const char *name, atom_tokenizer **out, atom_err *err)
{
    *out = NULL;
    tok_kind kind;
    if (strcmp(name, "gpt2") == 0)
        kind = TOK_GPT2;
    else if (strcmp(name, "bytes") == 0)
        kind = TOK_BYTES;
    else
        return atom_errf(err, "unknown tokenizer '%s' (gpt2 or bytes)", name);
    atom_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok)
        return atom_errf(err, "out of memory");
    tok->kind = kind;
    if (kind == TOK_GPT2 && !(tok->merges = gpt2_merges_new())) {
        free(tok);
        return atom_errf(err, "out of memory for GPT-2's merges");
    }
    *out = tok;
    return 0;
}

void atom_tokenizer_close(atom_tokenizer *tok)
{
    if (!tok)
        return;
    gpt2_merges_free(tok->merges);
    free(tok);
}

const char *atom_tokenizer_name(const atom_tokenizer *tok)
{
    return tok->kind == TOK_GPT2 ? "gpt2" : "bytes";
}

int atom_tokenizer_vocab(const atom_tokenizer *tok)
{
    return tok->kind == TOK_GPT2 ? atom_gpt2_vocab : 256;
}

int atom_tokenizer_eot(const atom_tokenizer *tok)
{
    return tok->kind == TOK_GPT2 ? atom_gpt2_eot : -1;
}

const unsigned char *atom_tokenizer_token(const atom_tokenizer *tok, unsigned id, size_t *len)
{
#define BYTES4(b) b, b + 1, b + 2, b + 3
#define BYTES16(b) BYTES4(b), BYTES4(b + 4), BYTES4(b + 8), BYTES4(b + 12)
#define BYTES64(b) BYTES16(b), BYTES16(b + 16), BYTES16(b + 32), BYTES16(b + 48)
    static const unsigned char all_bytes[256] = {BYTES64(0), BYTES64(64), BYTES64(128),
                                                 BYTES64(192)};
    if (id >= (unsigned)atom_tokenizer_vocab(tok)) {
        *len = 0;
        return NULL;
    }
    if (tok->kind == TOK_BYTES) {
        *len = 1;
        return all_bytes + id;
    }
    *len = atom_gpt2_token_offset[id + 1] - atom_gpt2_token_offset[id];
    return atom_gpt2_token_bytes + atom_gpt2_token_offset[id];
}

const char *atom_tokenizer_unicode_version(void)
{
    return atom_unicode_version;
}

atom_encoder *atom_encoder_new(const atom_tokenizer *tok)
{
    atom_encoder *enc = calloc(1, sizeof *enc);
    if (!enc)
        return NULL;
    enc->tok = tok;
    if (tok->kind == TOK_GPT2 && !(enc->cache = bpe_cache_new())) {
        free(enc);
        return NULL;
    }
    return enc;
}

void atom_encoder_free(atom_encoder *enc)
{
    if (!enc)
        return;
    bpe_cache_free(enc->cache);
    free(enc);
}

int atom_tokens_push(atom_tokens *t, uint16_t id, atom_err *err)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 4096;
        uint16_t *ids = realloc(t->ids, cap * sizeof *ids);
        if (!ids)
            return atom_errf(err, "out of memory for %zu tokens", cap);
        t->ids = ids;
        t->cap = cap;
    }
    t->ids[t->n++] = id;
    return 0;
}

void atom_tokens_free(atom_tokens *t)
{
    free(t->ids);
    memset(t, 0, sizeof *t);
}

int atom_encode(atom_encoder *enc, const unsigned char *text, size_t len, atom_tokens *out,
                atom_err *err)
{
    if (enc->tok->kind == TOK_BYTES) {
        for (size_t i = 0; i < len; i++)
            if (atom_tokens_push(out, text[i], err) != 0)
                return -1;
        return 0;
    }
    for (size_t at = 0; at < len;) {
        size_t n = gpt2_piece(text + at, len - at);
        if (gpt2_bpe_piece(enc->tok->merges, enc->cache, text + at, n, out, err) != 0)
            return -1;
        at += n;
    }
    return 0;
}

/* A cut at j is safe when text[j-1] is "\n", the character before it is not a space and the
 * one at j is not a space either. Then the "\n" is a piece of its own whatever follows j (in
 * the whole text \s+ takes it alone; at the end of a part \s+(?!\S) does), the piece before it
 * ends at it, and a piece starts at j: no piece of the whole crosses j, and the pattern has no
 * look-behind, so the part after j is split as in the whole. */
static int safe_cut(const unsigned char *text, size_t len, size_t j)
{
    if (j < 2 || j >= len || text[j - 1] != '\n')
        return 0;
    size_t n;
    if (char_at(text + j, len - j, &n) == CHAR_SPACE)
        return 0;
    /* The character before the "\n" ends at j - 2. Decoding resynchronises at every byte
     * that is not a continuation byte, so it starts at the first such byte at or before j - 2
     * (at most 3 back); when that byte's sequence does not end at j - 2, the byte at j - 2 is a
     * stray byte, which is OTHER, not a space. */
    size_t start = j - 2;
    while (start > 0 && j - 2 - start < 3 && (text[start] & 0xc0) == 0x80)
        start--;
    if (char_at(text + start, len - start, &n) == CHAR_SPACE && start + n == j - 1)
        return 0;
    return 1;
}

size_t atom_text_cut(const unsigned char *text, size_t len, size_t from)
{
    for (size_t j = from; j < len; j++) {
        const unsigned char *nl = memchr(text + j, '\n', len - j);
        if (!nl)
            return len;
        j = (size_t)(nl - text) + 1;
        if (safe_cut(text, len, j))
            return j;
        j--; /* the loop's j++ moves past this newline */
    }
    return len;
}
