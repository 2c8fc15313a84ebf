/* common/token_sidecar.c: reading the JSON a token file's maker (atom-data prepare) writes
 * beside it, FILE.json. atom-data decode reads the tokenizer from it and atomctl validate the
 * vocabulary and the largest id, so one reader serves both. */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/common.h"
#include "common/json_get.h"

int atom_token_sidecar_read(const char *token_path, atom_token_sidecar *out, atom_err *err)
{
    memset(out, 0, sizeof *out);
    char path[4096];
    if (snprintf(path, sizeof path, "%s.json", token_path) >= (int)sizeof path)
        return atom_errf(err, "%s: name too long", token_path);
    struct stat st;
    if (stat(path, &st) != 0 && errno == ENOENT)
        return 1;
    size_t len = 0;
    char *text = atom_read_file(path, 64u << 20, &len, err);
    if (!text)
        return -1;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    free(text);
    if (!json_is_object(root)) {
        json_decref(root);
        return atom_errf(err, "%s:%d:%d: not a JSON object: %s", path, jerr.line, jerr.column,
                         jerr.text);
    }
    char what[4200];
    snprintf(what, sizeof what, "%s: ", path);
    int rc = atom_json_get_str(root, "tokenizer", out->tokenizer, sizeof out->tokenizer, what,
                               err) ||
             atom_json_get_str(root, "format", out->format, sizeof out->format, what, err) ||
             atom_json_get_int(root, "vocab_size", 1, 1 << 24, &out->vocab, what, err) ||
             atom_json_get_i64(root, "tokens", 0, INT64_MAX, &out->tokens, what, err) ||
             atom_json_get_int(root, "max_id", -1, (1 << 24) - 1, &out->max_id, what, err)
                 ? -1 : 0;
    json_decref(root);
    return rc;
}
