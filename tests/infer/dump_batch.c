/* tests/infer/dump_batch.c: writes the tokens training reads at one step (the global batch,
 * samples 0..global_batch-1 of (seed, step)) one sample after another, as a token file of the
 * spec's data.format, so that `atomctl eval` reads exactly that batch. Usage:
 * dump_batch JOB.yaml STEP OUT */
#include <stdio.h>
#include <stdlib.h>

#include "worker/data.h"

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: dump_batch JOB.yaml STEP OUT\n");
        return 2;
    }
    atom_spec spec;
    atom_diags diags = {0};
    if (atom_spec_load(argv[1], &spec, &diags) != 0) {
        atom_diags_print(&diags, stderr);
        return 1;
    }
    atom_diags_free(&diags);
    atom_err err = {{0}};
    atom_data data;
    int B = spec.training.global_batch, T1 = spec.model.context + 1;
    int *tokens = malloc((size_t)B * T1 * sizeof(int));
    if (!tokens ||
        atom_data_open(&data, spec.data.path, spec.data.format, spec.model.vocab,
                       spec.model.context, &err) != 0 ||
        atom_data_read(&data, spec.training.seed, atoll(argv[2]), 0, B, tokens, &err) != 0) {
        fprintf(stderr, "dump_batch: %s\n", err.msg);
        return 1;
    }
    FILE *out = fopen(argv[3], "wb");
    for (int i = 0; out && i < B * T1; i++) {
        fputc(tokens[i] & 0xFF, out);
        if (spec.data.format == ATOM_DATA_UINT16)
            fputc(tokens[i] >> 8, out);
    }
    if (!out || fclose(out) != 0) {
        fprintf(stderr, "dump_batch: cannot write %s\n", argv[3]);
        return 1;
    }
    atom_data_close(&data);
    free(tokens);
    return 0;
}
