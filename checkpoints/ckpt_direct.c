/* checkpoints/ckpt_direct.c: writing a piece's floats straight into its dataset's place in the
 * file, past the page cache.
 *
 * Why: on this kind of machine most of a save's CPU time was the kernel copying the floats into
 * freshly allocated page-cache pages (measured: 19.5 MB per rank took 60-67 ms of CPU in
 * H5Dwrite, i.e. 0.3 GB/s, beside 23 ms of fsync), and an async save pays that CPU time on the
 * cores training runs on. With O_DIRECT the disk's DMA moves the bytes: the writer thread
 * spends a bounce-buffer memcpy (GB/s from hot pages) and otherwise waits on the disk, which
 * costs training nothing.
 *
 * How: HDF5 still creates the file, every dataset (contiguous, allocated at creation) and every
 * attribute (rank 0 alone with serial HDF5 by default, ckpt_write.c's write_direct; or all ranks
 * with parallel HDF5); H5Dget_offset gives where a dataset's raw data starts, and the rank
 * writes the runs of its hyperslab there itself, in the order H5Dwrite would map a packed
 * 1-D buffer onto the selection (row-major). That is the same bytes at the same places as an
 * independent H5Dwrite through ROMIO (which also ends in pwrite), so readers see a normal HDF5
 * file. Only the whole 4 KiB pages inside a run of at least ckpt_direct_min() bytes go through
 * O_DIRECT (from an aligned bounce buffer); a run's partial head and tail pages, and small
 * runs, use ordinary pwrite. A page is therefore written either directly by one rank or through
 * the page cache, never both, so a cached partial page can never be written back over a direct
 * write (the file system's block is the page here). If the file system refuses O_DIRECT, every
 * run goes through the page cache.
 */
#include "checkpoints/ckpt_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DIRECT_ALIGN 4096
#define BOUNCE_BYTES (4u << 20)
#define DIRECT_CHUNK_BYTES (64u << 20)

/* Column blocks as chunks. A tensor split along its last dimension (a row-parallel Linear's
 * weight at TP > 1) gives each rank runs of only dims[last]/TP floats per row in a contiguous
 * dataset: 1.5-6 KiB for gpt2-124m at TP 2, too short for O_DIRECT, so they went through the
 * page cache (most of the async writer's CPU time at TP 2). Stored in chunks of one column block
 * each (every leading dimension whole, `w` columns), each rank's piece is one run inside its
 * chunk. Readers see the same dataset; HDF5 maps selections onto chunks. */
hsize_t ckpt_chunk_width(int nd, const hsize_t *dims, const hsize_t *start, const hsize_t *count,
                         const hsize_t *block) {
    const int last = nd - 1;
    hsize_t w = block[last], rows = 1;
    for (int d = 0; d < nd; d++) {
        if (count[d] != 1) {
            return 0;
        }
        rows *= d < last ? dims[d] : 1;
    }
    bool split = nd >= 2 && w < dims[last] && dims[last] % w == 0 && start[last] % w == 0;
    /* HDF5's limit on a chunk's bytes is 4 GiB - 1 */
    return split && rows * w * sizeof(float) < (1ull << 32) - 1 ? w : 0;
}

void ckpt_piece_in_chunk(const ckpt_piece *p, hsize_t w, ckpt_piece *view, hsize_t *chunk) {
    const int last = p->ndims - 1;
    *view = *p;
    *chunk = p->start[last] / w;
    view->dims[last] = w;
    view->start[last] -= *chunk * w;
}

size_t ckpt_direct_place(const ckpt_piece *p, size_t at) {
    hsize_t w = ckpt_chunk_width(p->ndims, p->dims, p->start, p->count, p->block), chunk;
    ckpt_piece view;
    if (w > 0) {
        ckpt_piece_in_chunk(p, w, &view, &chunk);
        p = &view;
    }
    /* the byte offset of the piece's first element in its dataset (or chunk) */
    hsize_t first = 0, stride = 1;
    for (int d = p->ndims - 1; d >= 0; d--) {
        first += p->start[d] * stride;
        stride *= p->dims[d];
    }
    size_t want = (size_t)(first * sizeof(float)) % DIRECT_ALIGN;
    return at + (want + DIRECT_ALIGN - at % DIRECT_ALIGN) % DIRECT_ALIGN;
}

size_t ckpt_direct_min(void) {
    const char *env = ckpt_env_choice("ATOM_CKPT_DIRECT_MIN", NULL, "262144");
    if (env) {
        long long v = atoll(env);
        return v < DIRECT_ALIGN ? DIRECT_ALIGN : (size_t)v;
    }
    return 256u << 10;
}

bool ckpt_direct_enabled(void) {
    static const char *const onoff[] = {"0", "1", NULL};
    const char *env = ckpt_env_choice("ATOM_CKPT_DIRECT", onoff, "1");
    return ckpt_xfer_mode() == H5FD_MPIO_INDEPENDENT && !(env && strcmp(env, "0") == 0);
}

int ckpt_direct_open(ckpt_direct *w, const char *path, atom_ckpt_err *err) {
    memset(w, 0, sizeof *w);
    w->fd_direct = -1;
    w->min_run = ckpt_direct_min();
    w->fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (w->fd < 0) {
        return ckpt_errf(err, "cannot open %s to write its datasets: %s", path, strerror(errno));
    }
    void *bounce = NULL;
    if (posix_memalign(&bounce, DIRECT_ALIGN, BOUNCE_BYTES) == 0) {
        w->bounce = bounce;
        /* -1: page cache only */
        w->fd_direct = open(path, O_WRONLY | O_CLOEXEC | O_DIRECT | O_NOFOLLOW);
    }
    return 0;
}

static int pwrite_all(int fd, const void *buf, size_t n, off_t at) {
    const char *p = buf;
    while (n > 0) {
        ssize_t k = pwrite(fd, p, n, at);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            return -1;
        }
        p += k;
        n -= (size_t)k;
        at += k;
    }
    return 0;
}

/* One run of n bytes from src at file offset at. */
static int write_run(ckpt_direct *w, const char *src, size_t n, off_t at, atom_ckpt_err *err) {
    off_t a = (at + DIRECT_ALIGN - 1) / DIRECT_ALIGN * DIRECT_ALIGN;
    off_t b = (at + (off_t)n) / DIRECT_ALIGN * DIRECT_ALIGN;
    if (w->fd_direct < 0 || n < w->min_run || b <= a) {
        a = b = at + (off_t)n; /* all of it through the page cache */
    }
    if (a > at && pwrite_all(w->fd, src, (size_t)(a - at), at) != 0) {
        return ckpt_errf(err, "writing %zu bytes at offset %lld: %s", (size_t)(a - at),
                         (long long)at, strerror(errno));
    }
    for (off_t o = a; o < b;) {
        /* From the caller's floats when they sit page-aligned (the async snapshot lays them out
         * so), else through the bounce buffer. */
        const char *from = src + (o - at);
        bool aligned = (uintptr_t)from % DIRECT_ALIGN == 0;
        size_t cap = aligned ? DIRECT_CHUNK_BYTES : BOUNCE_BYTES;
        size_t len = (size_t)(b - o) < cap ? (size_t)(b - o) : cap;
        if (!aligned) {
            memcpy(w->bounce, from, len);
            from = w->bounce;
        }
        if (pwrite_all(w->fd_direct, from, len, o) != 0) {
            if (errno != EINVAL) {
                return ckpt_errf(err, "writing %zu bytes at offset %lld (O_DIRECT): %s", len,
                                 (long long)o, strerror(errno));
            }
            /* alignment refused after all: the rest goes through the page cache */
            close(w->fd_direct);
            w->fd_direct = -1;
            b = o;
            break;
        }
        o += (off_t)len;
    }
    off_t end = at + (off_t)n;
    if (end > b && pwrite_all(w->fd, src + (b - at), (size_t)(end - b), b) != 0) {
        return ckpt_errf(err, "writing %zu bytes at offset %lld: %s", (size_t)(end - b),
                         (long long)b, strerror(errno));
    }
    return 0;
}

/* Calls fn(ctx, byte offset in the packed floats, bytes, file offset) for every run of piece
 * p's selection in the contiguous dataset (or chunk view) whose raw data starts at file byte
 * addr, in row-major order, runs that touch merged. Stops at the first nonzero return. */
typedef int (*run_fn)(void *ctx, size_t from, size_t n, off_t at);

static int each_run(const ckpt_piece *p, haddr_t addr, run_fn fn, void *ctx) {
    const int nd = p->ndims, last = nd - 1;
    hsize_t elem_stride[ATOM_CKPT_MAX_DIMS]; /* elements between neighbours along each dim */
    elem_stride[last] = 1;
    for (int d = last - 1; d >= 0; d--) {
        elem_stride[d] = elem_stride[d + 1] * p->dims[d + 1];
    }
    /* Odometer over the selected indices of every dim but the last; along the last, `count`
     * blocks of `block` elements. */
    hsize_t idx[ATOM_CKPT_MAX_DIMS] = {0};
    size_t packed = 0, run_from = 0, run_bytes = 0;
    off_t run_at = -1;
    for (;;) {
        hsize_t base = 0;
        for (int d = 0; d < last; d++) {
            hsize_t coord = p->start[d] + idx[d] / p->block[d] * p->stride[d] + idx[d] % p->block[d];
            base += coord * elem_stride[d];
        }
        for (hsize_t c = 0; c < p->count[last]; c++) {
            hsize_t first = base + p->start[last] + c * p->stride[last];
            off_t at = (off_t)(addr + first * sizeof(float));
            size_t bytes = sizeof(float) * (size_t)p->block[last];
            if (run_at >= 0 && run_at + (off_t)run_bytes == at) {
                run_bytes += bytes;
            } else {
                int rc = run_at >= 0 ? fn(ctx, run_from, run_bytes, run_at) : 0;
                if (rc != 0) {
                    return rc;
                }
                run_at = at;
                run_bytes = bytes;
                run_from = packed;
            }
            packed += bytes;
        }
        int d = last - 1;
        while (d >= 0 && ++idx[d] == p->count[d] * p->block[d]) {
            idx[d--] = 0;
        }
        if (d < 0) {
            break;
        }
    }
    return run_at >= 0 ? fn(ctx, run_from, run_bytes, run_at) : 0;
}

typedef struct run_io {
    ckpt_direct *w;
    char *data;          /* the packed floats */
    atom_ckpt_err *err;
    size_t runs, bytes;  /* counted by count_run */
} run_io;

static int write_one(void *ctx, size_t from, size_t n, off_t at) {
    run_io *io = ctx;
    return write_run(io->w, io->data + from, n, at, io->err);
}

int ckpt_direct_write(ckpt_direct *w, haddr_t addr, const ckpt_piece *p, const float *data,
                      atom_ckpt_err *err) {
    run_io io = {w, (char *)data, err, 0, 0}; /* written from, never to */
    return each_run(p, addr, write_one, &io);
}

/* ---- reads ----
 * A load's cold read goes through the page cache otherwise; on this VM the first load after a
 * save ran at 0.3-0.4 GB/s filling freshly allocated page-cache pages, where dd iflag=direct
 * read the same disk at 2.3-3.2 GB/s. The same split as writes: whole pages of long runs with
 * O_DIRECT (into the bounce buffer, then copied), the rest with pread. */

static int pread_all(int fd, char *buf, size_t n, off_t at) {
    while (n > 0) {
        ssize_t k = pread(fd, buf, n, at);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            if (k == 0) {
                errno = EIO; /* the file ends before the run: truncated */
            }
            return -1;
        }
        buf += k;
        n -= (size_t)k;
        at += k;
    }
    return 0;
}

static int read_one(void *ctx, size_t from, size_t n, off_t at) {
    run_io *io = ctx;
    ckpt_direct *r = io->w;
    char *dst = io->data + from;
    off_t a = (at + DIRECT_ALIGN - 1) / DIRECT_ALIGN * DIRECT_ALIGN;
    off_t b = (at + (off_t)n) / DIRECT_ALIGN * DIRECT_ALIGN;
    if (r->fd_direct < 0 || n < r->min_run || b <= a) {
        a = b = at + (off_t)n;
    }
    for (off_t o = a; o < b;) {
        size_t len = (size_t)(b - o) < BOUNCE_BYTES ? (size_t)(b - o) : BOUNCE_BYTES;
        if (pread_all(r->fd_direct, r->bounce, len, o) != 0) {
            return ckpt_errf(io->err, "reading %zu bytes at offset %lld (O_DIRECT): %s", len,
                             (long long)o, strerror(errno));
        }
        memcpy(dst + (o - at), r->bounce, len);
        o += (off_t)len;
    }
    if ((a > at && pread_all(r->fd, dst, (size_t)(a - at), at) != 0) ||
        (at + (off_t)n > b && pread_all(r->fd, dst + (b - at), (size_t)(at + (off_t)n - b), b) != 0)) {
        return ckpt_errf(io->err, "reading %zu bytes at offset %lld: %s", n, (long long)at,
                         strerror(errno));
    }
    return 0;
}

static int count_run(void *ctx, size_t from, size_t n, off_t at) {
    (void)from;
    (void)at;
    run_io *io = ctx;
    io->runs++;
    io->bytes += n;
    return 0;
}

int ckpt_direct_open_read(ckpt_direct *r, const char *path) {
    memset(r, 0, sizeof *r);
    r->fd = r->fd_direct = -1;
    r->min_run = ckpt_direct_min();
    void *bounce = NULL;
    if (posix_memalign(&bounce, DIRECT_ALIGN, BOUNCE_BYTES) != 0) {
        return -1;
    }
    r->bounce = bounce;
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    r->fd_direct = open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);
    if (r->fd < 0 || r->fd_direct < 0) {
        ckpt_direct_close_read(r);
        return -1;
    }
    return 0;
}

void ckpt_direct_close_read(ckpt_direct *r) {
    if (r->fd >= 0) {
        close(r->fd);
    }
    if (r->fd_direct >= 0) {
        close(r->fd_direct);
    }
    free(r->bounce);
    memset(r, 0, sizeof *r);
    r->fd = r->fd_direct = -1;
}

int ckpt_direct_locate(ckpt_direct *r, hid_t ds, const ckpt_piece *sel, ckpt_piece *view,
                       haddr_t *addr) {
    if (!r || r->fd_direct < 0 || sel->elems <= 0) {
        return 0;
    }
    *view = *sel;
    *addr = H5Dget_offset(ds);
    if (*addr == HADDR_UNDEF) {
        /* a column-block chunk that holds the whole selection */
        const int last = sel->ndims - 1;
        hsize_t shape[ATOM_CKPT_MAX_DIMS] = {0}, chunk = 0;
        hid_t plist = H5Dget_create_plist(ds);
        int got = plist < 0 ? -1 : H5Pget_chunk(plist, sel->ndims, shape);
        if (plist >= 0) {
            H5Pclose(plist);
        }
        hsize_t w = shape[last];
        hsize_t hi = sel->start[last] + (sel->count[last] - 1) * sel->stride[last] +
                     sel->block[last] - 1;
        for (int d = 0; d < last && got == sel->ndims; d++) {
            got = shape[d] == sel->dims[d] ? got : -1; /* only column-block chunks */
        }
        if (got != sel->ndims || w == 0 || sel->start[last] / w != hi / w) {
            return 0;
        }
        ckpt_piece_in_chunk(sel, w, view, &chunk);
        hsize_t origin[ATOM_CKPT_MAX_DIMS] = {0}, bytes = 0;
        origin[last] = chunk * w;
        unsigned filters = 0;
        if (H5Dget_chunk_info_by_coord(ds, origin, &filters, addr, &bytes) < 0 ||
            *addr == HADDR_UNDEF || filters != 0) {
            return 0;
        }
    }
    /* worth it only when the runs are long: short ones stay with HDF5's reads */
    run_io io = {r, NULL, NULL, 0, 0};
    each_run(view, *addr, count_run, &io);
    return io.runs > 0 && io.bytes / io.runs >= r->min_run;
}

int ckpt_direct_read(ckpt_direct *r, haddr_t addr, const ckpt_piece *view, float *dst,
                     atom_ckpt_err *err) {
    run_io io = {r, (char *)dst, err, 0, 0};
    return each_run(view, addr, read_one, &io);
}

int ckpt_direct_close(ckpt_direct *w, const char *path, atom_ckpt_err *err) {
    int rc = 0;
    /* The commit fsyncs the file on rank 0 only; each rank makes its own writes durable. */
    if (w->fd >= 0 && fdatasync(w->fd) != 0) {
        rc = ckpt_errf(err, "fdatasync %s: %s", path, strerror(errno));
    }
    ckpt_direct_close_read(w); /* the descriptors and the bounce buffer, as after a load */
    return rc;
}
