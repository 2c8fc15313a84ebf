/* data/unicode_class.c: UTF-8 decoding and the letter / number / space classes of GPT-2's
 * pre-tokenizer, from the generated Unicode 15.0 ranges (unicode_tables.c). */
#include "data/data_internal.h"
#include "data/unicode_tables.h"

static int in_ranges(const atom_cp_range *r, int count, uint32_t cp)
{
    int lo = 0, hi = count - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < r[mid].lo)
            hi = mid - 1;
        else if (cp > r[mid].hi)
            lo = mid + 1;
        else
            return 1;
    }
    return 0;
}

char_class codepoint_class(uint32_t cp)
{
    if (cp < 0x80) { /* most text: no search */
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z')
            return CHAR_LETTER;
        if (cp >= '0' && cp <= '9')
            return CHAR_NUMBER;
        if (cp == ' ' || (cp >= '\t' && cp <= '\r'))
            return CHAR_SPACE;
        return CHAR_OTHER;
    }
    if (in_ranges(atom_unicode_letters, atom_unicode_letters_count, cp))
        return CHAR_LETTER;
    if (in_ranges(atom_unicode_numbers, atom_unicode_numbers_count, cp))
        return CHAR_NUMBER;
    if (in_ranges(atom_unicode_spaces, atom_unicode_spaces_count, cp))
        return CHAR_SPACE;
    return CHAR_OTHER;
}

/* The code point of the UTF-8 sequence at text[0], or -1 when it is not a valid one
 * (overlong forms, surrogates and values above U+10FFFF are invalid, as in Python's decoder). */
static int32_t decode_utf8(const unsigned char *text, size_t len, size_t *char_len)
{
    unsigned char b = text[0];
    size_t n;
    uint32_t cp, min;
    if (b < 0x80) {
        *char_len = 1;
        return b;
    } else if (b >= 0xc2 && b <= 0xdf) {
        n = 2, cp = b & 0x1f, min = 0x80;
    } else if (b >= 0xe0 && b <= 0xef) {
        n = 3, cp = b & 0x0f, min = 0x800;
    } else if (b >= 0xf0 && b <= 0xf4) {
        n = 4, cp = b & 0x07, min = 0x10000;
    } else {
        return -1;
    }
    if (n > len)
        return -1;
    for (size_t i = 1; i < n; i++) {
        if ((text[i] & 0xc0) != 0x80)
            return -1;
        cp = cp << 6 | (text[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return -1;
    *char_len = n;
    return (int32_t)cp;
}

char_class char_at(const unsigned char *text, size_t len, size_t *char_len)
{
    int32_t cp = decode_utf8(text, len, char_len);
    if (cp < 0) {
        *char_len = 1;
        return CHAR_OTHER;
    }
    return codepoint_class((uint32_t)cp);
}
