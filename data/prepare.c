/* data/prepare.c: atom-data prepare, decode and encode (see prepare.h and atom-data --help).
 *
 * prepare lists the input files, assigns each to train or val (--val-files), cuts every file
 * into jobs (encode_jobs.h) and encodes them in batches on all threads, writing each batch's
 * tokens in order: the output does not depend on the thread count. With --val-fraction the
 * whole stream goes to train.bin first, and its last tokens are then moved to val.bin. Outputs
 * are written under temporary names and renamed once complete. */
#include "data/prepare.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "data/encode_jobs.h"

typedef struct input_file {
    char *path;
    uint64_t bytes;
    int val;
} input_file;

typedef struct file_list {
    input_file *items;
    size_t n, cap;
} file_list;

/* ---- listing the inputs ---- */

static int list_add(file_list *l, const char *path, uint64_t bytes, atom_err *err)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        input_file *items = realloc(l->items, cap * sizeof *items);
        if (!items)
            return atom_errf(err, "out of memory for %zu files", cap);
        l->items = items;
        l->cap = cap;
    }
    if (!(l->items[l->n].path = strdup(path)))
        return atom_errf(err, "out of memory");
    l->items[l->n].bytes = bytes;
    l->items[l->n++].val = 0;
    return 0;
}

static void list_free(file_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i].path);
    free(l->items);
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name); /* bytes, not the locale: the same everywhere */
}

static int not_hidden(const struct dirent *d)
{
    return d->d_name[0] != '.';
}

/* Adds path (a file, or a folder's files recursively in name order); skips out_real, the
 * output folder, when it lies inside an input folder. */
static int add_input(file_list *l, const char *path, const char *out_real, int depth,
                     atom_err *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return atom_errf(err, "%s: %s", path, strerror(errno));
    if (S_ISREG(st.st_mode)) /* an empty file is no document */
        return st.st_size ? list_add(l, path, (uint64_t)st.st_size, err) : 0;
    if (!S_ISDIR(st.st_mode))
        return atom_errf(err, "%s is neither a file nor a folder", path);
    if (depth > 64)
        return atom_errf(err, "%s: folders nested more than 64 deep (a link loop?)", path);
    char real[PATH_MAX];
    if (realpath(path, real) && !strcmp(real, out_real))
        return 0;
    struct dirent **names;
    int n = scandir(path, &names, not_hidden, by_name);
    if (n < 0)
        return atom_errf(err, "%s: %s", path, strerror(errno));
    int rc = 0;
    for (int i = 0; i < n; i++) {
        char child[PATH_MAX];
        size_t len = strlen(path);
        const char *sep = len && path[len - 1] == '/' ? "" : "/";
        if (!rc && snprintf(child, sizeof child, "%s%s%s", path, sep, names[i]->d_name) >=
                       (int)sizeof child)
            rc = atom_errf(err, "%s/%s: name too long", path, names[i]->d_name);
        else if (!rc)
            rc = add_input(l, child, out_real, depth + 1, err);
        free(names[i]);
    }
    free(names);
    return rc;
}

/* ---- the progress bar (a tty) or nothing until the final line ---- */

typedef struct progress {
    int tty;
    const char *what;
    uint64_t total, done;
    double start, last;
} progress;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void progress_show(progress *p, int force)
{
    double t = now();
    if (!p->tty || (!force && t - p->last < 0.1))
        return;
    p->last = t;
    double frac = p->total ? (double)p->done / (double)p->total : 1.0;
    char bar[31];
    int full = (int)(frac * 30);
    for (int i = 0; i < 30; i++)
        bar[i] = i < full ? '#' : '.';
    bar[30] = 0;
    double secs = t - p->start;
    fprintf(stderr, "\r%s [%s] %3d%%  %.1f / %.1f MB  %.1f MB/s ", p->what, bar,
            (int)(frac * 100), p->done / 1e6, p->total / 1e6,
            secs > 0 ? p->done / 1e6 / secs : 0.0);
    fflush(stderr);
}

/* ---- writing tokens ---- */

typedef struct token_out {
    FILE *f;
    const char *path;
    int width; /* 2: uint16 little-endian; 1: bytes */
    uint64_t tokens;
} token_out;

static int put_tokens(token_out *o, const uint16_t *ids, size_t n, atom_err *err)
{
    unsigned char buf[1 << 14];
    size_t per = sizeof buf / (size_t)o->width;
    for (size_t at = 0; at < n; at += per) {
        size_t k = n - at < per ? n - at : per;
        for (size_t i = 0; i < k; i++) {
            uint16_t id = ids[at + i];
            if (o->width == 2) {
                buf[2 * i] = (unsigned char)(id & 0xff);
                buf[2 * i + 1] = (unsigned char)(id >> 8);
            } else {
                buf[i] = (unsigned char)id;
            }
        }
        if (fwrite(buf, (size_t)o->width, k, o->f) != k)
            return atom_errf(err, "%s: %s", o->path, strerror(errno));
    }
    o->tokens += n;
    return 0;
}

/* Encodes the files of one split into o, batch after batch. */
static int encode_files(encode_pool *pool, input_file **files, size_t n_files,
                        uint64_t job_bytes, token_out *o, progress *p, atom_err *err)
{
    encode_job *jobs = NULL;
    size_t n_jobs = 0, cap = 0;
    int rc = 0;
    for (size_t i = 0; i < n_files && !rc; i++) {
        const input_file *f = files[i];
        int fd = open(f->path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            rc = atom_errf(err, "%s: %s", f->path, strerror(errno));
            break;
        }
        /* mapped only to find where to cut: the pages near each MiB are all that is read */
        void *map = mmap(NULL, f->bytes, PROT_READ, MAP_PRIVATE, fd, 0);
        int e = errno;
        close(fd);
        if (map == MAP_FAILED) {
            rc = atom_errf(err, "%s: cannot map: %s", f->path, strerror(e));
            break;
        }
        rc = encode_jobs_cut(map, f->bytes, job_bytes, f->path, (int)i, &jobs, &n_jobs, &cap, err);
        munmap(map, f->bytes);
    }
    int eot = atom_tokenizer_eot(pool->tok);
    size_t batch = (size_t)pool->threads * 4;
    for (size_t first = 0; first < n_jobs && !rc; first += batch) {
        size_t k = n_jobs - first < batch ? n_jobs - first : batch;
        rc = encode_pool_run(pool, jobs + first, k, err);
        for (size_t j = first; j < first + k && !rc; j++) {
            rc = put_tokens(o, jobs[j].out.ids, jobs[j].out.n, err);
            if (!rc && jobs[j].doc_end && eot >= 0) {
                uint16_t id = (uint16_t)eot;
                rc = put_tokens(o, &id, 1, err);
            }
            p->done += jobs[j].len;
        }
        for (size_t j = first; j < first + k; j++)
            atom_tokens_free(&jobs[j].out);
        progress_show(p, 0);
    }
    for (size_t j = 0; j < n_jobs; j++)
        atom_tokens_free(&jobs[j].out);
    free(jobs);
    return rc;
}

/* The largest id of a token file (-1 when empty). */
static int scan_max_id(const char *path, int width, atom_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return atom_errf(err, "%s: %s", path, strerror(errno)), -2;
    unsigned char buf[1 << 16];
    size_t n;
    int max = -1;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        for (size_t i = 0; i + (size_t)width <= n; i += (size_t)width) {
            int id = width == 2 ? buf[i] | buf[i + 1] << 8 : buf[i];
            if (id > max)
                max = id;
        }
    fclose(f);
    return max;
}

/* ---- the sidecar ---- */

static int write_sidecar(const prepare_opts *o, const atom_tokenizer *tok, const char *bin,
                         const char *split, uint64_t tokens, int max_id, input_file **files,
                         size_t n_files, uint64_t first_token, atom_err *err)
{
    json_t *root = json_object(), *sources = json_array();
    uint64_t bytes = 0;
    for (size_t i = 0; i < n_files; i++) {
        json_array_append_new(sources, json_pack("{s:s, s:I}", "path", files[i]->path,
                                                 "bytes", (json_int_t)files[i]->bytes));
        bytes += files[i]->bytes;
    }
    const char *format = atom_tokenizer_vocab(tok) > 256 ? "uint16" : "bytes";
    json_object_set_new(root, "tokenizer", json_string(atom_tokenizer_name(tok)));
    json_object_set_new(root, "format", json_string(format));
    json_object_set_new(root, "vocab_size", json_integer(atom_tokenizer_vocab(tok)));
    json_object_set_new(root, "tokens", json_integer((json_int_t)tokens));
    json_object_set_new(root, "max_id", json_integer(max_id));
    json_object_set_new(root, "eot_id", json_integer(atom_tokenizer_eot(tok)));
    json_object_set_new(root, "split", json_string(split));
    if (o->val_files)
        json_object_set_new(root, "val_files", json_string(o->val_files));
    else
        json_object_set_new(root, "val_fraction", json_real(o->val_fraction));
    /* with a fraction both files come from one stream: where in it this one starts */
    json_object_set_new(root, "first_token", json_integer((json_int_t)first_token));
    json_object_set_new(root, "source_bytes", json_integer((json_int_t)bytes));
    json_object_set_new(root, "sources", sources);
    json_object_set_new(root, "unicode", json_string(atom_tokenizer_unicode_version()));
    char path[PATH_MAX + 8];
    if (snprintf(path, sizeof path, "%s.json", bin) >= (int)sizeof path) {
        json_decref(root);
        return atom_errf(err, "%s: name too long", bin);
    }
    char *text = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!text)
        return atom_errf(err, "out of memory for %s", path);
    size_t len = strlen(text);
    int rc = atom_write_file_atomic(path, text, len, err);
    free(text);
    return rc;
}

/* ---- prepare ---- */

static int make_dir(const char *dir, atom_err *err)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf)
        return atom_errf(err, "%s: name too long", dir);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return atom_errf(err, "cannot make folder %s: %s", buf, strerror(errno));
            *p = c;
            if (!c)
                break;
        }
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return atom_errf(err, "%s is not a folder", dir);
    return 0;
}

static int open_out(token_out *o, char *tmp, size_t cap, const char *dir, const char *name,
                    int width, atom_err *err)
{
    snprintf(tmp, cap, "%s/.%s.tmp", dir, name);
    *o = (token_out){.path = tmp, .width = width};
    if (!(o->f = fopen(tmp, "wb")))
        return atom_errf(err, "%s: %s", tmp, strerror(errno));
    return 0;
}

static int close_out(token_out *o, atom_err *err)
{
    int rc = 0;
    if (fflush(o->f) != 0 || fsync(fileno(o->f)) != 0)
        rc = atom_errf(err, "%s: %s", o->path, strerror(errno));
    if (fclose(o->f) != 0 && !rc)
        rc = atom_errf(err, "%s: %s", o->path, strerror(errno));
    o->f = NULL;
    return rc;
}

/* Moves the last `n` tokens of train's temporary file into val's. */
static int split_tail(const char *train_tmp, const char *val_tmp, uint64_t total, uint64_t n,
                      int width, atom_err *err)
{
    FILE *in = fopen(train_tmp, "rb"), *out = fopen(val_tmp, "wb");
    int rc = 0;
    if (!in || !out) {
        rc = atom_errf(err, "%s: %s", !in ? train_tmp : val_tmp, strerror(errno));
    } else if (fseeko(in, (off_t)((total - n) * (uint64_t)width), SEEK_SET) != 0) {
        rc = atom_errf(err, "%s: %s", train_tmp, strerror(errno));
    } else {
        unsigned char buf[1 << 16];
        size_t k;
        while ((k = fread(buf, 1, sizeof buf, in)) > 0)
            if (fwrite(buf, 1, k, out) != k) {
                rc = atom_errf(err, "%s: %s", val_tmp, strerror(errno));
                break;
            }
        if (!rc && (fflush(out) != 0 || fsync(fileno(out)) != 0))
            rc = atom_errf(err, "%s: %s", val_tmp, strerror(errno));
    }
    if (in)
        fclose(in);
    if (out && fclose(out) != 0 && !rc)
        rc = atom_errf(err, "%s: %s", val_tmp, strerror(errno));
    if (!rc && truncate(train_tmp, (off_t)((total - n) * (uint64_t)width)) != 0)
        rc = atom_errf(err, "%s: %s", train_tmp, strerror(errno));
    return rc;
}

static int finish(const prepare_opts *o, const atom_tokenizer *tok, const char *tmp,
                  const char *name, const char *split, uint64_t tokens, input_file **files,
                  size_t n_files, uint64_t first_token, int width, atom_err *err)
{
    char bin[PATH_MAX];
    snprintf(bin, sizeof bin, "%s/%s", o->out_dir, name);
    atom_err scan_err;
    int max_id = scan_max_id(tmp, width, &scan_err);
    if (max_id < -1)
        return atom_errf(err, "%s", scan_err.msg);
    if (rename(tmp, bin) != 0)
        return atom_errf(err, "cannot rename %s to %s: %s", tmp, bin, strerror(errno));
    if (write_sidecar(o, tok, bin, split, tokens, max_id, files, n_files, first_token, err))
        return -1;
    printf("%s: %llu tokens (%s, largest id %d) from %zu file%s\n", bin,
           (unsigned long long)tokens, atom_tokenizer_name(tok), max_id, n_files,
           n_files == 1 ? "" : "s");
    return 0;
}

int data_prepare(const prepare_opts *o, atom_err *err)
{
    atom_tokenizer *tok = NULL;
    file_list files = {0};
    encode_pool pool = {0};
    input_file **train = NULL, **val = NULL;
    size_t n_train = 0, n_val = 0;
    char train_tmp[PATH_MAX], val_tmp[PATH_MAX], out_real[PATH_MAX] = "";
    token_out out = {0};
    int rc = -1;
    if (make_dir(o->out_dir, err) || !realpath(o->out_dir, out_real))
        goto done;
    for (int i = 0; i < o->n_inputs; i++)
        if (add_input(&files, o->inputs[i], out_real, 0, err))
            goto done;
    if (files.n == 0) {
        atom_errf(err, "no input files in %s%s", o->inputs[0], o->n_inputs > 1 ? " ..." : "");
        goto done;
    }
    train = calloc(files.n, sizeof *train);
    val = calloc(files.n, sizeof *val);
    if (!train || !val) {
        atom_errf(err, "out of memory");
        goto done;
    }
    uint64_t total_bytes = 0;
    for (size_t i = 0; i < files.n; i++) {
        input_file *f = &files.items[i];
        const char *name = strrchr(f->path, '/') ? strrchr(f->path, '/') + 1 : f->path;
        f->val = o->val_files && (fnmatch(o->val_files, f->path, 0) == 0 ||
                                  fnmatch(o->val_files, name, 0) == 0);
        if (f->val)
            val[n_val++] = f;
        else
            train[n_train++] = f;
        total_bytes += f->bytes;
    }
    if (o->val_files && (n_val == 0 || n_train == 0)) {
        atom_errf(err, "--val-files %s matches %s of the %zu input files: both train and val "
                  "need at least one", o->val_files, n_val ? "all" : "none", files.n);
        goto done;
    }
    if (atom_tokenizer_open(o->tokenizer, &tok, err) ||
        encode_pool_open(&pool, tok, o->threads, err))
        goto done;
    int width = atom_tokenizer_vocab(tok) > 256 ? 2 : 1;
    progress p = {.tty = isatty(2), .what = "encoding", .total = total_bytes, .start = now()};
    if (open_out(&out, train_tmp, sizeof train_tmp, o->out_dir, "train.bin", width, err) ||
        encode_files(&pool, train, n_train, o->job_bytes, &out, &p, err) || close_out(&out, err))
        goto done;
    uint64_t train_tokens = out.tokens, val_tokens = 0;
    snprintf(val_tmp, sizeof val_tmp, "%s/.val.bin.tmp", o->out_dir);
    if (o->val_files) {
        if (open_out(&out, val_tmp, sizeof val_tmp, o->out_dir, "val.bin", width, err) ||
            encode_files(&pool, val, n_val, o->job_bytes, &out, &p, err) || close_out(&out, err))
            goto done;
        val_tokens = out.tokens;
    } else if (o->val_fraction > 0) {
        val_tokens = (uint64_t)(o->val_fraction * (double)train_tokens + 0.5);
        if (val_tokens == 0 || val_tokens >= train_tokens) {
            atom_errf(err, "--val-fraction %g of %llu tokens leaves %s empty", o->val_fraction,
                      (unsigned long long)train_tokens, val_tokens ? "train" : "val");
            goto done;
        }
        if (split_tail(train_tmp, val_tmp, train_tokens, val_tokens, width, err))
            goto done;
        train_tokens -= val_tokens;
    }
    if (p.tty) {
        progress_show(&p, 1);
        fputc('\n', stderr);
    }
    double secs = now() - p.start;
    if (finish(o, tok, train_tmp, "train.bin", "train", train_tokens, train, n_train, 0, width,
               err))
        goto done;
    char stale[PATH_MAX];
    if (o->val_files || o->val_fraction > 0) {
        int from_stream = !o->val_files;
        if (finish(o, tok, val_tmp, "val.bin", "val", val_tokens, from_stream ? train : val,
                   from_stream ? n_train : n_val, from_stream ? train_tokens : 0, width, err))
            goto done;
    } else { /* no validation file now: one from an earlier run would not match */
        snprintf(stale, sizeof stale, "%s/val.bin", o->out_dir);
        unlink(stale);
        snprintf(stale, sizeof stale, "%s/val.bin.json", o->out_dir);
        unlink(stale);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
                 (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
    fprintf(p.tty ? stderr : stdout,
            "encoded %.1f MB in %.2f s (%.1f MB/s, %d thread%s; %.2f s of CPU)\n",
            total_bytes / 1e6, secs, secs > 0 ? total_bytes / 1e6 / secs : 0.0, pool.threads,
            pool.threads == 1 ? "" : "s", cpu);
    rc = 0;
done:
    if (out.f) {
        fclose(out.f);
        unlink(out.path);
    }
    if (rc) {
        snprintf(train_tmp, sizeof train_tmp, "%s/.train.bin.tmp", o->out_dir);
        snprintf(val_tmp, sizeof val_tmp, "%s/.val.bin.tmp", o->out_dir);
        unlink(train_tmp);
        unlink(val_tmp);
    }
    encode_pool_close(&pool);
    atom_tokenizer_close(tok);
    free(train);
    free(val);
    list_free(&files);
    return rc;
}

/* ---- decode and encode ---- */

int data_decode(const char *path, const char *tokenizer, FILE *out, atom_err *err)
{
    atom_token_sidecar side;
    int found = atom_token_sidecar_read(path, &side, err);
    if (found < 0)
        return -1;
    if (!tokenizer)
        tokenizer = found == 0 ? side.tokenizer : "gpt2";
    atom_tokenizer *tok;
    if (atom_tokenizer_open(tokenizer, &tok, err))
        return -1;
    int width = atom_tokenizer_vocab(tok) > 256 ? 2 : 1;
    FILE *in = fopen(path, "rb");
    if (!in) {
        atom_tokenizer_close(tok);
        return atom_errf(err, "%s: %s", path, strerror(errno));
    }
    unsigned char buf[1 << 16];
    size_t n;
    uint64_t offset = 0;
    int rc = 0;
    while (!rc && (n = fread(buf, 1, sizeof buf, in)) > 0) {
        if (n % (size_t)width) { /* 65536 is even: only the file's end can be odd */
            rc = atom_errf(err, "%s: an odd number of bytes, not a file of uint16 ids", path);
            break;
        }
        for (size_t i = 0; i < n && !rc; i += (size_t)width) {
            unsigned id = width == 2 ? (unsigned)(buf[i] | buf[i + 1] << 8) : buf[i];
            size_t len;
            const unsigned char *bytes = atom_tokenizer_token(tok, id, &len);
            if (!bytes)
                rc = atom_errf(err, "%s: id %u at byte %llu is not in %s's vocabulary of %d",
                               path, id, (unsigned long long)(offset + i), tokenizer,
                               atom_tokenizer_vocab(tok));
            else if (fwrite(bytes, 1, len, out) != len)
                rc = atom_errf(err, "writing the text: %s", strerror(errno));
        }
        offset += n;
    }
    if (!rc && ferror(in))
        rc = atom_errf(err, "%s: %s", path, strerror(errno));
    fclose(in);
    atom_tokenizer_close(tok);
    return rc;
}

int data_encode(const char *tokenizer, int threads, uint64_t job_bytes, int binary, FILE *in,
                FILE *out, atom_err *err)
{
    size_t len = 0, cap = 1 << 20;
    unsigned char *text = malloc(cap);
    for (size_t k; text && (k = fread(text + len, 1, cap - len, in)) > 0;) {
        len += k;
        if (len == cap) {
            unsigned char *t = realloc(text, cap *= 2);
            if (!t)
                free(text);
            text = t;
        }
    }
    if (!text)
        return atom_errf(err, "out of memory for the input");
    atom_tokenizer *tok = NULL;
    encode_pool pool = {0};
    encode_job *jobs = NULL;
    size_t n_jobs = 0, jobs_cap = 0;
    int rc = atom_tokenizer_open(tokenizer, &tok, err) ||
             encode_pool_open(&pool, tok, threads, err) ||
             encode_jobs_cut(text, len, job_bytes, NULL, 0, &jobs, &n_jobs, &jobs_cap, err) ||
             encode_pool_run(&pool, jobs, n_jobs, err) ? -1 : 0;
    int width = tok && atom_tokenizer_vocab(tok) > 256 ? 2 : 1;
    for (size_t j = 0; j < n_jobs && !rc; j++)
        for (size_t i = 0; i < jobs[j].out.n; i++) {
            uint16_t id = jobs[j].out.ids[i];
            if (!binary)
                fprintf(out, "%u\n", id);
            else if (width == 2)
                fputc(id & 0xff, out), fputc(id >> 8, out);
            else
                fputc(id, out);
        }
    for (size_t j = 0; j < n_jobs; j++)
        atom_tokens_free(&jobs[j].out);
    free(jobs);
    encode_pool_close(&pool);
    atom_tokenizer_close(tok);
    free(text);
    return rc;
}
