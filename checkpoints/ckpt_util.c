/* checkpoints/ckpt_util.c: errors, CRC32C, file names and small helpers of the checkpoint
 * module. */
#include "checkpoints/ckpt_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *const ckpt_kind_names[CKPT_KINDS] = {"param", "adam_m", "adam_v"};

int ckpt_errf(atom_ckpt_err *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* H5Ewalk2 visits the most specific error first when walking upward: that one says why. A
 * failed system call's description (HDF5's file drivers) runs "file write failed: time = ...,
 * filename = ..., errno = 28, error message = 'No space left on device', buf = ..." and would
 * not fit: it is cut to what failed and the system's reason ("file write failed: No space left
 * on device"); the caller's message names the file. */
static herr_t innermost_error(unsigned n, const H5E_error2_t *e, void *data) {
    if (n != 0 || !e->desc) {
        return 0;
    }
    const char *reason = strstr(e->desc, "error message = '");
    const char *colon = strchr(e->desc, ':');
    if (reason && colon && colon < reason) {
        reason += strlen("error message = '");
        const char *end = strchr(reason, '\'');
        snprintf((char *)data, 256, "%.*s: %.*s", (int)(colon - e->desc), e->desc,
                 (int)(end ? end - reason : 128), reason);
    } else {
        snprintf((char *)data, 256, "%s", e->desc);
    }
    return 0;
}

int ckpt_h5_errf(atom_ckpt_err *err, const char *fmt, ...) {
    char why[256] = "";
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost_error, why);
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        if (why[0]) {
            size_t used = strlen(err->msg);
            snprintf(err->msg + used, sizeof err->msg - used, " (HDF5: %s)", why);
        }
    }
    return -1;
}

void ckpt_h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

void ckpt_wait(MPI_Request *req) {
    long pause_ns = 20000;
    for (;;) {
        int done = 0;
        MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (done) {
            return;
        }
        struct timespec pause = {0, pause_ns};
        nanosleep(&pause, NULL);
        if (pause_ns < 1000000) {
            pause_ns *= 2;
        }
    }
}

void ckpt_meet(MPI_Comm comm) {
    MPI_Request req;
    MPI_Ibarrier(comm, &req);
    ckpt_wait(&req);
}

int ckpt_agree(MPI_Comm comm, int rc, atom_ckpt_err *err) {
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    int mine = rc != 0 ? rank : size, first;
    MPI_Request req;
    MPI_Iallreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm, &req);
    ckpt_wait(&req);
    if (first == size) {
        return 0;
    }
    atom_ckpt_err local;
    if (!err) {
        err = &local;
    }
    MPI_Ibcast(err->msg, (int)sizeof err->msg, MPI_CHAR, first, comm, &req);
    ckpt_wait(&req);
    return -1;
}

void ckpt_fault_point(MPI_Comm comm, const char *point) {
    const char *at = getenv("ATOM_CKPT_KILL_AT");
    if (!at || !*at) {
        return;
    }
    char *colon;
    long who = strtol(at, &colon, 10);
    int rank;
    MPI_Comm_rank(comm, &rank);
    if (*colon == ':' && who == rank && strcmp(colon + 1, point) == 0) {
        raise(SIGKILL);
    }
}

const char *ckpt_env_choice(const char *name, const char *const *allowed, const char *fallback) {
    const char *v = getenv(name);
    if (!v || !*v) {
        return NULL;
    }
    if (allowed) {
        for (int i = 0; allowed[i]; i++) {
            if (strcmp(v, allowed[i]) == 0) {
                return v;
            }
        }
    } else {
        char *end;
        long long n = strtoll(v, &end, 10);
        if (*end == '\0' && n >= 0) {
            return v;
        }
    }
    /* said once per variable: these are read at every save */
    static const char *warned[8];
    static pthread_mutex_t warned_lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&warned_lock);
    int i = 0;
    while (i < 8 && warned[i] && warned[i] != name) {
        i++;
    }
    if (i < 8 && !warned[i]) {
        warned[i] = name;
        fprintf(stderr, "atom checkpoints: %s=\"%s\" is not %s; using %s\n", name, v,
                allowed ? "a known value" : "an integer >= 0", fallback);
    }
    pthread_mutex_unlock(&warned_lock);
    return NULL;
}

H5FD_mpio_xfer_t ckpt_xfer_mode(void) {
    static const char *const modes[] = {"collective", "independent", NULL};
    const char *io = ckpt_env_choice("ATOM_CKPT_IO", modes, "independent");
    return io && strcmp(io, "collective") == 0 ? H5FD_MPIO_COLLECTIVE : H5FD_MPIO_INDEPENDENT;
}

MPI_Info ckpt_mpi_info(void) {
    MPI_Info info;
    MPI_Info_create(&info);
    const char *sieve = getenv("ATOM_CKPT_SIEVE");
    if (!(sieve && strcmp(sieve, "1") == 0)) {
        MPI_Info_set(info, "romio_ds_write", "disable");
        MPI_Info_set(info, "romio_ds_read", "disable");
    }
    return info;
}

/* ---- CRC32C (Castagnoli polynomial 0x1EDC6F41, reflected 0x82F63B78) ---- */

static uint32_t crc_table[256];
static int crc_table_ready;

static void crc_table_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        }
        crc_table[i] = c;
    }
    crc_table_ready = 1;
}

static uint32_t crc32c_table(uint32_t c, const unsigned char *p, size_t n) {
    if (!crc_table_ready) {
        crc_table_init(); /* idempotent: a race writes the same values */
    }
    while (n--) {
        c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    }
    return c;
}

#if defined(__x86_64__)
/* SSE4.2's crc32 instruction computes exactly CRC32C. One chain of them is bound by the
 * instruction's latency (3 cycles per 8 bytes: 6 GB/s measured here), so blocks of 3 x
 * CRC_STRIDE bytes run as three independent chains (one per third) that are then combined:
 * the CRC register is linear, so crc(A B) = shift(crc(A), |B|) ^ crc_from_zero(B), where
 * shift(r, n) (the register r carried through n zero bytes) is a fixed linear map, applied with
 * four 256-entry tables. */
#define CRC_STRIDE 8192
static uint32_t crc_shift_table[4][256];
static pthread_once_t crc_shift_once = PTHREAD_ONCE_INIT;

__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42_chain(uint32_t c,
                                                                     const unsigned char *p,
                                                                     size_t n) {
    uint64_t c64 = c;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c64 = __builtin_ia32_crc32di(c64, v);
        p += 8;
        n -= 8;
    }
    c = (uint32_t)c64;
    while (n--) {
        c = __builtin_ia32_crc32qi(c, *p++);
    }
    return c;
}

__attribute__((target("sse4.2"))) static void crc_shift_init(void) {
    static const unsigned char zeros[CRC_STRIDE];
    uint32_t basis[32]; /* shift of each single-bit register */
    for (int b = 0; b < 32; b++) {
        basis[b] = crc32c_sse42_chain(1u << b, zeros, CRC_STRIDE);
    }
    for (int k = 0; k < 4; k++) {
        for (int v = 0; v < 256; v++) {
            uint32_t r = 0;
            for (int j = 0; j < 8; j++) {
                r ^= (v >> j & 1) ? basis[8 * k + j] : 0;
            }
            crc_shift_table[k][v] = r;
        }
    }
}

static uint32_t crc_shift(uint32_t c) {
    return crc_shift_table[0][c & 0xFF] ^ crc_shift_table[1][(c >> 8) & 0xFF] ^
           crc_shift_table[2][(c >> 16) & 0xFF] ^ crc_shift_table[3][c >> 24];
}

__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42(uint32_t c, const unsigned char *p,
                                                               size_t n) {
    if (n >= 3 * CRC_STRIDE) {
        pthread_once(&crc_shift_once, crc_shift_init);
    }
    while (n >= 3 * CRC_STRIDE) {
        uint64_t c0 = c, c1 = 0, c2 = 0;
        for (size_t i = 0; i < CRC_STRIDE; i += 8) {
            uint64_t v0, v1, v2;
            memcpy(&v0, p + i, 8);
            memcpy(&v1, p + CRC_STRIDE + i, 8);
            memcpy(&v2, p + 2 * CRC_STRIDE + i, 8);
            c0 = __builtin_ia32_crc32di(c0, v0);
            c1 = __builtin_ia32_crc32di(c1, v1);
            c2 = __builtin_ia32_crc32di(c2, v2);
        }
        c = crc_shift(crc_shift((uint32_t)c0) ^ (uint32_t)c1) ^ (uint32_t)c2;
        p += 3 * CRC_STRIDE;
        n -= 3 * CRC_STRIDE;
    }
    return crc32c_sse42_chain(c, p, n);
}
#endif

uint32_t atom_ckpt_crc32c(uint32_t crc, const void *data, size_t len) {
    uint32_t c = ~crc;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("sse4.2")) {
        return ~crc32c_sse42(c, data, len);
    }
#endif
    return ~crc32c_table(c, data, len);
}

uint32_t atom_ckpt_crc32c_portable(uint32_t crc, const void *data, size_t len) {
    return ~crc32c_table(~crc, data, len);
}

/* ---- names ---- */

void ckpt_file_name(char *buf, size_t size, const char *dir, int64_t step, bool tmp) {
    snprintf(buf, size, "%s/ckpt-%010lld.h5%s", dir, (long long)step, tmp ? ".tmp" : "");
}

bool ckpt_parse_name(const char *base, int64_t *step, bool *tmp) {
    if (strncmp(base, "ckpt-", 5) != 0) {
        return false;
    }
    const char *p = base + 5;
    if (*p < '0' || *p > '9') {
        return false;
    }
    char *end;
    long long v = strtoll(p, &end, 10);
    if (strcmp(end, ".h5") == 0) {
        *tmp = false;
    } else if (strcmp(end, ".h5.tmp") == 0) {
        *tmp = true;
    } else {
        return false;
    }
    *step = v;
    return true;
}

/* ---- the checkpoint folder ----
 * Checkpoints of one job must be its owner's alone: a folder another user created first (a
 * shared scratch space, a name under /tmp) lets that user plant a symlink where a save writes
 * (root's training step overwrote a root-only file through one) or their own weights where a
 * load looks. The module carries its own check (it uses nothing of common/, whose
 * private_path.c does the same for atom's own folders). */

/* "alice (uid 1000)", or "uid 1000" when the account is unknown. */
static void describe_uid(uid_t uid, char *buf, size_t len) {
    struct passwd pw, *found = NULL;
    char strings[1024];
    if (getpwuid_r(uid, &pw, strings, sizeof strings, &found) == 0 && found) {
        snprintf(buf, len, "%s (uid %u)", found->pw_name, (unsigned)uid);
    } else {
        snprintf(buf, len, "uid %u", (unsigned)uid);
    }
}

int ckpt_dir_check(const char *dir, atom_ckpt_err *err) {
    struct stat link, st;
    if (lstat(dir, &link) != 0) {
        return errno == ENOENT ? 1
                               : ckpt_errf(err, "checkpoint folder %s: %s", dir, strerror(errno));
    }
    char owner[300], me[300];
    describe_uid(geteuid(), me, sizeof me);
    /* a symlink the writer made itself (a folder on scratch) is the writer's choice */
    if (S_ISLNK(link.st_mode) && link.st_uid != geteuid()) {
        describe_uid(link.st_uid, owner, sizeof owner);
        return ckpt_errf(err, "checkpoint folder %s is a symbolic link owned by %s, not by you "
                         "(%s): checkpoints are kept only in a folder of your own; remove the "
                         "link or choose another checkpoint.dir", dir, owner, me);
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        int e = errno;
        if (fd >= 0) {
            close(fd);
        }
        return ckpt_errf(err, "checkpoint folder %s: %s", dir,
                         e == ENOTDIR ? "it exists and is not a folder" : strerror(e));
    }
    close(fd);
    describe_uid(st.st_uid, owner, sizeof owner);
    if (st.st_uid != geteuid()) {
        return ckpt_errf(err, "checkpoint folder %s belongs to %s, not to you (%s): its owner "
                         "could replace what is saved or loaded there; choose a folder of your "
                         "own for checkpoint.dir (or have this one removed)", dir, owner, me);
    }
    if (st.st_mode & 022) {
        return ckpt_errf(err, "checkpoint folder %s is writable by %s (mode %04o): they could "
                         "replace what is saved or loaded there; `chmod go-w %s`, or choose "
                         "another checkpoint.dir", dir,
                         (st.st_mode & 002) ? "every user" : "its group",
                         (unsigned)(st.st_mode & 07777), dir);
    }
    return 0;
}

int ckpt_dir_make(const char *dir, atom_ckpt_err *err) {
    if (mkdir(dir, CKPT_DIR_MODE) != 0 && errno != EEXIST) {
        return ckpt_errf(err, "cannot create checkpoint folder %s: %s", dir, strerror(errno));
    }
    return ckpt_dir_check(dir, err) == 0 ? 0 : -1;
}

int atom_ckpt_prepare_dir(const char *dir, atom_ckpt_err *err) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf) {
        return ckpt_errf(err, "checkpoint folder %s: the path is too long", dir);
    }
    /* the folders above it as mkdir -p makes them; they are not checked (a project's shared
     * space above a folder of one's own is fine) */
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') {
            continue;
        }
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
            return ckpt_errf(err, "cannot create %s (above checkpoint folder %s): %s", buf, dir,
                             strerror(errno));
        }
        *p = '/';
    }
    return ckpt_dir_make(dir, err);
}

/* ---- tensors and metadata ---- */

int64_t atom_ckpt_shard_elems(const atom_ckpt_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndims; d++) {
        n *= t->sel[d].count * t->sel[d].block;
    }
    return n;
}

void atom_ckpt_select_all(atom_ckpt_tensor *t) {
    for (int d = 0; d < t->ndims; d++) {
        t->sel[d] = (atom_ckpt_dimsel){0, 1, 1, t->dims[d]};
    }
}

int ckpt_check_tensor(const atom_ckpt_tensor *t, atom_ckpt_err *err) {
    const char *name = t->name ? t->name : "(null)";
    if (!t->name || !t->name[0] || strchr(t->name, '/')) {
        return ckpt_errf(err, "tensor name '%s' is empty or contains '/'", name);
    }
    if (t->ndims < 1 || t->ndims > ATOM_CKPT_MAX_DIMS) {
        return ckpt_errf(err, "tensor %s: %d dims (1..%d allowed)", name, t->ndims,
                         ATOM_CKPT_MAX_DIMS);
    }
    for (int d = 0; d < t->ndims; d++) {
        const atom_ckpt_dimsel *s = &t->sel[d];
        if (t->dims[d] < 1 || s->start < 0 || s->count < 1 || s->block < 1 ||
            (s->count > 1 && s->stride < s->block) ||
            s->start + (s->count - 1) * (s->count > 1 ? s->stride : 0) + s->block > t->dims[d]) {
            return ckpt_errf(err,
                             "tensor %s: dim %d selection (start %lld, stride %lld, count %lld, "
                             "block %lld) does not fit its size %lld",
                             name, d, (long long)s->start, (long long)s->stride,
                             (long long)s->count, (long long)s->block, (long long)t->dims[d]);
        }
    }
    return 0;
}

void atom_ckpt_meta_free(atom_ckpt_meta *meta) {
    if (meta) {
        free(meta->spec_json);
        meta->spec_json = NULL;
    }
}

void ckpt_meta_defaults(atom_ckpt_meta *meta, atom_ckpt_group group) {
    int size;
    MPI_Comm_size(group.comm, &size);
    if (meta->dp <= 0) {
        meta->dp = group.replicas > 0 ? group.replicas : 1;
    }
    if (meta->tp <= 0) {
        meta->tp = size / meta->dp > 0 ? size / meta->dp : 1;
    }
}

hid_t ckpt_mem_space(int nd, const hsize_t *count, const hsize_t *block) {
    hsize_t extent[ATOM_CKPT_MAX_DIMS];
    for (int d = 0; d < nd; d++) {
        extent[d] = count[d] * (block ? block[d] : 1);
    }
    return H5Screate_simple(nd, extent, NULL);
}

int ckpt_each_chunk(hid_t ds, void (*fn)(haddr_t at, hsize_t bytes, const hsize_t *origin,
                                         void *arg),
                    void *arg) {
    hsize_t chunks = 0;
    hid_t all = H5Dget_space(ds); /* HDF5 1.10 takes no H5S_ALL here */
    int visited = 0;
    if (all >= 0 && H5Dget_num_chunks(ds, all, &chunks) >= 0) {
        for (hsize_t c = 0; c < chunks; c++) {
            hsize_t origin[ATOM_CKPT_MAX_DIMS] = {0}, bytes = 0;
            unsigned filters = 0;
            haddr_t at = HADDR_UNDEF;
            if (H5Dget_chunk_info(ds, all, c, origin, &filters, &at, &bytes) >= 0 &&
                at != HADDR_UNDEF) {
                fn(at, bytes, origin, arg);
                visited++;
            }
        }
    }
    if (all >= 0) {
        H5Sclose(all);
    }
    return visited;
}
