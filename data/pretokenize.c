/* data/pretokenize.c: GPT-2's pre-tokenization pattern, written out as code.
 *
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *
 * A regex engine tries the alternatives in order at the current position and takes the first
 * that matches; each branch below is one alternative, in the same order. The only backtracking
 * in the pattern is \s+(?!\S): a run of spaces followed by a non-space gives back its last
 * character, which then starts the next piece (" word" keeps its space). */
#include <string.h>

#include "data/data_internal.h"

static size_t contraction(const unsigned char *t, size_t len)
{
    static const char *const forms[] = {"s", "t", "re", "ve", "m", "ll", "d"};
    if (t[0] != '\'')
        return 0;
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        size_t n = strlen(forms[i]);
        if (len >= 1 + n && memcmp(t + 1, forms[i], n) == 0)
            return 1 + n;
    }
    return 0;
}

/* The length of the run of characters of class `cls` at t[0] (0 when t[0] is not one). */
static size_t run_of(const unsigned char *t, size_t len, char_class cls)
{
    size_t at = 0, n;
    while (at < len && char_at(t + at, len - at, &n) == cls)
        at += n;
    return at;
}

size_t gpt2_piece(const unsigned char *t, size_t len)
{
    size_t n = contraction(t, len);
    if (n)
        return n;
    /* ` ?X+` for X = letters, numbers, others: the optional space is U+0020 only */
    size_t lead = (t[0] == ' ' && len > 1) ? 1 : 0;
    size_t first_len;
    char_class first = char_at(t + lead, len - lead, &first_len);
    if (first != CHAR_SPACE) {
        return lead + run_of(t + lead, len - lead, first);
    }
    /* \s+(?!\S): the longest run of spaces that is followed by the end or by a space. The
     * longest run is followed by the end or a non-space; in the latter case the run less its
     * last character is followed by a space, and matches if it is not empty. */
    size_t run = run_of(t, len, CHAR_SPACE);
    if (run == len)
        return run;
    size_t last = 0, at = 0;
    while (at < run) { /* the start of the run's last character */
        last = at;
        char_at(t + at, len - at, &n);
        at += n;
    }
    if (last > 0)
        return last;
    return run; /* \s+: a single space character before a non-space */
}
