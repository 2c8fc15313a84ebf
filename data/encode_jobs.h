/* data/encode_jobs.h: atom-data's parallel encoding: a text is cut at safe places
 * (atom_text_cut) into jobs of about a MiB; threads encode jobs, and the caller takes their
 * tokens in job order, so the output is the same at any thread count. Tool code, not data.h's. */
#ifndef ATOM_DATA_ENCODE_JOBS_H
#define ATOM_DATA_ENCODE_JOBS_H

#include <stdint.h>

#include "data/data.h"

#define ENCODE_JOB_BYTES (1u << 20) /* the default size of a job */

typedef struct encode_job {
    const char *path;          /* read with pread from here, or */
    const unsigned char *mem;  /* from memory (encode's stdin) */
    uint64_t off, len;
    int doc;                   /* the document (input file) it belongs to */
    int doc_end;               /* the document's last job: <|endoftext|> follows */
    atom_tokens out;
    int failed;
    atom_err err;
} encode_job;

typedef struct encode_pool {
    const atom_tokenizer *tok;
    atom_encoder **encoders; /* one per thread */
    int threads;
} encode_pool;

int encode_pool_open(encode_pool *pool, const atom_tokenizer *tok, int threads, atom_err *err);
void encode_pool_close(encode_pool *pool);
/* Encodes jobs[0..n) on the pool's threads; -1 with the first failed job's error. */
int encode_pool_run(encode_pool *pool, encode_job *jobs, size_t n, atom_err *err);

/* Appends the jobs of text[0..len) (already in memory) to *jobs: cut at the first safe place
 * after every job_bytes. The jobs point into text when path is NULL. */
int encode_jobs_cut(const unsigned char *text, uint64_t len, uint64_t job_bytes,
                    const char *path, int doc, encode_job **jobs, size_t *n, size_t *cap,
                    atom_err *err);

#endif
