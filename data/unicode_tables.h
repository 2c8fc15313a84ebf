/* data/unicode_tables.h: the Unicode classes of GPT-2's pre-tokenizer as sorted code point
 * ranges (generated into unicode_tables.c by gen_unicode_tables.py). Private to data/. */
#ifndef ATOM_DATA_UNICODE_TABLES_H
#define ATOM_DATA_UNICODE_TABLES_H

#include <stdint.h>

typedef struct atom_cp_range {
    uint32_t lo, hi; /* inclusive */
} atom_cp_range;

extern const char atom_unicode_version[];
extern const atom_cp_range atom_unicode_letters[]; /* \p{L} */
extern const int atom_unicode_letters_count;
extern const atom_cp_range atom_unicode_numbers[]; /* \p{N} */
extern const int atom_unicode_numbers_count;
extern const atom_cp_range atom_unicode_spaces[]; /* \s: White_Space */
extern const int atom_unicode_spaces_count;

#endif
