/* checkpoints/ckpt_internal.h: what the checkpoint module's files share (not public).
 *
 * The write path is split in two so that the sync save and the async thread run the same code:
 * a plan (which hyperslab of each tensor this rank writes, and where its packed floats are) and
 * the file writer that consumes a plan.
 */
#ifndef ATOM_CKPT_INTERNAL_H
#define ATOM_CKPT_INTERNAL_H

#include "checkpoints/checkpoints.h"

#include <hdf5.h>

#define CKPT_KINDS 3
extern const char *const ckpt_kind_names[CKPT_KINDS]; /* "param", "adam_m", "adam_v" */

/* Attribute of every dataset: one row per written hyperslab,
 * [crc32c, start[0..n), stride[0..n), count[0..n), block[0..n)] as uint64 (n = the dataset's
 * rank). docs/checkpoint-format.md documents it for readers without atom. */
#define CKPT_CRC_ATTR "crc32c_slabs"

/* ---- errors ---- */
int ckpt_errf(atom_ckpt_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* As ckpt_errf, then appends HDF5's innermost error message (why HDF5 failed). */
/* A memory space for the packed floats of a hyperslab of count x block per dimension (NULL
 * block: 1): an nd array of its selected extents, in the same row-major order as a 1-D buffer.
 * With a 1-D one, HDF5 maps a chunked dataset's selection onto its chunks element by element
 * (H5S_select_iterate: a gpt2-124m load at TP 2 took 2.7-4.2 s instead of 1.5-1.7 s, measured);
 * with the same shape it maps whole blocks. */
hid_t ckpt_mem_space(int nd, const hsize_t *count, const hsize_t *block);
/* Calls fn for every allocated chunk of a chunked dataset (its file address, bytes and first
 * element); returns how many (0 for a contiguous dataset). */
int ckpt_each_chunk(hid_t ds, void (*fn)(haddr_t at, hsize_t bytes, const hsize_t *origin,
                                         void *arg),
                    void *arg);
/* The model's shape from the global dims of /param/qkvw, wte and wpe (ckpt_info.c). */
int ckpt_read_shape(hid_t file, atom_ckpt_shape *shape, atom_ckpt_err *err);
int ckpt_h5_errf(atom_ckpt_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Turns off HDF5's automatic error printing (library calls print nothing themselves). */
void ckpt_h5_quiet(void);
/* Waits for a nonblocking MPI operation by testing it between growing sleeps (20 us to 1 ms)
 * instead of in MPI's own wait, which polls: the async writer's partners arrive late when
 * training has the cores, and a writer polling for them took that CPU from training (measured:
 * 10-25 ms of CPU per save in waits of 0.1-0.7 s, on a save whose own work was ~10 ms). */
void ckpt_wait(MPI_Request *req);
/* A barrier waited for as ckpt_wait does: the writer calls it before HDF5's collective calls
 * (file create, flush, close), so that the ranks enter them together and MPI's polling inside
 * them is short. */
void ckpt_meet(MPI_Comm comm);
/* Makes rc and err agree on every rank of comm: -1 everywhere if any rank failed, with the
 * message of the lowest failing rank. */
int ckpt_agree(MPI_Comm comm, int rc, atom_ckpt_err *err);

/* Fault injection for the crash tests (docs/checkpoint-format.md): when the environment has
 * ATOM_CKPT_KILL_AT=<rank>:<point> and this is that rank of comm at that point, the process
 * SIGKILLs itself. Points: "dataset-N" (after the N-th dataset write of a file), "renamed"
 * (after the commit's rename, before `latest` moves). */
void ckpt_fault_point(MPI_Comm comm, const char *point);

/* How data moves through MPI-IO. Independent transfers (default) with ROMIO's data sieving off:
 * each rank writes its hyperslab's contiguous runs itself, with no read-modify-write and no file
 * locks. Measured here, collective (two-phase) transfers of a 1.5 GB state at 2 ranks were
 * 5x slower (docs/checkpoint-format.md). ATOM_CKPT_IO=collective selects them; ATOM_CKPT_SIEVE=1
 * keeps data sieving. */
H5FD_mpio_xfer_t ckpt_xfer_mode(void);
/* A checkpoint tuning variable's value, or NULL when unset or empty. A value that is not one
 * of `allowed` (a NULL-terminated list; NULL list: an integer >= 0) is named on stderr with
 * what is used instead, and NULL is returned: a typo is told, never silently taken. */
const char *ckpt_env_choice(const char *name, const char *const *allowed, const char *fallback);
/* MPI_Info hints for opening a checkpoint file; free with MPI_Info_free. */
MPI_Info ckpt_mpi_info(void);

/* ---- the checkpoint folder (ckpt_util.c) ---- */
/* A folder a save creates: the owner writes, the group (the job's project) may read and
 * restart from it, nobody else gets in (docs/checkpoint-format.md). */
#define CKPT_DIR_MODE 0750
/* 0 when dir is the caller's (owned by the effective uid, a real folder or a symlink the caller
 * made, writable by no one else), 1 when it does not exist, -1 with a sentence otherwise. */
int ckpt_dir_check(const char *dir, atom_ckpt_err *err);
/* Creates dir (one level, CKPT_DIR_MODE) if missing, then checks it: 0 or -1. */
int ckpt_dir_make(const char *dir, atom_ckpt_err *err);

/* ---- names ---- */
/* DIR/ckpt-<step>.h5, or with .tmp appended. */
void ckpt_file_name(char *buf, size_t size, const char *dir, int64_t step, bool tmp);
/* Parses "ckpt-<digits>.h5" or "ckpt-<digits>.h5.tmp"; returns false for anything else. */
bool ckpt_parse_name(const char *base, int64_t *step, bool *tmp);

/* ---- what one rank writes of one tensor ---- */
typedef struct ckpt_piece {
    const char *name;
    int ndims;
    hsize_t dims[ATOM_CKPT_MAX_DIMS];
    /* file selection of the piece (valid when elems > 0) */
    hsize_t start[ATOM_CKPT_MAX_DIMS], stride[ATOM_CKPT_MAX_DIMS];
    hsize_t count[ATOM_CKPT_MAX_DIMS], block[ATOM_CKPT_MAX_DIMS];
    int64_t elems;               /* 0: this rank writes nothing of this tensor */
    /* where the piece lies in the shard: `outer` runs of `len` floats, at `off` within
     * consecutive rows of `row` floats */
    int64_t outer, row, off, len;
    const float *data[CKPT_KINDS]; /* the packed piece (elems floats) per kind */
    uint32_t crc[CKPT_KINDS];
    bool crc_ready;                /* crc[] already hold the data's checksums */
} ckpt_piece;

/* Decides, for every tensor, the piece this rank writes (collective over comm: the ranks compare
 * their selections). pieces[] has ntensors entries; data[] is left NULL. */
int ckpt_plan(MPI_Comm comm, const atom_ckpt_tensor *tensors, int ntensors, ckpt_piece *pieces,
              atom_ckpt_err *err);
/* Copies the piece's floats out of a shard into dst (elems floats). */
void ckpt_piece_gather(const ckpt_piece *p, const float *shard, float *dst);
/* The same, returning the CRC32C of the packed floats, each chunk checksummed right after its
 * copy while it is still in cache: an async save's writer thread then never reads the snapshot
 * but to write it (the CRC there, on cores busy training, cost it 40% of its CPU time). */
uint32_t ckpt_piece_gather_crc(const ckpt_piece *p, const float *shard, float *dst);
/* True when the piece is one contiguous run of the shard (no copy needed). */
bool ckpt_piece_contiguous(const ckpt_piece *p);
/* Checks a tensor description (rank, selection inside the shape). */
int ckpt_check_tensor(const atom_ckpt_tensor *t, atom_ckpt_err *err);

/* Writing a piece into its dataset's bytes in the file, O_DIRECT where whole pages allow
 * (ckpt_direct.c says why and how). Used in independent mode unless ATOM_CKPT_DIRECT=0. */
typedef struct ckpt_direct {
    int fd;          /* page-cache writes (partial pages, small runs) */
    int fd_direct;   /* O_DIRECT, or -1 */
    char *bounce;    /* page-aligned staging for the O_DIRECT writes */
    size_t min_run;  /* runs shorter than this go through the page cache */
} ckpt_direct;
bool ckpt_direct_enabled(void);
/* The chunk width of a dataset whose written pieces have this selection (ckpt_direct.c): > 0
 * when the tensor is split along its last dimension into blocks of w columns, each then stored
 * as one chunk of every leading dimension x w columns; 0 for a contiguous dataset. A dataset is
 * chunked only when every written piece gives the same w. */
hsize_t ckpt_chunk_width(int nd, const hsize_t *dims, const hsize_t *start, const hsize_t *count,
                         const hsize_t *block);
/* Piece p as seen inside its chunk of width w: *view with the chunk's dims and the start within
 * it; *chunk is the chunk's index along the last dimension. */
void ckpt_piece_in_chunk(const ckpt_piece *p, hsize_t w, ckpt_piece *view, hsize_t *chunk);
/* The first byte offset >= at (from a page-aligned base) at which to place piece p's packed
 * floats so that they sit page-aligned where the file is (datasets of 64 KiB or more start on
 * 1 MiB boundaries): then O_DIRECT writes them without a bounce copy. Adds < 4 KiB. */
size_t ckpt_direct_place(const ckpt_piece *p, size_t at);
#define CKPT_DIRECT_PAD 4096
/* Runs of at least this many bytes are written with O_DIRECT: 256 KiB, or
 * ATOM_CKPT_DIRECT_MIN (the tests lower it to drive the aligned path with small tensors). */
size_t ckpt_direct_min(void);
int ckpt_direct_open(ckpt_direct *w, const char *path, atom_ckpt_err *err);
/* Writes piece p's packed floats (data) into the contiguous dataset whose raw data starts at
 * file byte addr. */
int ckpt_direct_write(ckpt_direct *w, haddr_t addr, const ckpt_piece *p, const float *data,
                      atom_ckpt_err *err);
/* fdatasync, close. */
int ckpt_direct_close(ckpt_direct *w, const char *path, atom_ckpt_err *err);
/* Reads (loads): opens path twice (plain and O_DIRECT); -1 if either fails (then HDF5 reads). */
int ckpt_direct_open_read(ckpt_direct *r, const char *path);
void ckpt_direct_close_read(ckpt_direct *r);
/* 1 when selection sel (a piece: dims, start, stride, count, block, elems) of dataset ds is
 * read directly: the dataset is contiguous, or a column-block chunk holds all of sel, and its
 * runs average at least the O_DIRECT threshold. Then *view is sel as placed at file byte *addr
 * (the dataset's or the chunk's start). */
int ckpt_direct_locate(ckpt_direct *r, hid_t ds, const ckpt_piece *sel, ckpt_piece *view,
                       haddr_t *addr);
/* Reads the runs of view at addr into dst (packed, elems floats). */
int ckpt_direct_read(ckpt_direct *r, haddr_t addr, const ckpt_piece *view, float *dst,
                     atom_ckpt_err *err);

/* Builds a checkpoint's structure for these pieces in an in-memory file (HDF5's core driver,
 * no data space, nothing on disk) and drops it: the async writer thread runs it once at
 * prepare, so that its first save does not pay for the thread's first HDF5 objects and fresh
 * malloc pages. */
void ckpt_rehearse(ckpt_piece *pieces, int n, int nranks, const atom_ckpt_meta *meta);
/* Writes path (created or truncated) from pieces whose data[] are set; collective. meta: the
 * values of rank 0 are written. */
int ckpt_write_file(const char *path, MPI_Comm comm, ckpt_piece *pieces, int npieces,
                    const atom_ckpt_meta *meta, atom_ckpt_err *err);
/* After a save of path (a .tmp file) failed on every rank (the ranks agreed, so none writes it
 * any more): rank 0 removes it, so that a full disk gets back the space it took, and adds to err
 * whether it did; every rank gets rank 0's message. Collective. */
void ckpt_discard_tmp(const char *path, MPI_Comm comm, atom_ckpt_err *err);
/* Creates dir (one level) on rank 0 of comm if missing; collective. */
int ckpt_ensure_dir(const char *dir, MPI_Comm comm, atom_ckpt_err *err);
/* Fills layout defaults of meta from the group (see atom_ckpt_group). */
void ckpt_meta_defaults(atom_ckpt_meta *meta, atom_ckpt_group group);

/* ---- reading ---- */
/* Checks that every dataset's checksum rows tile it and every checksum matches, in an open
 * file: the first `kinds` groups of ckpt_kind_names (1: /param only, CKPT_KINDS: all). Slab k
 * (counted over all datasets in name order) is checked by the rank with k % nranks == rank.
 * out (may be NULL) gets one line per dataset when nranks == 1. Local: the caller makes the
 * ranks agree. */
int ckpt_verify_open(hid_t file, const char *path, int kinds, int rank, int nranks, hid_t dxpl,
                     FILE *out, atom_ckpt_err *err);
/* Reads root attributes into meta (spec_json malloc'ed). */
int ckpt_read_meta(hid_t file, atom_ckpt_meta *meta, atom_ckpt_err *err);

/* ---- the checkpoint folder ---- */
/* Committed checkpoints newest first, as steps; *steps malloc'ed. latest_step: the step latest
 * points at, -1 if none. */
int ckpt_dir_committed(const char *dir, int64_t **steps, int *count, int64_t *latest_step,
                       atom_ckpt_err *err);

#endif /* ATOM_CKPT_INTERNAL_H */
