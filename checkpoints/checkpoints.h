/* checkpoints/checkpoints.h: atom's sharded HDF5 checkpoints (the public contract).
 *
 * One HDF5 file per checkpoint, written by all ranks together: rank 0 lays out its structure with
 * HDF5, every rank writes its hyperslabs' bytes into the datasets (O_DIRECT for whole pages).
 * Every parameter and both AdamW moments is a global dataset of its full, unsplit shape:
 * /param/NAME, /adam_m/NAME, /adam_v/NAME (float32). Each tensor-parallel shard writes its
 * hyperslab once; the data-parallel replicas that hold the same shard split that writing between
 * them, so write bandwidth grows with DP. Loading takes the same kind of shard description for the
 * NEW layout and reads the matching hyperslabs: that is the reshard (TP=a x DP=b written,
 * TP=c x DP=d read, moments included). The format is documented in docs/checkpoint-format.md.
 *
 * Layout of a checkpoint folder DIR:
 *   DIR/ckpt-<step, 10 digits>.h5.tmp   being written (never loaded)
 *   DIR/ckpt-<step, 10 digits>.h5       committed (written, checksummed, fsynced, renamed)
 *   DIR/latest                          symlink to the newest committed file, moved atomically
 *
 * May use: MPI and parallel HDF5 only (not common/, not worker/): errors go to atom_ckpt_err,
 * tensors come as plain descriptions.
 *
 * I/O: saves as above by default; ATOM_CKPT_DIRECT=0 writes through parallel HDF5 instead, with
 * independent MPI-IO transfers without ROMIO data sieving (ATOM_CKPT_IO=collective for two-phase
 * collective ones). Loads read through parallel HDF5. Run with OMPI_MCA_io=romio321 (see the
 * format document).
 *
 * Threads: Debian's HDF5 is not thread-safe. While an async save is in flight, its background
 * thread is the only one in HDF5: the caller must not call any other function of this header
 * (except atom_ckpt_async_poll/wait) until the save has finished.
 */
#ifndef ATOM_CHECKPOINTS_H
#define ATOM_CHECKPOINTS_H

#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define ATOM_CKPT_FORMAT_VERSION 1
#define ATOM_CKPT_MAX_DIMS 4
#define ATOM_CKPT_MAX_RNG_BYTES 256

/* Library functions return 0 on success and -1 on failure with a message here. */
typedef struct atom_ckpt_err {
    char msg[1024];
} atom_ckpt_err;

/* One dimension of a rank's selection, as HDF5's H5Sselect_hyperslab takes it: `count` blocks
 * of `block` consecutive indices, the first starting at `start`, each `stride` after the last. */
typedef struct atom_ckpt_dimsel {
    int64_t start, stride, count, block;
} atom_ckpt_dimsel;

/* A tensor as this rank holds it. The shard is the set of selected elements of the global
 * (unsplit) tensor, stored contiguously in the row-major order of the selected elements.
 * Example: a column-parallel qkvw shard at TP rank tp of P, in (L, 3C, C), is
 *   sel[0] = {0, 1, 1, L}, sel[1] = {tp*C/P, C, 3, C/P}, sel[2] = {0, 1, 1, C}
 * (the q, k and v rows of its heads); a replicated tensor selects everything.
 * param, adam_m and adam_v each point at the shard's count of floats. On save they are read;
 * on load they are filled. */
typedef struct atom_ckpt_tensor {
    const char *name;                       /* "qkvw": dataset /param/qkvw and the moments */
    int ndims;                              /* 1..ATOM_CKPT_MAX_DIMS */
    int64_t dims[ATOM_CKPT_MAX_DIMS];       /* the global, unsplit shape */
    atom_ckpt_dimsel sel[ATOM_CKPT_MAX_DIMS];
    float *param, *adam_m, *adam_v;
} atom_ckpt_tensor;

/* Number of floats of a tensor's shard (product over dims of count * block). */
int64_t atom_ckpt_shard_elems(const atom_ckpt_tensor *t);
/* Fills sel[] to select the whole tensor (a replicated tensor). */
void atom_ckpt_select_all(atom_ckpt_tensor *t);

/* The checkpoint's metadata, stored as attributes of the file's root group. On save, the values
 * of rank 0 of the communicator are written (every rank passes the same in practice). On load
 * they are filled; spec_json is then malloc'ed: free it with atom_ckpt_meta_free. */
typedef struct atom_ckpt_meta {
    int format_version;      /* filled on load; ATOM_CKPT_FORMAT_VERSION is written */
    int64_t step;            /* optimizer steps done */
    int64_t tokens_seen;
    int64_t data_position;   /* where the data loader resumes (global sample index) */
    unsigned char rng_state[ATOM_CKPT_MAX_RNG_BYTES]; /* opaque to the checkpoint */
    int rng_state_len;
    char *spec_json;         /* the job spec as JSON text (may be NULL on save) */
    int tp, dp;              /* the layout that wrote it: tensor x data parallel */
    int64_t vocab;           /* V, the unpadded vocabulary (export trims wte from Vp to V) */
    char writer[256];        /* who wrote it, e.g. "atom-worker 0.1.0 job 42"; host is added */
    char tokenizer[32];      /* what turned text into the ids it was trained on: "bytes",
                                "gpt2"; "" when unknown (not written; older checkpoints) */
    int64_t created_unix;    /* filled on load (seconds since the epoch, set at write) */
} atom_ckpt_meta;

void atom_ckpt_meta_free(atom_ckpt_meta *meta);

/* The model shape a checkpoint's datasets give (the heads are in meta.spec_json only). */
typedef struct atom_ckpt_shape {
    int64_t layers, channels, padded_vocab, context;
} atom_ckpt_shape;

/* Reads FILE's metadata and shape without MPI (the tools' way): fills meta (free it with
 * atom_ckpt_meta_free) and shape, or returns -1 naming what is missing. */
int atom_ckpt_read_info(const char *path, atom_ckpt_meta *meta, atom_ckpt_shape *shape,
                        atom_ckpt_err *err);

/* Who writes: comm holds every rank of the job; replica (0..replicas-1) is this rank's
 * data-parallel index and replicas the data-parallel size. The ranks whose selection of a tensor
 * is identical (the data-parallel replicas of a shard, and every rank for a replicated tensor)
 * share its writing, each writing about 1/n of it, so each element is written once. That sharing
 * is derived from the selections themselves; replicas is recorded as the layout's DP when
 * meta->dp is 0 (and comm size / replicas as its TP when meta->tp is 0). */
typedef struct atom_ckpt_group {
    MPI_Comm comm;
    int replica, replicas;
} atom_ckpt_group;

/* ---- writing (collective over group.comm: every rank, same tensors in the same order) ---- */

/* Creates DIR (its missing parents 0755, DIR itself 0750) or checks the existing one: it must
 * be the caller's (owned by the effective uid, writable by no one else; a symlink only if the
 * caller made it). Saves and atom_ckpt_load_latest refuse any other folder with a sentence that
 * names it and its owner. Not collective: one rank calls it. */
int atom_ckpt_prepare_dir(const char *dir, atom_ckpt_err *err);

/* Writes DIR/ckpt-STEP.h5.tmp with every tensor's param and both moments, the per-hyperslab
 * CRC32C checksums and meta. Not committed yet. */
int atom_ckpt_write(const char *dir, atom_ckpt_group group, const atom_ckpt_tensor *tensors,
                    int ntensors, const atom_ckpt_meta *meta, atom_ckpt_err *err);

/* Commits DIR/ckpt-STEP.h5.tmp: fsync, rename to DIR/ckpt-STEP.h5, fsync DIR, move DIR/latest
 * to it atomically, fsync DIR, then (keep > 0) remove committed checkpoints older than the
 * newest `keep` committed ones (never an uncommitted one, never latest's target). Rank 0 does
 * the file-system work; every rank gets its status. */
int atom_ckpt_commit(const char *dir, int64_t step, MPI_Comm comm, int keep, atom_ckpt_err *err);

/* atom_ckpt_write then atom_ckpt_commit: a synchronous save. A save that fails (write or
 * commit, before the rename) removes its .tmp file (a full disk gets its space back); the
 * message names the file and the system's reason. */
int atom_ckpt_save(const char *dir, atom_ckpt_group group, const atom_ckpt_tensor *tensors,
                   int ntensors, const atom_ckpt_meta *meta, int keep, atom_ckpt_err *err);

/* ---- asynchronous save --------------------------------------------------------------------
 * atom_ckpt_async_start copies the part of this rank's shard that this rank writes (about
 * 1/replicas of its param + moments) into a host buffer of at most max_bytes, allocated once,
 * and returns; a background thread then writes and commits it through its own MPI_Comm_dup of
 * group.comm while training goes on. At most one save is in flight: start waits for the one
 * before. Memory: the snapshot buffer (<= max_bytes, reported by atom_ckpt_async_bytes) plus the
 * spec. When max_bytes leaves room, the buffer takes up to 4 KiB per dataset (3 per tensor) more
 * than the floats, to place each piece page-aligned for O_DIRECT: the writer then needs no copy. Needs MPI initialised with MPI_THREAD_MULTIPLE (create fails otherwise). The thread runs
 * at nice 10 (ATOM_CKPT_WRITER_NICE overrides: 0 keeps training's priority, "idle" is
 * SCHED_IDLE). */
typedef struct atom_ckpt_async atom_ckpt_async;

/* Collective over group.comm (it duplicates the communicator and starts the thread). */
int atom_ckpt_async_create(atom_ckpt_async **out, atom_ckpt_group group, size_t max_bytes,
                           atom_ckpt_err *err);
/* Collective over group.comm, optional: creates dir if missing, plans who writes what for these
 * tensors and allocates the snapshot buffer with its pages touched, so that none of it happens
 * inside a training step. Fails as start does for a snapshot over max_bytes. */
int atom_ckpt_async_prepare(atom_ckpt_async *a, const char *dir, const atom_ckpt_tensor *tensors,
                            int ntensors, atom_ckpt_err *err);
/* Collective over group.comm (every rank, same step). If a save is still in flight it first
 * waits for it (at most one in flight). The plan of prepare or of the last start is kept while
 * every rank passes tensors of the same names, shapes and selections and the same dir (the
 * floats may move); else the ranks plan again. Fails, without starting, if the previous save
 * failed and poll/wait has not reported it yet, or if the snapshot would exceed max_bytes (the
 * message gives the size needed). Returns once the copy (and its checksums) is done. */
int atom_ckpt_async_start(atom_ckpt_async *a, const char *dir, const atom_ckpt_tensor *tensors,
                          int ntensors, const atom_ckpt_meta *meta, int keep, atom_ckpt_err *err);
/* *done = true when no save is in flight; then returns the last save's status (-1 and its
 * message if it failed). Never blocks. */
int atom_ckpt_async_poll(atom_ckpt_async *a, bool *done, atom_ckpt_err *err);
/* Blocks until no save is in flight; returns the last save's status. */
int atom_ckpt_async_wait(atom_ckpt_async *a, atom_ckpt_err *err);
/* Bytes of the snapshot buffer allocated so far (0 before the first prepare or start). */
size_t atom_ckpt_async_bytes(const atom_ckpt_async *a);
/* CPU seconds the background thread has used for saves so far (its own user + system time):
 * on a machine whose cores all train, about what the saves took from training. */
double atom_ckpt_async_writer_cpu_s(atom_ckpt_async *a);
/* Waits for a save in flight, stops the thread, frees everything. Collective (frees the
 * duplicated communicator). NULL is a no-op. */
void atom_ckpt_async_destroy(atom_ckpt_async *a);

/* ---- loading (collective over comm) -------------------------------------------------------- */

/* Reads every tensor's selection (param and both moments) from FILE, whatever layout wrote it,
 * and the metadata (meta may be NULL). verify: check, as it is read, the CRC32C of every written
 * hyperslab that the rank's selections touch (each byte is read once; a hyperslab that a
 * selection cuts is read again whole), so every loaded element is checked. Errors name the
 * dataset (and hyperslab). After a failure the tensors hold whatever was read before it. */
int atom_ckpt_load(const char *path, MPI_Comm comm, atom_ckpt_tensor *tensors, int ntensors,
                   atom_ckpt_meta *meta, bool verify, atom_ckpt_err *err);

/* Loads DIR/latest's target after verifying it; if it fails (checksum, truncation, missing
 * dataset), falls back to the next older committed checkpoint, and so on. Returns 0 when one was
 * loaded (its path in loaded_path if not NULL; err then says why newer ones were skipped, ""
 * when none was), 1 when DIR holds no committed checkpoint, -1 when every one failed (err says
 * why the newest failed). Collective over comm. */
int atom_ckpt_load_latest(const char *dir, MPI_Comm comm, atom_ckpt_tensor *tensors,
                          int ntensors, atom_ckpt_meta *meta, char *loaded_path,
                          size_t loaded_path_size, atom_ckpt_err *err);

/* What a restore did, for the caller to tell its user: a fallback past corrupt checkpoints
 * must not go unnoticed (the steps after the loaded one are trained again). */
typedef struct atom_ckpt_restore {
    char path[4096];         /* the file loaded ("" when none was) */
    int skipped;             /* committed checkpoints newer than it that failed to load */
    int64_t skipped_step;    /* the newest of them (-1: none) */
    atom_ckpt_err why;       /* why that one failed, naming its file ("" when none) */
} atom_ckpt_restore;

/* atom_ckpt_load_latest, filling *info (never NULL) with what it loaded and skipped. */
int atom_ckpt_restore_latest(const char *dir, MPI_Comm comm, atom_ckpt_tensor *tensors,
                             int ntensors, atom_ckpt_meta *meta, atom_ckpt_restore *info,
                             atom_ckpt_err *err);

/* ---- tools (`atomctl ckpt ...`): plain library calls, no MPI needed (MPI_Init not called;
 * files are opened with HDF5's default sec2 driver). They print only into `out` (may be NULL). */

typedef struct atom_ckpt_entry {
    char path[4096];
    int64_t step;            /* from the file name */
    int tp, dp;              /* 0 if unreadable */
    int64_t bytes;           /* file size */
    int64_t mtime_unix;
    bool committed;          /* false: a .tmp left by a save in flight or a crash */
    bool latest;             /* DIR/latest points at it */
} atom_ckpt_entry;

/* Every checkpoint file of DIR, oldest step first; *entries is malloc'ed (free()). */
int atom_ckpt_list(const char *dir, atom_ckpt_entry **entries, int *count, atom_ckpt_err *err);
/* `atomctl ckpt ls DIR`: one line per checkpoint (step, layout, size, time, state). */
int atom_ckpt_print_list(const char *dir, FILE *out, atom_ckpt_err *err);
/* `atomctl ckpt verify FILE`: checks every checksum of every dataset; prints one line per
 * dataset to out; returns -1 naming the first bad dataset (and hyperslab) if any fails. */
int atom_ckpt_verify(const char *path, FILE *out, atom_ckpt_err *err);
/* `atomctl ckpt export FILE --format safetensors`: writes the model weights (not the moments)
 * as a safetensors file under GPT-2's names and layouts (docs/checkpoint-format.md). */
int atom_ckpt_export_safetensors(const char *path, const char *out_path, FILE *out,
                                 atom_ckpt_err *err);

/* CRC32C (Castagnoli, reflected, init and final xor 0xFFFFFFFF), as stored in the files;
 * crc = 0 to start, pass the previous result to continue. */
uint32_t atom_ckpt_crc32c(uint32_t crc, const void *data, size_t len);
/* The same CRC32C by the portable table loop, which atom_ckpt_crc32c uses on CPUs without
 * SSE4.2's crc32 instruction; public so that tests check both give the same result. */
uint32_t atom_ckpt_crc32c_portable(uint32_t crc, const void *data, size_t len);

#endif /* ATOM_CHECKPOINTS_H */
