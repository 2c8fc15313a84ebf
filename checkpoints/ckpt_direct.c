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
    w->fd = open(path, O_WRONLY | O_CLOEXEC);
    if (w->fd < 0) {
        return ckpt_errf(err, "cannot open %s to write its datasets: %s", path, strerror(errno));
    }
    void *bounce = NULL;
    if (posix_memalign(&bounce, DIRECT_ALIGN, BOUNCE_BYTES) == 0) {
        w->bounce = bounce;
        w->fd_direct = open(path, O_WRONLY | O_CLOEXEC | O_DIRECT); /* -1: page cache only */
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

int ckpt_direct_write(ckpt_direct *w, haddr_t addr, const ckpt_piece *p, const float *data,
                      atom_ckpt_err *err) {
    const int nd = p->ndims, last = nd - 1;
    hsize_t elem_stride[ATOM_CKPT_MAX_DIMS]; /* elements between neighbours along each dim */
    elem_stride[last] = 1;
    for (int d = last - 1; d >= 0; d--) {
        elem_stride[d] = elem_stride[d + 1] * p->dims[d + 1];
    }
    /* Odometer over the selected indices of every dim but the last; along the last, `count`
     * blocks of `block` elements. Runs that touch are merged before they are written. */
    hsize_t idx[ATOM_CKPT_MAX_DIMS] = {0};
    const char *src = (const char *)data;
    off_t run_at = -1;
    size_t run_bytes = 0;
    const char *run_src = src;
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
                if (run_at >= 0 && write_run(w, run_src, run_bytes, run_at, err) != 0) {
                    return -1;
                }
                run_at = at;
                run_bytes = bytes;
                run_src = src;
            }
            src += bytes;
        }
        int d = last - 1;
        while (d >= 0 && ++idx[d] == p->count[d] * p->block[d]) {
            idx[d--] = 0;
        }
        if (d < 0) {
            break;
        }
    }
    return run_at >= 0 ? write_run(w, run_src, run_bytes, run_at, err) : 0;
}

int ckpt_direct_close(ckpt_direct *w, const char *path, atom_ckpt_err *err) {
    int rc = 0;
    if (w->fd >= 0) {
        /* The commit fsyncs the file on rank 0 only; each rank makes its own writes durable. */
        if (fdatasync(w->fd) != 0) {
            rc = ckpt_errf(err, "fdatasync %s: %s", path, strerror(errno));
        }
        close(w->fd);
    }
    if (w->fd_direct >= 0) {
        close(w->fd_direct);
    }
    free(w->bounce);
    memset(w, 0, sizeof *w);
    w->fd = w->fd_direct = -1;
    return rc;
}
