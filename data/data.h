/* data/data.h: turning text into token ids and back, for training data and sampling.
 *
 *   - tokenizers: `gpt2`, GPT-2's byte-level BPE (its 50,257-token vocabulary and 50,000
 *     merges, built into the binary from data/gpt2/), and `bytes`, one token per byte
 *     (vocabulary 256);
 *   - an encoder per thread (GPT-2's pieces are cached there), encoding any byte string:
 *     text that is not valid UTF-8 is encoded byte by byte too, so decode(encode(x)) == x;
 *   - where a long text may be cut so that its parts, encoded apart, give the same ids.
 *
 * May use: common. Nothing here knows MPI or the worker.
 */
#ifndef ATOM_DATA_H
#define ATOM_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

typedef struct atom_tokenizer atom_tokenizer;
typedef struct atom_encoder atom_encoder;

/* A growing array of token ids (every tokenizer here has at most 65,536 ids). */
typedef struct atom_tokens {
    uint16_t *ids;
    size_t n, cap;
} atom_tokens;

/* "gpt2" or "bytes"; any other name is an error naming the two. */
int atom_tokenizer_open(const char *name, atom_tokenizer **out, atom_err *err);
void atom_tokenizer_close(atom_tokenizer *tok);
const char *atom_tokenizer_name(const atom_tokenizer *tok);
int atom_tokenizer_vocab(const atom_tokenizer *tok);
/* <|endoftext|>'s id (50256 for gpt2); -1 for a tokenizer without one (bytes). */
int atom_tokenizer_eot(const atom_tokenizer *tok);
/* The bytes of token `id` (NULL with *len 0 for an id outside the vocabulary). <|endoftext|>
 * decodes to its own spelling. */
const unsigned char *atom_tokenizer_token(const atom_tokenizer *tok, unsigned id, size_t *len);
/* Writes into dir the files transformers' GPT2Tokenizer reads (vocab.json, merges.txt,
 * tokenizer_config.json with model_max_length = context, special_tokens_map.json): GPT-2's own
 * files, spelled as data/gpt2/ spells them. Only for gpt2 (an error names any other). */
int atom_tokenizer_write_hf(const atom_tokenizer *tok, const char *dir, int context, atom_err *err);
/* The Unicode version of the letter, number and space classes GPT-2's pre-tokenizer uses. */
const char *atom_tokenizer_unicode_version(void);

/* One per thread: it owns a cache of encoded pieces. NULL when out of memory. */
atom_encoder *atom_encoder_new(const atom_tokenizer *tok);
void atom_encoder_free(atom_encoder *enc);
/* Appends the ids of text[0..len) to out. Text is ordinary text: "<|endoftext|>" written in it
 * is encoded as its characters, never as the special token (tiktoken's encode_ordinary). */
int atom_encode(atom_encoder *enc, const unsigned char *text, size_t len, atom_tokens *out,
                atom_err *err);
/* Appends one id. */
int atom_tokens_push(atom_tokens *t, uint16_t id, atom_err *err);
void atom_tokens_free(atom_tokens *t);

/* The first offset at or after `from` where text may be cut: encoding text[0..cut) and
 * text[cut..len) apart gives the ids of the whole (just after a "\n" that has no space character
 * on either side). len when there is none. */
size_t atom_text_cut(const unsigned char *text, size_t len, size_t from);

#endif
