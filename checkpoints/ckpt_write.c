/* checkpoints/ckpt_write.c: writing one checkpoint file with parallel HDF5, and the synchronous
 * save (write, then commit).
 *
 * Every rank makes the same HDF5 calls in the same order (parallel HDF5's metadata calls are
 * collective): create each dataset, attach its checksum attribute (the same rows on every rank,
 * gathered first), then one collective H5Dwrite in which each rank selects its piece, or nothing.
 */
#include "checkpoints/ckpt_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

/* One checksum row as exchanged between ranks: [written?, crc, start, stride, count, block]. */
#define ROW_WORDS (2 + 4 * ATOM_CKPT_MAX_DIMS)

static int write_attr(hid_t obj, const char *name, hid_t file_type, hid_t mem_type,
                      const void *value, hsize_t n, atom_ckpt_err *err) {
    hid_t space = n == 0 ? H5Screate(H5S_NULL) : H5Screate_simple(1, &n, NULL);
    hid_t attr = H5Acreate2(obj, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT);
    int rc = attr < 0 || (n > 0 && H5Awrite(attr, mem_type, value) < 0)
                 ? ckpt_h5_errf(err, "writing attribute %s", name)
                 : 0;
    if (attr >= 0) {
        H5Aclose(attr);
    }
    H5Sclose(space);
    return rc;
}

static int write_string_attr(hid_t obj, const char *name, const char *value, atom_ckpt_err *err) {
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, strlen(value) + 1);
    H5Tset_strpad(type, H5T_STR_NULLTERM);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attr = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    int rc = attr < 0 || H5Awrite(attr, type, value) < 0
                 ? ckpt_h5_errf(err, "writing attribute %s", name)
                 : 0;
    if (attr >= 0) {
        H5Aclose(attr);
    }
    H5Sclose(space);
    H5Tclose(type);
    return rc;
}

static int write_meta(hid_t file, const atom_ckpt_meta *m, atom_ckpt_err *err) {
    int32_t version = ATOM_CKPT_FORMAT_VERSION, layout[2] = {m->tp, m->dp};
    int rc = write_string_attr(file, "format", "atom-checkpoint", err);
    rc = rc ? rc : write_attr(file, "format_version", H5T_STD_I32LE, H5T_NATIVE_INT32, &version, 1, err);
    rc = rc ? rc : write_attr(file, "step", H5T_STD_I64LE, H5T_NATIVE_INT64, &m->step, 1, err);
    rc = rc ? rc : write_attr(file, "tokens_seen", H5T_STD_I64LE, H5T_NATIVE_INT64, &m->tokens_seen, 1, err);
    rc = rc ? rc : write_attr(file, "data_position", H5T_STD_I64LE, H5T_NATIVE_INT64, &m->data_position, 1, err);
    rc = rc ? rc : write_attr(file, "rng_state", H5T_STD_U8LE, H5T_NATIVE_UINT8, m->rng_state,
                              (hsize_t)m->rng_state_len, err);
    rc = rc ? rc : write_attr(file, "layout_tp_dp", H5T_STD_I32LE, H5T_NATIVE_INT32, layout, 2, err);
    rc = rc ? rc : write_attr(file, "vocab", H5T_STD_I64LE, H5T_NATIVE_INT64, &m->vocab, 1, err);
    rc = rc ? rc : write_attr(file, "created_unix", H5T_STD_I64LE, H5T_NATIVE_INT64, &m->created_unix, 1, err);
    rc = rc ? rc : write_string_attr(file, "writer", m->writer, err);
    rc = rc ? rc : write_string_attr(file, "job_spec", m->spec_json ? m->spec_json : "", err);
    if (m->tokenizer[0]) {
        rc = rc ? rc : write_string_attr(file, "tokenizer", m->tokenizer, err);
    }
    return rc;
}

/* Every rank writes the same attribute values: take rank 0's metadata. Returns a copy whose
 * spec_json the caller frees. */
static int agree_meta(MPI_Comm comm, const atom_ckpt_meta *in, atom_ckpt_meta *out) {
    int rank;
    MPI_Comm_rank(comm, &rank);
    *out = *in;
    if (rank == 0) {
        char host[128] = "?";
        gethostname(host, sizeof host - 1);
        char who[sizeof out->writer];
        snprintf(who, sizeof who, "%.120s%.2shost %.64s pid %d", in->writer, in->writer[0] ? ", " : "",
                 host, (int)getpid());
        memcpy(out->writer, who, sizeof who);
        out->created_unix = (int64_t)time(NULL);
        if (out->rng_state_len < 0 || out->rng_state_len > ATOM_CKPT_MAX_RNG_BYTES) {
            out->rng_state_len = 0;
        }
    }
    MPI_Request req;
    MPI_Ibcast(out, (int)sizeof *out, MPI_BYTE, 0, comm, &req);
    ckpt_wait(&req);
    int len = rank == 0 && in->spec_json ? (int)strlen(in->spec_json) : 0;
    MPI_Ibcast(&len, 1, MPI_INT, 0, comm, &req);
    ckpt_wait(&req);
    out->spec_json = malloc((size_t)len + 1);
    if (!out->spec_json) {
        return -1; /* every rank has the same len; the small malloc fails alike in practice */
    }
    if (rank == 0 && len > 0) {
        memcpy(out->spec_json, in->spec_json, (size_t)len);
    }
    MPI_Ibcast(out->spec_json, len, MPI_CHAR, 0, comm, &req);
    ckpt_wait(&req);
    out->spec_json[len] = '\0';
    return 0;
}

/* The checksum rows of one dataset, as stored: [crc, start.., stride.., count.., block..]. */
static int write_crc_attr(hid_t ds, const uint64_t *rows, int nranks, int stride_words, int nd,
                          atom_ckpt_err *err) {
    int nslabs = 0;
    for (int r = 0; r < nranks; r++) {
        nslabs += rows[(size_t)r * stride_words] != 0;
    }
    int width = 1 + 4 * nd;
    uint64_t *table = malloc(sizeof(uint64_t) * (size_t)(nslabs > 0 ? nslabs : 1) * width);
    if (!table) {
        return ckpt_errf(err, "out of memory for checksums");
    }
    int s = 0;
    for (int r = 0; r < nranks; r++) {
        const uint64_t *row = rows + (size_t)r * stride_words;
        if (!row[0]) {
            continue;
        }
        uint64_t *t = table + (size_t)s++ * width;
        t[0] = row[1];
        for (int q = 0; q < 4; q++) {
            for (int d = 0; d < nd; d++) {
                t[1 + q * nd + d] = row[2 + q * ATOM_CKPT_MAX_DIMS + d];
            }
        }
    }
    hsize_t adims[2] = {(hsize_t)nslabs, (hsize_t)width};
    hid_t space = H5Screate_simple(2, adims, NULL);
    hid_t attr = H5Acreate2(ds, CKPT_CRC_ATTR, H5T_STD_U64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    int rc = attr < 0 || H5Awrite(attr, H5T_NATIVE_UINT64, table) < 0
                 ? ckpt_h5_errf(err, "writing the checksums")
                 : 0;
    if (attr >= 0) {
        H5Aclose(attr);
    }
    H5Sclose(space);
    free(table);
    return rc;
}

/* The chunk width of tensor i's datasets (ckpt_chunk_width), decided from every rank's row so
 * that rank 0, which creates them, and every writer agree; 0: contiguous. */
static hsize_t dataset_chunk_width(const uint64_t *all_rows, int i, int n, int nranks,
                                   const ckpt_piece *p) {
    const size_t per_rank = (size_t)n * CKPT_KINDS * ROW_WORDS;
    hsize_t w = 0;
    for (int r = 0; r < nranks; r++) {
        const uint64_t *row = all_rows + per_rank * r + (size_t)i * CKPT_KINDS * ROW_WORDS;
        if (!row[0]) {
            continue; /* this rank writes nothing of the tensor */
        }
        hsize_t start[ATOM_CKPT_MAX_DIMS], count[ATOM_CKPT_MAX_DIMS], block[ATOM_CKPT_MAX_DIMS];
        for (int d = 0; d < p->ndims; d++) {
            start[d] = row[2 + 0 * ATOM_CKPT_MAX_DIMS + d];
            count[d] = row[2 + 2 * ATOM_CKPT_MAX_DIMS + d];
            block[d] = row[2 + 3 * ATOM_CKPT_MAX_DIMS + d];
        }
        hsize_t mine = ckpt_chunk_width(p->ndims, p->dims, start, count, block);
        if (mine == 0 || (w != 0 && mine != w)) {
            return 0;
        }
        w = mine;
    }
    return w;
}

/* The file's structure: groups, every dataset (its space allocated at creation, so its address
 * is known at once: contiguous, or in column-block chunks, dataset_chunk_width) with its
 * checksum attribute, and the root attributes. ds[]
 * gets the 3n datasets in (kind, tensor) order, left open; groups[] the three groups. Called by
 * every rank together on a parallel file, or by rank 0 alone on a serial one. */
static int create_structure(hid_t file, ckpt_piece *pieces, int n, int nranks,
                            const uint64_t *all_rows, const atom_ckpt_meta *m, hid_t *ds,
                            int *created, hid_t groups[CKPT_KINDS], atom_ckpt_err *err) {
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    /* no space for the data in a rehearsal (ckpt_rehearse): only the structure is made */
    bool rehearsal = all_rows == NULL;
    H5Pset_alloc_time(dcpl, rehearsal ? H5D_ALLOC_TIME_LATE : H5D_ALLOC_TIME_EARLY);
    H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER); /* every element is written: no zero pass */
    uint64_t *rows = malloc(sizeof(uint64_t) * ROW_WORDS * (size_t)nranks);
    int rc = rows ? 0 : ckpt_errf(err, "out of memory");
    *created = 0;
    for (int k = 0; k < CKPT_KINDS; k++) {
        groups[k] = -1;
    }
    for (int k = 0; k < CKPT_KINDS && rc == 0; k++) {
        groups[k] = H5Gcreate2(file, ckpt_kind_names[k], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (groups[k] < 0) {
            rc = ckpt_h5_errf(err, "creating group /%s", ckpt_kind_names[k]);
            break;
        }
        for (int i = 0; i < n && rc == 0; i++) {
            ckpt_piece *p = &pieces[i];
            hid_t fspace = H5Screate_simple(p->ndims, p->dims, NULL);
            hsize_t w = rehearsal ? 0 : dataset_chunk_width(all_rows, i, n, nranks, p);
            hid_t layout = dcpl;
            if (w > 0) {
                hsize_t chunk[ATOM_CKPT_MAX_DIMS];
                memcpy(chunk, p->dims, sizeof(hsize_t) * (size_t)p->ndims);
                chunk[p->ndims - 1] = w;
                layout = H5Pcopy(dcpl);
                H5Pset_chunk(layout, p->ndims, chunk);
            }
            hid_t d = H5Dcreate2(groups[k], p->name, H5T_IEEE_F32LE, fspace, H5P_DEFAULT, layout,
                                 H5P_DEFAULT);
            if (layout != dcpl) {
                H5Pclose(layout);
            }
            H5Sclose(fspace);
            if (d < 0) {
                rc = ckpt_h5_errf(err, "creating dataset /%s/%s", ckpt_kind_names[k], p->name);
                break;
            }
            ds[(*created)++] = d;
            /* rows of (tensor i, kind k) from every rank */
            const size_t per_rank = (size_t)n * CKPT_KINDS * ROW_WORDS;
            for (int r = 0; r < nranks; r++) {
                uint64_t *to = rows + (size_t)r * ROW_WORDS;
                if (rehearsal) {
                    memset(to, 0, sizeof(uint64_t) * ROW_WORDS);
                    to[0] = 1; /* one slab per rank, as a save has */
                } else {
                    memcpy(to, all_rows + per_rank * r + ((size_t)i * CKPT_KINDS + k) * ROW_WORDS,
                           sizeof(uint64_t) * ROW_WORDS);
                }
            }
            rc = write_crc_attr(d, rows, nranks, ROW_WORDS, p->ndims, err);
        }
    }
    if (rc == 0) {
        rc = write_meta(file, m, err);
    }
    free(rows);
    H5Pclose(dcpl);
    return rc;
}

static void close_structure(hid_t *ds, int created, hid_t groups[CKPT_KINDS]) {
    for (int j = 0; j < created; j++) {
        H5Dclose(ds[j]);
    }
    for (int k = 0; k < CKPT_KINDS; k++) {
        if (groups[k] >= 0) {
            H5Gclose(groups[k]);
        }
    }
}

/* Large datasets start on 1 MiB boundaries (file-system stripes and pages, and whole pages
 * for O_DIRECT); small ones pack together. */
static void set_alignment(hid_t fapl) { H5Pset_alignment(fapl, 64 * 1024, 1024 * 1024); }

/* Rank 0, before HDF5 writes anything: a file system without room for the datasets' bytes fails
 * the save here, naming the file and the reason, instead of inside HDF5. HDF5 1.10 does not
 * recover from a metadata write that fails in H5Fclose: the file's id stays behind, dangling,
 * and the library crashes when it shuts down at MPI_Finalize (seen with test_ckpt_full on a
 * full tmpfs). The datasets' bytes are a lower bound of the file; a disk that fills up after
 * this check still fails the save in the writes (after rank 0 has written HDF5's metadata).
 * (A leftover .tmp of the same step was removed before: fresh_tmp.) */
static int check_room(const char *path, const ckpt_piece *pieces, int n, atom_ckpt_err *err) {
    uint64_t need = 0;
    for (int i = 0; i < n; i++) {
        uint64_t elems = 1;
        for (int d = 0; d < pieces[i].ndims; d++) {
            elems *= pieces[i].dims[d];
        }
        need += CKPT_KINDS * sizeof(float) * elems;
    }
    char folder[4096];
    snprintf(folder, sizeof folder, "%s", path);
    struct statvfs fs;
    if (statvfs(dirname(folder), &fs) != 0 || fs.f_blocks == 0) {
        return 0; /* nothing known (some network and FUSE file systems): the writes will tell */
    }
    /* root may use the blocks the file system reserves for it */
    uint64_t room = (uint64_t)(geteuid() == 0 ? fs.f_bfree : fs.f_bavail) * fs.f_frsize;
    if (room < need) {
        return ckpt_errf(err, "no room for %s: its datasets take %llu bytes, %llu are free: %s",
                         path, (unsigned long long)need, (unsigned long long)room,
                         strerror(ENOSPC));
    }
    return 0;
}

static void chunk_end(haddr_t at, hsize_t bytes, const hsize_t *origin, void *arg) {
    (void)origin;
    hsize_t *end = arg;
    *end = at + bytes > *end ? at + bytes : *end;
}

/* The byte after a dataset's last allocated byte: contiguous, or its column-block chunks. */
static hsize_t dataset_end(hid_t ds) {
    haddr_t at = H5Dget_offset(ds);
    if (at != HADDR_UNDEF) {
        return at + H5Dget_storage_size(ds);
    }
    hsize_t end = 0;
    ckpt_each_chunk(ds, chunk_end, &end);
    return end;
}

/* MPI-IO reports a write into a full file system only as MPI_ERR_IO ("input/output error"):
 * ROMIO's errno does not reach HDF5's message. When the file system of path has no room left
 * for the rest of the file (its free bytes plus what the file holds already are less than its
 * size), that is said. */
static void explain_no_room(const char *path, hsize_t file_size, atom_ckpt_err *err) {
    char folder[4096];
    snprintf(folder, sizeof folder, "%s", path);
    struct statvfs fs;
    struct stat st;
    if (file_size == 0 || statvfs(dirname(folder), &fs) != 0 || stat(path, &st) != 0) {
        return;
    }
    uint64_t room = (uint64_t)(geteuid() == 0 ? fs.f_bfree : fs.f_bavail) * fs.f_frsize +
                    (uint64_t)st.st_blocks * 512;
    if (room < file_size) {
        size_t used = strlen(err->msg);
        snprintf(err->msg + used, sizeof err->msg - used,
                 " (the file takes %llu bytes, its file system has room for %llu: %s)",
                 (unsigned long long)file_size, (unsigned long long)room, strerror(ENOSPC));
    }
}

/* Through parallel HDF5 (ATOM_CKPT_IO=collective or ATOM_CKPT_DIRECT=0): every rank opens the
 * file over MPI-IO, the structure is created collectively, then each rank's H5Dwrite of each
 * dataset (collective or independent), flush (MPI_File_sync on every rank) and close. */
static int write_parallel(const char *path, MPI_Comm comm, ckpt_piece *pieces, int n,
                          const uint64_t *all_rows, const atom_ckpt_meta *m, atom_ckpt_err *err) {
    int size;
    MPI_Comm_size(comm, &size);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    MPI_Info info = ckpt_mpi_info();
    H5Pset_fapl_mpio(fapl, comm, info); /* HDF5 keeps its own copies of comm and info */
    MPI_Info_free(&info);
    set_alignment(fapl);
    H5Pset_coll_metadata_write(fapl, 1);
    int rank;
    MPI_Comm_rank(comm, &rank);
    if (ckpt_agree(comm, rank == 0 ? check_room(path, pieces, n, err) : 0, err) != 0) {
        H5Pclose(fapl);
        return -1;
    }
    ckpt_meet(comm);
    hid_t file = H5Fcreate(path, H5F_ACC_EXCL, H5P_DEFAULT, fapl); /* see fresh_tmp */
    /* the error first: any HDF5 call (H5Pclose too) clears the error stack that says why */
    int rc = file < 0 ? ckpt_h5_errf(err, "creating %s", path) : 0;
    H5Pclose(fapl);
    if (file < 0) {
        return rc;
    }
    hid_t groups[CKPT_KINDS];
    hid_t *ds = malloc(sizeof(hid_t) * CKPT_KINDS * (size_t)(n > 0 ? n : 1));
    int created = 0;
    rc = ds ? create_structure(file, pieces, n, size, all_rows, m, ds, &created, groups, err)
            : ckpt_errf(err, "out of memory");
    /* HDF5's metadata goes to disk before the data, as on the default path: if the disk fills
     * during the data, the final flush and close have nothing left to write and succeed (a
     * failed H5Fclose leaves a dangling file id behind; see check_room). */
    if (rc == 0 && H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) {
        rc = ckpt_h5_errf(err, "writing the structure of %s", path);
    }
    /* where the file ends at least: its last dataset's end (all are allocated at creation) */
    hsize_t file_size = 0;
    for (int j = 0; j < created; j++) {
        hsize_t end = dataset_end(ds[j]);
        file_size = end > file_size ? end : file_size;
    }
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5Pset_dxpl_mpio(dxpl, ckpt_xfer_mode());
    float dummy = 0;
    /* Metadata failures are collective (every rank made the same calls); a write is made even
     * after an error, so that no rank is left waiting in a collective one. */
    for (int j = 0; j < created; j++) {
        int k = j / n, i = j % n;
        ckpt_piece *p = &pieces[i];
        hid_t fspace = H5Dget_space(ds[j]);
        hsize_t one = 1;
        hid_t mspace = p->elems > 0 ? ckpt_mem_space(p->ndims, p->count, p->block)
                                    : H5Screate_simple(1, &one, NULL);
        if (p->elems > 0) {
            H5Sselect_hyperslab(fspace, H5S_SELECT_SET, p->start, p->stride, p->count, p->block);
        } else {
            H5Sselect_none(fspace);
            H5Sselect_none(mspace);
        }
        const void *buf = p->elems > 0 ? (const void *)p->data[k] : (const void *)&dummy;
        if (H5Dwrite(ds[j], H5T_NATIVE_FLOAT, mspace, fspace, dxpl, buf) < 0 && rc == 0) {
            rc = ckpt_h5_errf(err, "writing dataset /%s/%s of %s", ckpt_kind_names[k], p->name,
                              path);
        }
        H5Sclose(mspace);
        H5Sclose(fspace);
        char point[32];
        snprintf(point, sizeof point, "dataset-%d", j + 1);
        ckpt_fault_point(comm, point);
    }
    H5Pclose(dxpl);
    close_structure(ds, created, groups);
    free(ds);
    ckpt_meet(comm); /* the ranks' writes took different times; flush and close are collective */
    /* Flush through MPI_File_sync so the data is durable on every node's view of the file
     * before the commit renames it (rank 0's fsync covers only its own node). */
    if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0 && rc == 0) {
        rc = ckpt_h5_errf(err, "flushing %s", path);
    }
    if (H5Fclose(file) < 0 && rc == 0) {
        rc = ckpt_h5_errf(err, "closing %s", path);
    }
    if (rc != 0 && err) {
        explain_no_room(path, file_size, err);
    }
    return rc;
}

/* Allocates every block of the laid-out file (HDF5 left the datasets as holes) in one call.
 * O_DIRECT writes into allocated blocks take ext4's inode lock shared; into holes each write
 * takes it exclusively and allocates, and the other ranks' writers spin on the lock (gpt-tiny
 * at DP 2, perf samples of the writer threads: 12% spinning without, 3-7% with; 7-14% fewer
 * samples in all; the page-cache writes of short runs still take the lock exclusively).
 * A disk too full for the checkpoint fails here, before anything is written. File systems
 * without fallocate allocate as they write. */
static int allocate_blocks(const char *path, atom_ckpt_err *err) {
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int e = errno;
        if (fd >= 0) {
            close(fd);
        }
        return ckpt_errf(err, "cannot open %s: %s", path, strerror(e));
    }
    int rc = 0;
    if (st.st_size > 0 && fallocate(fd, 0, 0, st.st_size) != 0 && errno != EOPNOTSUPP &&
        errno != ENOSYS) {
        rc = ckpt_errf(err, "cannot allocate the %lld bytes of %s: %s", (long long)st.st_size,
                       path, strerror(errno));
    }
    close(fd);
    return rc;
}

/* The default: rank 0 alone creates the file and its whole structure with serial HDF5 and
 * closes it; it sends every dataset's file address; then every rank writes its pieces' bytes
 * there itself (ckpt_direct.c: O_DIRECT for whole pages) and syncs them. The ranks meet only in
 * ckpt_wait's sleeping waits, never inside HDF5 or MPI-IO, whose collective calls poll: an
 * async writer whose partner was descheduled by training spent 20-30 ms of CPU per save there
 * (measured), more than its own work. The file is the same as write_parallel's. */
static int write_direct(const char *path, MPI_Comm comm, ckpt_piece *pieces, int n,
                        const uint64_t *all_rows, const atom_ckpt_meta *m, atom_ckpt_err *err) {
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    int nds = CKPT_KINDS * n;
    /* addr[j * slots + c]: where chunk c of dataset j starts (c = 0: a contiguous one) */
    hsize_t *width = malloc(sizeof(hsize_t) * (size_t)(n > 0 ? n : 1));
    size_t slots = 1;
    for (int i = 0; width && i < n; i++) {
        width[i] = dataset_chunk_width(all_rows, i, n, size, &pieces[i]);
        size_t chunks = width[i] ? (size_t)(pieces[i].dims[pieces[i].ndims - 1] / width[i]) : 1;
        slots = chunks > slots ? chunks : slots;
    }
    uint64_t *addr = malloc(sizeof(uint64_t) * (size_t)(nds > 0 ? nds : 1) * slots);
    int rc = addr && width ? 0 : ckpt_errf(err, "out of memory");
    if (rank == 0 && rc == 0) {
        rc = check_room(path, pieces, n, err);
    }
    if (rank == 0 && rc == 0) {
        hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
        set_alignment(fapl);
        /* No flock: the .tmp file is this save's alone, and cluster file systems mounted
         * without flock support would refuse it (the MPI-IO driver never locked either). */
        H5Pset_file_locking(fapl, false, true);
        hid_t file = H5Fcreate(path, H5F_ACC_EXCL, H5P_DEFAULT, fapl); /* see fresh_tmp */
        /* the error first: any HDF5 call (H5Pclose too) clears the error stack that says why */
        if (file < 0) {
            rc = ckpt_h5_errf(err, "creating %s", path);
        }
        H5Pclose(fapl);
        if (file >= 0) {
            hid_t groups[CKPT_KINDS];
            hid_t *ds = malloc(sizeof(hid_t) * (size_t)(nds > 0 ? nds : 1));
            int created = 0;
            rc = ds ? create_structure(file, pieces, n, size, all_rows, m, ds, &created, groups,
                                       err)
                    : ckpt_errf(err, "out of memory");
            for (int j = 0; j < created && rc == 0; j++) {
                const ckpt_piece *p = &pieces[j % n];
                hsize_t w = width[j % n];
                hsize_t chunks = w ? p->dims[p->ndims - 1] / w : 1;
                for (hsize_t c = 0; c < chunks && rc == 0; c++) {
                    haddr_t a = HADDR_UNDEF;
                    if (w == 0) {
                        a = H5Dget_offset(ds[j]);
                    } else {
                        hsize_t origin[ATOM_CKPT_MAX_DIMS] = {0};
                        origin[p->ndims - 1] = c * w;
                        unsigned filters = 0;
                        hsize_t bytes = 0;
                        if (H5Dget_chunk_info_by_coord(ds[j], origin, &filters, &a, &bytes) < 0) {
                            a = HADDR_UNDEF;
                        }
                    }
                    addr[(size_t)j * slots + c] = (uint64_t)a;
                    if (a == HADDR_UNDEF) {
                        rc = ckpt_errf(err, "dataset /%s/%s has no file address",
                                       ckpt_kind_names[j / n], p->name);
                    }
                }
            }
            close_structure(ds, created, groups);
            free(ds);
            if (H5Fclose(file) < 0 && rc == 0) {
                rc = ckpt_h5_errf(err, "closing %s", path);
            }
            if (rc == 0) {
                rc = allocate_blocks(path, err);
            }
        }
    }
    if (ckpt_agree(comm, rc, err) != 0) {
        free(addr);
        free(width);
        return -1;
    }
    MPI_Request req;
    MPI_Ibcast(addr, nds * (int)slots, MPI_UINT64_T, 0, comm, &req);
    ckpt_wait(&req);
    ckpt_direct w;
    rc = ckpt_direct_open(&w, path, err);
    for (int j = 0; j < nds && rc == 0; j++) {
        const ckpt_piece *p = &pieces[j % n];
        ckpt_piece view;
        hsize_t chunk = 0;
        if (width[j % n] > 0 && p->elems > 0) {
            ckpt_piece_in_chunk(p, width[j % n], &view, &chunk);
            p = &view;
        }
        haddr_t at = (haddr_t)addr[(size_t)j * slots + chunk];
        atom_ckpt_err why = {""};
        if (p->elems > 0 && ckpt_direct_write(&w, at, p, p->data[j / n], &why) != 0) {
            rc = ckpt_errf(err, "writing dataset /%s/%s of %s: %s", ckpt_kind_names[j / n],
                           p->name, path, why.msg);
        }
        char point[32];
        snprintf(point, sizeof point, "dataset-%d", j + 1);
        ckpt_fault_point(comm, point);
    }
    /* Each rank makes its own writes durable (the commit's fsync runs on rank 0's node only). */
    if (w.fd >= 0 && ckpt_direct_close(&w, path, err) != 0 && rc == 0) {
        rc = -1;
    }
    free(addr);
    free(width);
    return rc;
}

void ckpt_rehearse(ckpt_piece *pieces, int n, int nranks, const atom_ckpt_meta *meta) {
    ckpt_h5_quiet();
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_core(fapl, 1u << 20, false); /* in memory, never written anywhere */
    hid_t file = H5Fcreate("atom-ckpt-rehearsal", H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    hid_t *ds = malloc(sizeof(hid_t) * CKPT_KINDS * (size_t)(n > 0 ? n : 1));
    if (file >= 0 && ds) {
        hid_t groups[CKPT_KINDS];
        int created = 0;
        atom_ckpt_err ignored;
        create_structure(file, pieces, n, nranks, NULL, meta, ds, &created, groups, &ignored);
        close_structure(ds, created, groups);
    }
    free(ds);
    if (file >= 0) {
        H5Fclose(file);
    }
}

/* Rank 0 removes a .tmp of this step left by an earlier save (a crash, or a name planted by
 * anyone who could write the folder) with unlink, which removes a symlink and never follows
 * it; the writers then create the file with H5F_ACC_EXCL (O_CREAT | O_EXCL: a name that
 * appears in between fails the save instead of being written through). */
static int fresh_tmp(const char *path, MPI_Comm comm, atom_ckpt_err *err) {
    int rank;
    MPI_Comm_rank(comm, &rank);
    if (rank == 0 && unlink(path) != 0 && errno != ENOENT) {
        return ckpt_errf(err, "cannot remove the leftover %s: %s", path, strerror(errno));
    }
    return 0;
}

int ckpt_write_file(const char *path, MPI_Comm comm, ckpt_piece *pieces, int n,
                    const atom_ckpt_meta *meta, atom_ckpt_err *err) {
    ckpt_h5_quiet();
    int size;
    MPI_Comm_size(comm, &size);
    /* checksum each piece this rank writes, then share the rows so every rank writes the same
     * attribute */
    size_t per_rank = (size_t)n * CKPT_KINDS * ROW_WORDS;
    uint64_t *all_rows = malloc(sizeof(uint64_t) * per_rank * (size_t)(size + 1));
    if (!all_rows) {
        return ckpt_agree(comm, ckpt_errf(err, "out of memory for checksums"), err);
    }
    uint64_t *mine = all_rows + per_rank * size;
    memset(mine, 0, sizeof(uint64_t) * per_rank);
    for (int i = 0; i < n; i++) {
        ckpt_piece *p = &pieces[i];
        for (int k = 0; k < CKPT_KINDS; k++) {
            uint64_t *row = mine + ((size_t)i * CKPT_KINDS + k) * ROW_WORDS;
            if (p->elems == 0) {
                continue;
            }
            if (!p->crc_ready) {
                p->crc[k] = atom_ckpt_crc32c(0, p->data[k], sizeof(float) * (size_t)p->elems);
            }
            row[0] = 1;
            row[1] = p->crc[k];
            for (int d = 0; d < p->ndims; d++) {
                row[2 + 0 * ATOM_CKPT_MAX_DIMS + d] = p->start[d];
                row[2 + 1 * ATOM_CKPT_MAX_DIMS + d] = p->stride[d];
                row[2 + 2 * ATOM_CKPT_MAX_DIMS + d] = p->count[d];
                row[2 + 3 * ATOM_CKPT_MAX_DIMS + d] = p->block[d];
            }
        }
    }
    MPI_Request req;
    MPI_Iallgather(mine, (int)per_rank, MPI_UINT64_T, all_rows, (int)per_rank, MPI_UINT64_T, comm,
                   &req);
    ckpt_wait(&req);

    atom_ckpt_meta m;
    int rc = agree_meta(comm, meta, &m) == 0 ? 0 : ckpt_errf(err, "out of memory for the spec");
    rc = ckpt_agree(comm, rc, err);
    bool wrote = rc == 0;
    if (wrote) {
        rc = ckpt_agree(comm, fresh_tmp(path, comm, err), err);
        wrote = rc == 0;
    }
    if (wrote) {
        rc = ckpt_direct_enabled() ? write_direct(path, comm, pieces, n, all_rows, &m, err)
                                   : write_parallel(path, comm, pieces, n, all_rows, &m, err);
    }
    free(all_rows);
    free(m.spec_json);
    rc = ckpt_agree(comm, rc, err);
    if (rc != 0 && wrote) {
        ckpt_discard_tmp(path, comm, err);
    }
    return rc;
}

void ckpt_discard_tmp(const char *path, MPI_Comm comm, atom_ckpt_err *err) {
    int rank;
    MPI_Comm_rank(comm, &rank);
    atom_ckpt_err local = {""};
    if (!err) {
        err = &local;
    }
    if (rank == 0) {
        size_t used = strlen(err->msg);
        if (unlink(path) == 0) {
            snprintf(err->msg + used, sizeof err->msg - used, " (the partial file was removed)");
        } else if (errno != ENOENT) {
            snprintf(err->msg + used, sizeof err->msg - used,
                     " (the partial file was not removed: %s)", strerror(errno));
        }
    }
    MPI_Request req;
    MPI_Ibcast(err->msg, (int)sizeof err->msg, MPI_CHAR, 0, comm, &req);
    ckpt_wait(&req);
}

/* Creates dir (one level) on rank 0 if missing and checks it is the writer's (ckpt_util.c);
 * every rank gets the status. */
int ckpt_ensure_dir(const char *dir, MPI_Comm comm, atom_ckpt_err *err) {
    int rank, rc = 0;
    MPI_Comm_rank(comm, &rank);
    if (rank == 0) {
        rc = ckpt_dir_make(dir, err);
    }
    return ckpt_agree(comm, rc, err);
}

int atom_ckpt_write(const char *dir, atom_ckpt_group group, const atom_ckpt_tensor *tensors,
                    int ntensors, const atom_ckpt_meta *meta, atom_ckpt_err *err) {
    if (ckpt_ensure_dir(dir, group.comm, err) != 0) {
        return -1;
    }
    ckpt_piece *pieces = calloc((size_t)(ntensors > 0 ? ntensors : 1), sizeof *pieces);
    if (!pieces) {
        return ckpt_agree(group.comm, ckpt_errf(err, "out of memory"), err);
    }
    int rc = ckpt_plan(group.comm, tensors, ntensors, pieces, err);
    rc = ckpt_agree(group.comm, rc, err);
    /* Pieces that are one run of the shard are written from it directly; the others (a split
     * below an outer dimension) are gathered into one temporary buffer. */
    size_t gathered = 0;
    for (int i = 0; i < ntensors && rc == 0; i++) {
        const atom_ckpt_tensor *t = &tensors[i];
        if (!t->param || !t->adam_m || !t->adam_v) {
            rc = ckpt_errf(err, "tensor %s: param, adam_m and adam_v must all be given", t->name);
        }
        if (!ckpt_piece_contiguous(&pieces[i])) {
            gathered += (size_t)pieces[i].elems * CKPT_KINDS;
        }
    }
    float *tmp = NULL;
    if (rc == 0 && gathered > 0 && !(tmp = malloc(sizeof(float) * gathered))) {
        rc = ckpt_errf(err, "out of memory gathering %zu floats", gathered);
    }
    rc = ckpt_agree(group.comm, rc, err);
    if (rc == 0) {
        float *next = tmp;
        for (int i = 0; i < ntensors; i++) {
            const float *src[CKPT_KINDS] = {tensors[i].param, tensors[i].adam_m, tensors[i].adam_v};
            for (int k = 0; k < CKPT_KINDS; k++) {
                if (ckpt_piece_contiguous(&pieces[i])) {
                    pieces[i].data[k] = src[k] + pieces[i].off;
                } else {
                    ckpt_piece_gather(&pieces[i], src[k], next);
                    pieces[i].data[k] = next;
                    next += pieces[i].elems;
                }
            }
        }
        atom_ckpt_meta m = *meta;
        ckpt_meta_defaults(&m, group);
        char path[4096];
        ckpt_file_name(path, sizeof path, dir, meta->step, true);
        rc = ckpt_write_file(path, group.comm, pieces, ntensors, &m, err);
    }
    free(tmp);
    free(pieces);
    return rc;
}

int atom_ckpt_save(const char *dir, atom_ckpt_group group, const atom_ckpt_tensor *tensors,
                   int ntensors, const atom_ckpt_meta *meta, int keep, atom_ckpt_err *err) {
    if (atom_ckpt_write(dir, group, tensors, ntensors, meta, err) != 0) {
        return -1;
    }
    return atom_ckpt_commit(dir, meta->step, group.comm, keep, err);
}
