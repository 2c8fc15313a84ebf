/* data/hf_files.c: the tokenizer files transformers' GPT2Tokenizer reads (vocab.json,
 * merges.txt, tokenizer_config.json, special_tokens_map.json), written from the tables built into
 * the binary, so an exported model loads with its tokenizer elsewhere. They spell each byte as
 * GPT-2 does (a printable character per byte, bytes_to_unicode in OpenAI's encoder.py): the files
 * written equal the data/gpt2/ files they came from. */
#include <errno.h>
#include <stdbool.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "data/data_internal.h"

/* GPT-2's printable spelling of one byte, as UTF-8 (1 or 2 bytes) into out; returns its length.
 * Printable ASCII and Latin-1 (! to ~, ¡ to ¬, ® to ÿ) spell themselves; the other 68 bytes
 * take the code points from 256 on, in byte order. */
static size_t spell_byte(unsigned char b, char out[2])
{
    unsigned cp = b;
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    if (!printable) {
        unsigned n = 0;
        for (unsigned x = 0; x < b; x++)
            n += !((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE));
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

/* The spelling of token id into buf (NUL-terminated); false when it does not fit. */
static bool spell_token(unsigned id, char *buf, size_t cap)
{
    size_t len = 0, n = atom_gpt2_token_offset[id + 1] - atom_gpt2_token_offset[id];
    const unsigned char *bytes = atom_gpt2_token_bytes + atom_gpt2_token_offset[id];
    if ((int)id == atom_gpt2_eot) { /* written as itself, not byte by byte */
        snprintf(buf, cap, "<|endoftext|>");
        return true;
    }
    for (size_t i = 0; i < n; i++) {
        if (len + 3 > cap)
            return false;
        len += spell_byte(bytes[i], buf + len);
    }
    buf[len] = 0;
    return true;
}

static int write_json(const char *dir, const char *name, json_t *o, atom_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int rc = o && json_dump_file(o, path, JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII) == 0
                 ? 0
                 : atom_errf(err, "cannot write %s", path);
    json_decref(o);
    return rc;
}

int atom_tokenizer_write_hf(const atom_tokenizer *tok, const char *dir, int context, atom_err *err)
{
    if (strcmp(atom_tokenizer_name(tok), "gpt2") != 0)
        return atom_errf(err, "transformers has no tokenizer for '%s'", atom_tokenizer_name(tok));
    char spelled[1024], right[1024], path[4096];
    json_t *vocab = json_object();
    for (int id = 0; vocab && id < atom_gpt2_vocab; id++) {
        if (!spell_token((unsigned)id, spelled, sizeof spelled) ||
            json_object_set_new(vocab, spelled, json_integer(id)) != 0) {
            json_decref(vocab);
            return atom_errf(err, "token %d cannot be written to vocab.json", id);
        }
    }
    if (write_json(dir, "vocab.json", vocab, err))
        return -1;

    snprintf(path, sizeof path, "%s/merges.txt", dir);
    FILE *f = fopen(path, "we");
    if (!f)
        return atom_errf(err, "cannot write %s: %s", path, strerror(errno));
    fputs("#version: 0.2\n", f);
    for (int r = 0; r < atom_gpt2_merge_count; r++) {
        spell_token(atom_gpt2_merges[3 * r], spelled, sizeof spelled);
        spell_token(atom_gpt2_merges[3 * r + 1], right, sizeof right);
        fprintf(f, "%s %s\n", spelled, right);
    }
    if (fclose(f) != 0)
        return atom_errf(err, "cannot write %s: %s", path, strerror(errno));

    json_t *special = json_pack("{s:s,s:s,s:s}", "bos_token", "<|endoftext|>", "eos_token",
                                "<|endoftext|>", "unk_token", "<|endoftext|>");
    if (write_json(dir, "special_tokens_map.json", special, err))
        return -1;
    json_t *config = json_pack("{s:s,s:i,s:b,s:s,s:s,s:s}", "tokenizer_class", "GPT2Tokenizer",
                               "model_max_length", context, "add_prefix_space", 0, "bos_token",
                               "<|endoftext|>", "eos_token", "<|endoftext|>", "unk_token",
                               "<|endoftext|>");
    return write_json(dir, "tokenizer_config.json", config, err);
}
