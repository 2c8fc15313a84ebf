/* worker/data.h: the training data, a memory-mapped file of tokens, and the order samples are
 * drawn in.
 *
 * A sample is T+1 consecutive tokens (T inputs, T targets shifted by one). The order is a pure
 * function of (seed, step, global sample index): global sample g of step s starts at an offset
 * drawn from a counter-based hash of (seed, s, g) over [0, N-T-1]. The global batch of a step is
 * samples 0..global_batch-1 and replica d takes [d*per_replica, (d+1)*per_replica), so the
 * global batch does not depend on the data-parallel split and resuming needs nothing but the
 * step.
 */
#ifndef ATOM_WORKER_DATA_H
#define ATOM_WORKER_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

typedef struct atom_data {
    char path[ATOM_PATH_MAX];
    atom_data_format format;
    const unsigned char *map;  /* the whole file, read-only */
    size_t map_bytes;
    int64_t n_tokens;          /* N */
    int context;               /* T */
    int vocab;                 /* V: every token must be < V */
} atom_data;

/* Maps path (bytes: one token per byte; uint16: little-endian pairs). Fails with a message
 * naming the file when it cannot be opened, is not a whole number of tokens, or holds fewer
 * than T+1 tokens. */
int atom_data_open(atom_data *data, const char *path, atom_data_format format, int vocab,
                   int context, atom_err *err);
void atom_data_close(atom_data *data);

/* The first token of global sample `sample` of step `step`: in [0, N-T-1]. */
int64_t atom_data_sample_offset(const atom_data *data, uint64_t seed, int64_t step,
                                int64_t sample);

/* Copies `count` samples, global indices first..first+count-1 of `step`, as tokens
 * (count, T+1). Fails, naming the file and the token's offset, on a token >= V. */
int atom_data_read(const atom_data *data, uint64_t seed, int64_t step, int64_t first, int count,
                   int *tokens, atom_err *err);

/* Copies the `count` tokens from token offset `offset` on (evaluation reads the file in order).
 * Fails, naming the file and the token's offset, on a token >= V or a span past the end. */
int atom_data_read_span(const atom_data *data, int64_t offset, int count, int *tokens,
                        atom_err *err);

/* The global index of the first sample of micro-batch `micro` of replica `replica`, when each
 * replica takes per_replica samples per step in micro-batches of micro_batch. */
static inline int64_t atom_data_first_sample(int replica, int per_replica, int micro,
                                             int micro_batch)
{
    return (int64_t)replica * per_replica + (int64_t)micro * micro_batch;
}

#endif
