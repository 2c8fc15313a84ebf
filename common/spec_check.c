/* common/spec_check.c: the checks that span keys (gpus = tensor x data, what tensor parallelism
 * must divide, batch arithmetic, the learning-rate schedule, checkpoints) and, apart from them,
 * the file-system check of the data file. Each problem names the key a researcher should change,
 * at its position when the spec came from a file. */
#include "common/spec_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct check_ctx {
    const char *file;
    const spec_pos *pos;
    atom_diags *diags;
    int errors;
} check_ctx;

/* Reports at the first of `keys` (a NULL-terminated list of dotted keys, most likely culprit
 * first) that the file set; with no position known, at the first key, line 0. */
static void fail(check_ctx *c, const char *const *keys, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(check_ctx *c, const char *const *keys, const char *fmt, ...)
{
    const char *key = keys[0];
    int line = 0, column = 0;
    for (int i = 0; c->pos && keys[i]; i++) {
        int idx = atom_spec_key_find_dotted(keys[i]);
        if (idx >= 0 && c->pos->line[idx] > 0) {
            key = keys[i];
            line = c->pos->line[idx];
            column = c->pos->column[idx];
            break;
        }
    }
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    atom_diags_add(c->diags, c->file, line, column, key, "%s", msg);
    c->errors++;
}

#define KEYS(...) ((const char *const[]){__VA_ARGS__, NULL})

static bool valid_name(const char *s)
{
    size_t len = strnlen(s, ATOM_NAME_MAX);
    return len > 0 && len < ATOM_NAME_MAX &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == len;
}

/* Each key within its own range: specs built in code or read from JSON did not pass the YAML
 * parser, and the cross-field checks below divide by these numbers. Returns the errors found. */
static int check_ranges(check_ctx *c, const atom_spec *spec)
{
    int before = c->errors;
    for (int i = 0; i < atom_spec_nkeys; i++) {
        const spec_key *k = &atom_spec_keys[i];
        const char *field = (const char *)spec + k->offset;
        const char *const key[] = {k->dotted, NULL};
        int64_t v = 0;
        switch (k->kind) {
        case SPEC_INT: v = *(const int *)(const void *)field; break;
        case SPEC_I64:
        case SPEC_DURATION: v = *(const int64_t *)(const void *)field; break;
        case SPEC_U64:
            if (*(const uint64_t *)(const void *)field > (uint64_t)k->imax)
                fail(c, key, "must be at most %lld", (long long)k->imax);
            continue;
        case SPEC_F64: {
            double d = *(const double *)(const void *)field;
            if (!(d >= k->fmin && d <= k->fmax) || (k->positive && d <= k->fmin))
                fail(c, key, "%g is out of range: must be %s %g and at most %g", d,
                     k->positive ? "more than" : "at least", k->fmin, k->fmax);
            continue;
        }
        case SPEC_NAME:
            if (!valid_name(field))
                fail(c, key, "is not a valid name: use 1 to %d of A-Z a-z 0-9 . _ -",
                     ATOM_NAME_MAX - 1);
            continue;
        case SPEC_DEVICE:
        case SPEC_FORMAT:
        case SPEC_SCHEDULE:
        case SPEC_COOLDOWN:
        case SPEC_INIT_LOAD:
        case SPEC_PRECISION:
            if (!atom_spec_enum_name(k->kind, *(const int *)(const void *)field))
                fail(c, key, "has an unknown value (%d)", *(const int *)(const void *)field);
            continue;
        default: continue;
        }
        if (v < k->imin || v > k->imax)
            fail(c, key, "%lld is out of range: must be between %lld and %lld", (long long)v,
                 (long long)k->imin, (long long)k->imax);
    }
    return c->errors - before;
}

static void check_layout(check_ctx *c, const atom_spec *s)
{
    int tp = s->parallelism.tensor, dp = s->parallelism.data;
    int64_t world = (int64_t)tp * dp;
    if (s->resources.gpus != world)
        fail(c, KEYS("resources.gpus", "parallelism.data", "parallelism.tensor"),
             "resources.gpus is %d but parallelism.tensor x parallelism.data is %d x %d = %lld; "
             "every GPU runs one rank, so they must be equal", s->resources.gpus, tp, dp,
             (long long)world);
    int gpn = s->resources.gpus_per_node;
    if (gpn > 0 && tp > gpn)
        fail(c, KEYS("parallelism.tensor", "resources.gpus_per_node"),
             "parallelism.tensor (%d) is more than resources.gpus_per_node (%d): a tensor-parallel "
             "group must fit in one node", tp, gpn);
    else if (gpn > 0 && gpn % tp != 0)
        fail(c, KEYS("parallelism.tensor", "resources.gpus_per_node"),
             "resources.gpus_per_node (%d) is not a multiple of parallelism.tensor (%d): "
             "tensor-parallel groups would straddle nodes", gpn, tp);
}

static void check_model(check_ctx *c, const atom_spec *s)
{
    const atom_model_cfg *m = &s->model;
    int tp = s->parallelism.tensor;
    if (m->channels % m->heads != 0)
        fail(c, KEYS("model.heads", "model.channels", "model.preset"),
             "model.channels (%d) is not a multiple of model.heads (%d): each head needs "
             "channels / heads dimensions", m->channels, m->heads);
    if (m->heads % tp != 0)
        fail(c, KEYS("parallelism.tensor", "model.heads", "model.preset"),
             "model.heads (%d) is not a multiple of parallelism.tensor (%d): tensor parallelism "
             "gives each rank whole heads", m->heads, tp);
    if ((4 * (int64_t)m->channels) % tp != 0)
        fail(c, KEYS("parallelism.tensor", "model.channels", "model.preset"),
             "4 x model.channels (%lld) is not a multiple of parallelism.tensor (%d): the MLP's "
             "hidden layer is split across the tensor-parallel ranks",
             4 * (long long)m->channels, tp);
    int vp = atom_padded_vocab(m->vocab);
    if (vp % tp != 0)
        fail(c, KEYS("parallelism.tensor", "model.vocab", "model.preset"),
             "the padded vocabulary (%d, model.vocab %d rounded up to a multiple of 128) is not "
             "a multiple of parallelism.tensor (%d): the embedding's rows are split across the "
             "tensor-parallel ranks", vp, m->vocab, tp);
    if (s->data.format == ATOM_DATA_UINT16 && m->vocab > 65536)
        fail(c, KEYS("model.vocab", "data.format", "model.preset"),
             "model.vocab (%d) does not fit data.format uint16 (token ids up to 65535)", m->vocab);
    if (s->data.format == ATOM_DATA_BYTES && m->vocab < 256)
        fail(c, KEYS("model.vocab", "data.format", "model.preset"),
             "model.vocab (%d) is less than 256, but data.format bytes makes every byte value a "
             "token", m->vocab);
}

static void check_schedule(check_ctx *c, const atom_spec *s);

static void check_training(check_ctx *c, const atom_spec *s)
{
    int64_t per_step = (int64_t)s->training.micro_batch * s->parallelism.data;
    if (s->training.global_batch < per_step)
        fail(c, KEYS("training.global_batch", "training.micro_batch", "parallelism.data"),
             "training.global_batch (%d) is less than training.micro_batch x parallelism.data "
             "(%d x %d = %lld): every replica needs at least one micro-batch per step",
             s->training.global_batch, s->training.micro_batch, s->parallelism.data,
             (long long)per_step);
    else if (s->training.global_batch % per_step != 0)
        fail(c, KEYS("training.global_batch", "training.micro_batch", "parallelism.data"),
             "training.global_batch (%d) is not a multiple of training.micro_batch x "
             "parallelism.data (%d x %d = %lld); the nearest that are: %lld and %lld",
             s->training.global_batch, s->training.micro_batch, s->parallelism.data,
             (long long)per_step, (long long)(s->training.global_batch / per_step * per_step),
             (long long)((s->training.global_batch / per_step + 1) * per_step));
    if (s->training.warmup > s->training.steps)
        fail(c, KEYS("training.warmup", "training.steps"),
             "training.warmup (%lld steps) is longer than training.steps (%lld)",
             (long long)s->training.warmup, (long long)s->training.steps);
    if (s->training.min_lr > s->training.lr)
        fail(c, KEYS("training.min_lr", "training.lr"),
             "training.min_lr (%g) is more than training.lr (%g): the schedule decays from lr "
             "to min_lr", s->training.min_lr, s->training.lr);
    check_schedule(c, s);
}

/* The schedule's horizon and wsd's cooldown: both must leave room for the warm-up. */
static void check_schedule(check_ctx *c, const atom_spec *s)
{
    int64_t horizon = s->training.lr_decay_steps ? s->training.lr_decay_steps : s->training.steps;
    if (s->training.lr_decay_steps && s->training.warmup > s->training.lr_decay_steps)
        fail(c, KEYS("training.lr_decay_steps", "training.warmup"),
             "training.lr_decay_steps (%lld) is shorter than training.warmup (%lld steps): the "
             "decay starts after the warm-up", (long long)s->training.lr_decay_steps,
             (long long)s->training.warmup);
    if (s->training.lr_schedule != ATOM_LR_WSD) {
        if (s->training.cooldown_steps)
            fail(c, KEYS("training.cooldown_steps", "training.lr_schedule"),
                 "training.cooldown_steps applies to lr_schedule wsd only (this spec's is %s)",
                 atom_spec_enum_name(SPEC_SCHEDULE, s->training.lr_schedule));
        return;
    }
    int64_t cooldown = s->training.cooldown_steps ? s->training.cooldown_steps : horizon / 5;
    if (s->training.warmup + cooldown > horizon)
        fail(c, KEYS("training.cooldown_steps", "training.warmup", "training.lr_decay_steps",
                     "training.steps"),
             "training.warmup (%lld) + the cooldown (%lld steps) is more than the schedule's "
             "%lld steps (training.lr_decay_steps, else training.steps): wsd warms up, holds lr, "
             "then cools down within them", (long long)s->training.warmup, (long long)cooldown,
             (long long)horizon);
}

/* init: one source of weights, and only what that source holds. */
static void check_init(check_ctx *c, const atom_spec *s)
{
    bool ckpt = s->init.checkpoint[0] != 0, st = s->init.safetensors[0] != 0;
    if (ckpt && st)
        fail(c, KEYS("init.safetensors", "init.checkpoint"),
             "init.checkpoint and init.safetensors are both set: give one source of weights");
    if (!ckpt && s->init.load == ATOM_INIT_WEIGHTS_OPTIMIZER)
        fail(c, KEYS("init.load", "init.safetensors"),
             "init.load weights+optimizer needs init.checkpoint (a safetensors file holds "
             "weights only)");
    /* the job's own checkpoints win over init: init from its own folder would never be read */
    size_t n = strlen(s->checkpoint.dir);
    while (n > 1 && s->checkpoint.dir[n - 1] == '/')
        n--;
    if (ckpt && n && strncmp(s->init.checkpoint, s->checkpoint.dir, n) == 0 &&
        (s->init.checkpoint[n] == '\0' || s->init.checkpoint[n] == '/'))
        fail(c, KEYS("init.checkpoint", "checkpoint.dir"),
             "init.checkpoint is inside this job's own checkpoint.dir (%s): a job resumes its own "
             "checkpoints and reads init only when that folder is empty; give the new run a "
             "checkpoint.dir of its own", s->checkpoint.dir);
    if (!ckpt && s->init.resume_step)
        fail(c, KEYS("init.resume_step", "init.safetensors"),
             "init.resume_step needs init.checkpoint (only a checkpoint records its step)");
}

static void check_checkpoint(check_ctx *c, const atom_spec *s)
{
    if (s->checkpoint.dir[0] && s->checkpoint.every < 1)
        fail(c, KEYS("checkpoint.every", "checkpoint.dir"),
             "checkpoint.every must be at least 1 step when checkpoint.dir is set (leave dir "
             "out for no checkpoints)");
    if (!s->data.path[0])
        fail(c, KEYS("data.path"), "is required: the token file to train on (data: {path: ...})");
}

int atom_spec_check_at(const atom_spec *spec, const char *file, const spec_pos *pos,
                       atom_diags *diags)
{
    check_ctx c = {.file = file ? file : "<spec>", .pos = pos, .diags = diags};
    /* With a field out of range the cross-field arithmetic could divide by zero. */
    if (check_ranges(&c, spec) > 0)
        return -1;
    check_layout(&c, spec);
    check_model(&c, spec);
    check_training(&c, spec);
    check_init(&c, spec);
    check_checkpoint(&c, spec);
    return c.errors ? -1 : 0;
}

int atom_spec_check(const atom_spec *spec, const char *file, atom_diags *diags)
{
    return atom_spec_check_at(spec, file, NULL, diags);
}

/* Token ids of a uint16 file must be below the vocabulary: a file made with another tokenizer
 * would otherwise fail hours into training, when a sample first reaches a bad id. The whole
 * file is read (at disk speed) unless its sidecar (FILE.json from atom-data prepare) records
 * the largest id for a file of this size. */
static void check_token_ids(check_ctx *c, const char *path, int64_t tokens, int vocab)
{
    atom_token_sidecar side;
    atom_err err;
    int found = atom_token_sidecar_read(path, &side, &err);
    if (found < 0) {
        fail(c, KEYS("data.path"), "%s (delete it, or make the file again)", err.msg);
        return;
    }
    if (found == 0 && side.tokens == tokens && strcmp(side.format, "uint16") == 0) {
        if (side.max_id >= vocab)
            fail(c, KEYS("model.vocab", "data.path", "model.preset"),
                 "%s holds token ids up to %d (%s.json: tokenizer %s, vocabulary %d), not all "
                 "below model.vocab (%d)", path, side.max_id, path, side.tokenizer, side.vocab,
                 vocab);
        return;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        fail(c, KEYS("data.path"), "%s: %s", path, strerror(errno));
        return;
    }
    size_t cap = 1 << 20; /* even: every read but the file's last ends on a whole id */
    unsigned char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        fail(c, KEYS("data.path"), "%s: out of memory to read it", path);
        return;
    }
    long long offset = 0;
    size_t n;
    while ((n = fread(buf, 1, cap, f)) >= 2) {
        for (size_t i = 0; i + 1 < n; i += 2) {
            int id = buf[i] | buf[i + 1] << 8; /* little-endian, as the worker reads it */
            if (id >= vocab) {
                fail(c, KEYS("model.vocab", "data.path", "model.preset"),
                     "%s: token id %d at byte %lld is not below model.vocab (%d): the file was "
                     "made with a larger vocabulary", path, id, offset + (long long)i, vocab);
                free(buf);
                fclose(f);
                return;
            }
        }
        offset += (long long)n;
    }
    if (ferror(f))
        fail(c, KEYS("data.path"), "%s: read error at byte %lld", path, offset);
    free(buf);
    fclose(f);
}

/* A sidecar that names another format: a gpt2 file read as bytes (or the reverse) trains on
 * garbage without any id out of range. -1 when it does (the ids then say nothing). */
static int check_sidecar_format(check_ctx *c, const char *path, const char *format)
{
    atom_token_sidecar side;
    atom_err err;
    if (atom_token_sidecar_read(path, &side, &err) != 0 || strcmp(side.format, format) == 0)
        return 0;
    fail(c, KEYS("data.format", "data.path"),
         "%s was made by the %s tokenizer for data.format: %s (%s.json), not %s", path,
         side.tokenizer, side.format, path, format);
    return -1;
}

int atom_spec_check_data(const atom_spec *spec, const char *file, atom_diags *diags)
{
    check_ctx c = {.file = file ? file : "<spec>", .diags = diags};
    const char *path = spec->data.path;
    struct stat st;
    if (!path[0])
        return 0; /* atom_spec_check reports the missing path */
    if (stat(path, &st) != 0) {
        fail(&c, KEYS("data.path"), "%s: %s", path, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        fail(&c, KEYS("data.path"), "%s is not a regular file", path);
    } else if (access(path, R_OK) != 0) {
        fail(&c, KEYS("data.path"), "%s: not readable: %s", path, strerror(errno));
    } else {
        int width = spec->data.format == ATOM_DATA_UINT16 ? 2 : 1;
        int64_t tokens = (int64_t)st.st_size / width;
        if (st.st_size % width != 0)
            fail(&c, KEYS("data.format"),
                 "%s has an odd number of bytes (%lld), so it is not a file of uint16 tokens", path,
                 (long long)st.st_size);
        else if (tokens <= (int64_t)spec->model.context + 1)
            fail(&c, KEYS("data.path"),
                 "%s holds %lld tokens; one sample is model.context + 1 = %d tokens, so the file "
                 "must hold more than that", path, (long long)tokens, spec->model.context + 1);
        else if (!check_sidecar_format(&c, path, width == 2 ? "uint16" : "bytes") &&
                 spec->data.format == ATOM_DATA_UINT16)
            check_token_ids(&c, path, tokens, spec->model.vocab);
    }
    /* init's source must be there now: a typo would otherwise fail the job once it runs. */
    if (spec->init.checkpoint[0] && stat(spec->init.checkpoint, &st) != 0)
        fail(&c, KEYS("init.checkpoint"), "%s: %s", spec->init.checkpoint, strerror(errno));
    if (spec->init.safetensors[0] && (stat(spec->init.safetensors, &st) != 0 ||
                                      access(spec->init.safetensors, R_OK) != 0))
        fail(&c, KEYS("init.safetensors"), "%s: %s", spec->init.safetensors, strerror(errno));
    else if (spec->init.safetensors[0] && !S_ISREG(st.st_mode))
        fail(&c, KEYS("init.safetensors"), "%s is not a regular file", spec->init.safetensors);
    if (spec->checkpoint.dir[0] && stat(spec->checkpoint.dir, &st) == 0 && !S_ISDIR(st.st_mode))
        fail(&c, KEYS("checkpoint.dir"), "%s exists and is not a folder", spec->checkpoint.dir);
    return c.errors ? -1 : 0;
}

int atom_spec_load_runnable(const char *path, atom_spec *spec, atom_diags *diags)
{
    if (atom_spec_load(path, spec, diags) != 0 || diags->count)
        return -1;
    return atom_spec_check_data(spec, path, diags);
}
