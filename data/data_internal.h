/* data/data_internal.h: what data/'s files share and nobody else sees. */
#ifndef ATOM_DATA_INTERNAL_H
#define ATOM_DATA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "data/data.h"

/* ---- characters (unicode_class.c) ---- */
typedef enum {
    CHAR_LETTER, /* \p{L} */
    CHAR_NUMBER, /* \p{N} */
    CHAR_SPACE,  /* \s: White_Space */
    CHAR_OTHER,  /* everything else, and every byte that is not part of valid UTF-8 */
} char_class;

/* The class of the character at text[0] and its length in bytes (1 to 4). A byte that does not
 * start a valid, shortest-form UTF-8 sequence of a scalar value is one OTHER character. */
char_class char_at(const unsigned char *text, size_t len, size_t *char_len);
char_class codepoint_class(uint32_t cp);

/* ---- GPT-2's pre-tokenizer (pretokenize.c) ---- */
/* The length of the piece GPT-2's pattern matches at text[0] (len > 0):
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
size_t gpt2_piece(const unsigned char *text, size_t len);

/* ---- GPT-2's BPE (bpe.c) ---- */
typedef struct gpt2_merges gpt2_merges;
gpt2_merges *gpt2_merges_new(void);
void gpt2_merges_free(gpt2_merges *m);
typedef struct bpe_cache bpe_cache;
bpe_cache *bpe_cache_new(void);
void bpe_cache_free(bpe_cache *c);
/* Appends the ids of one piece (ids are those of the byte tokens, then merged by rank). */
int gpt2_bpe_piece(const gpt2_merges *m, bpe_cache *cache, const unsigned char *piece,
                   size_t len, atom_tokens *out, atom_err *err);

/* The tables generated at build time from data/gpt2/ (gen_gpt2_tables.py). */
extern const int atom_gpt2_vocab;
extern const int atom_gpt2_eot;
extern const int atom_gpt2_merge_count;
extern const uint32_t atom_gpt2_token_offset[];
extern const unsigned char atom_gpt2_token_bytes[];
extern const uint16_t atom_gpt2_merges[]; /* (left, right, merged) per rank */

#endif
