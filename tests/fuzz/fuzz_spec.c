/* tests/fuzz/fuzz_spec.c: libFuzzer target for the job spec parser (and the spec's JSON reader).
 *
 * Beyond "does not crash" (ASan, UBSan), it checks what callers rely on:
 *   - a rejected spec always says why: at least one diagnostic, each with a message, and a
 *     position inside the input (line 0 for the whole file);
 *   - an accepted spec has no diagnostics, passes atom_spec_check again on its own, and survives
 *     the JSON round trip bit for bit (what the plan file relies on).
 * The same file, linked with fuzz_replay.c instead of libFuzzer, replays the seed corpus in the
 * normal gcc build. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_diags(const atom_diags *d, const uint8_t *data, size_t size)
{
    /* YAML breaks lines at \n, \r and, in UTF-8, at NEL (C2 85), LS and PS (E2 80 A8/A9):
     * count every byte that may end one, an upper bound on the lines libyaml sees. */
    int lines = 1;
    for (size_t i = 0; i < size; i++)
        lines += data[i] == '\n' || data[i] == '\r' || data[i] == 0x85 || data[i] == 0xA8 ||
                 data[i] == 0xA9;
    for (int i = 0; i < d->count; i++) {
        const atom_diag *g = &d->items[i];
        if (!g->msg[0] || g->line < 0 || g->column < 0 || g->line > lines + 1) {
            fprintf(stderr, "bad diagnostic %d: %d:%d '%s' (input has %d lines)\n", i, g->line,
                    g->column, g->msg, lines);
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    atom_spec spec, back;
    atom_diags d = {0};
    int rc = atom_spec_parse((const char *)data, size, "fuzz.yaml", "/base", &spec, &d);
    check_diags(&d, data, size);
    if (rc != 0 && d.count == 0) {
        fprintf(stderr, "rejected without a diagnostic\n");
        abort();
    }
    if (rc == 0) {
        if (d.count != 0 || atom_spec_check(&spec, "fuzz.yaml", &d) != 0) {
            atom_diags_print(&d, stderr);
            fprintf(stderr, "accepted spec has diagnostics or fails its own check\n");
            abort();
        }
        char *json = atom_spec_to_json(&spec);
        atom_err err;
        if (!json || atom_spec_from_json(json, &back, &err) != 0 ||
            memcmp(&spec, &back, sizeof spec) != 0) {
            fprintf(stderr, "JSON round trip changed the spec: %s\n", json ? json : "(null)");
            abort();
        }
        free(json);
    }
    atom_diags_free(&d);

    /* The JSON reader sees files written by other atom versions: it must not crash either. */
    if (size > 0 && size < 65536 && data[0] == '{') {
        char *text = malloc(size + 1);
        memcpy(text, data, size);
        text[size] = '\0';
        atom_err err;
        atom_spec_from_json(text, &spec, &err);
        free(text);
    }
    return 0;
}
