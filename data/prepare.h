/* data/prepare.h: atom-data's subcommands (tool code behind atom_data.c's argument parsing). */
#ifndef ATOM_DATA_PREPARE_H
#define ATOM_DATA_PREPARE_H

#include <stdio.h>

#include "data/data.h"

typedef struct prepare_opts {
    const char *tokenizer;
    double val_fraction;    /* of the tokens: the stream's last ones */
    const char *val_files;  /* or: files matching this glob (path or name) */
    const char *out_dir;
    char **inputs;
    int n_inputs;
    int threads;
    uint64_t job_bytes;     /* the size of the parts encoded in parallel */
} prepare_opts;

int data_prepare(const prepare_opts *o, atom_err *err);
/* Writes the bytes of the token file's ids to out. */
int data_decode(const char *path, const char *tokenizer, FILE *out, atom_err *err);
/* Encodes all of in; ids one per line, or binary in the tokenizer's file format. */
int data_encode(const char *tokenizer, int threads, uint64_t job_bytes, int binary, FILE *in,
                FILE *out, atom_err *err);

#endif
