/* common/spec_keys.c: the table of every key a job spec has (section, name, type, range), the
 * names of the enumerations, and the nearest-key search behind "did you mean ...?". The YAML
 * parser, the JSON codec and the documentation test all read this one table. */
#include "common/spec_internal.h"

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

#define OFF(field) offsetof(atom_spec, field)
#define DAY 86400

/* Ranges are what a real job can mean, not what the type can hold: 10,000 GPUs is atom's
 * largest cluster, so 1,000,000 is generous and still far from int overflow in products. */
const spec_key atom_spec_keys[] = {
    {"", "name", "name", SPEC_NAME, OFF(name), 0, 0, 0, 0, false},
    {"", "project", "project", SPEC_NAME, OFF(project), 0, 0, 0, 0, false},
    {"", "priority", "priority", SPEC_INT, OFF(priority), 0, 1000, 0, 0, false},

    {"resources", "gpus", "resources.gpus", SPEC_INT, OFF(resources.gpus), 1, 1000000, 0, 0, false},
    {"resources", "gpus_per_node", "resources.gpus_per_node", SPEC_INT,
     OFF(resources.gpus_per_node), 0, 1024, 0, 0, false},
    {"resources", "time_limit", "resources.time_limit", SPEC_DURATION, OFF(resources.time_limit), 0,
     366 * (int64_t)DAY, 0, 0, false},
    {"resources", "device", "resources.device", SPEC_DEVICE, OFF(resources.device), 0, 0, 0, 0, false},

    {"parallelism", "tensor", "parallelism.tensor", SPEC_INT, OFF(parallelism.tensor), 1, 1024, 0, 0, false},
    {"parallelism", "data", "parallelism.data", SPEC_INT, OFF(parallelism.data), 1, 1000000, 0, 0, false},

    {"model", "preset", "model.preset", SPEC_PRESET, OFF(model_preset), 0, 0, 0, 0, false},
    {"model", "layers", "model.layers", SPEC_INT, OFF(model.layers), 1, 1024, 0, 0, false},
    {"model", "channels", "model.channels", SPEC_INT, OFF(model.channels), 1, 65536, 0, 0, false},
    {"model", "heads", "model.heads", SPEC_INT, OFF(model.heads), 1, 4096, 0, 0, false},
    {"model", "vocab", "model.vocab", SPEC_INT, OFF(model.vocab), 2, 16777216, 0, 0, false},
    {"model", "context", "model.context", SPEC_INT, OFF(model.context), 1, 1048576, 0, 0, false},

    {"data", "path", "data.path", SPEC_PATH, OFF(data.path), 0, 0, 0, 0, false},
    {"data", "format", "data.format", SPEC_FORMAT, OFF(data.format), 0, 0, 0, 0, false},

    {"training", "steps", "training.steps", SPEC_I64, OFF(training.steps), 1, 1000000000000LL, 0, 0, false},
    {"training", "global_batch", "training.global_batch", SPEC_INT, OFF(training.global_batch), 1,
     1000000000, 0, 0, false},
    {"training", "micro_batch", "training.micro_batch", SPEC_INT, OFF(training.micro_batch), 1,
     1000000, 0, 0, false},
    {"training", "lr", "training.lr", SPEC_F64, OFF(training.lr), 0, 0, 0.0, 10.0, true},
    {"training", "warmup", "training.warmup", SPEC_I64, OFF(training.warmup), 0, 1000000000000LL, 0, 0, false},
    {"training", "lr_schedule", "training.lr_schedule", SPEC_SCHEDULE, OFF(training.lr_schedule), 0,
     0, 0, 0, false},
    {"training", "min_lr", "training.min_lr", SPEC_F64, OFF(training.min_lr), 0, 0, 0.0, 10.0, false},
    {"training", "lr_decay_steps", "training.lr_decay_steps", SPEC_I64,
     OFF(training.lr_decay_steps), 0, 1000000000000LL, 0, 0, false},
    {"training", "cooldown_steps", "training.cooldown_steps", SPEC_I64,
     OFF(training.cooldown_steps), 0, 1000000000000LL, 0, 0, false},
    {"training", "cooldown_shape", "training.cooldown_shape", SPEC_COOLDOWN,
     OFF(training.cooldown_shape), 0, 0, 0, 0, false},
    {"training", "weight_decay", "training.weight_decay", SPEC_F64, OFF(training.weight_decay), 0, 0,
     0.0, 10.0, false},
    {"training", "grad_clip", "training.grad_clip", SPEC_F64, OFF(training.grad_clip), 0, 0, 0.0,
     1e6, false},
    {"training", "seed", "training.seed", SPEC_U64, OFF(training.seed), 0, INT64_MAX, 0, 0, false},
    {"training", "precision", "training.precision", SPEC_PRECISION, OFF(training.precision), 0, 0,
     0, 0, false},

    {"checkpoint", "dir", "checkpoint.dir", SPEC_PATH, OFF(checkpoint.dir), 0, 0, 0, 0, false},
    {"checkpoint", "every", "checkpoint.every", SPEC_I64, OFF(checkpoint.every), 0, 1000000000000LL,
     0, 0, false},
    {"checkpoint", "keep", "checkpoint.keep", SPEC_INT, OFF(checkpoint.keep), 0, 1000000, 0, 0, false},
    {"checkpoint", "async", "checkpoint.async", SPEC_BOOL, OFF(checkpoint.async), 0, 0, 0, 0, false},

    {"init", "checkpoint", "init.checkpoint", SPEC_PATH, OFF(init.checkpoint), 0, 0, 0, 0, false},
    {"init", "safetensors", "init.safetensors", SPEC_PATH, OFF(init.safetensors), 0, 0, 0, 0,
     false},
    {"init", "load", "init.load", SPEC_INIT_LOAD, OFF(init.load), 0, 0, 0, 0, false},
    {"init", "resume_step", "init.resume_step", SPEC_BOOL, OFF(init.resume_step), 0, 0, 0, 0,
     false},

    {"restart", "max_restarts", "restart.max_restarts", SPEC_INT, OFF(restart.max_restarts), 0, 1000,
     0, 0, false},
    {"restart", "heartbeat_timeout", "restart.heartbeat_timeout", SPEC_DURATION,
     OFF(restart.heartbeat_timeout), 1, 7 * (int64_t)DAY, 0, 0, false},
};
const int atom_spec_nkeys = (int)(sizeof atom_spec_keys / sizeof atom_spec_keys[0]);

_Static_assert(sizeof atom_spec_keys / sizeof atom_spec_keys[0] <=
                   sizeof(((spec_pos *)0)->line) / sizeof(int),
               "spec_pos must have a slot for every key");

const char *const atom_spec_sections[] = {"resources", "parallelism", "model", "data",
                                          "training",  "checkpoint",  "init",
                                          "restart",   NULL};

void atom_spec_defaults(atom_spec *s)
{
    memset(s, 0, sizeof *s); /* zeroed whole, so two specs with equal fields compare equal */
    snprintf(s->name, sizeof s->name, "job");
    snprintf(s->project, sizeof s->project, "default");
    s->priority = 100;
    s->resources.gpus = 1;
    s->resources.gpus_per_node = 0;
    s->resources.time_limit = 0;
    s->resources.device = ATOM_DEVICE_AUTO;
    s->parallelism.tensor = 1;
    s->parallelism.data = 1;
    snprintf(s->model_preset, sizeof s->model_preset, "gpt-tiny");
    atom_model_preset("gpt-tiny", &s->model);
    s->data.format = ATOM_DATA_BYTES;
    s->training.steps = 1000;
    s->training.micro_batch = 8;
    s->training.global_batch = 8;
    s->training.lr = 3e-4;
    s->training.warmup = 0;
    s->training.lr_schedule = ATOM_LR_COSINE;
    s->training.min_lr = 3e-5;
    s->training.weight_decay = 0.1;
    s->training.grad_clip = 1.0;
    s->training.seed = 1234;
    s->training.precision = ATOM_PRECISION_FP32;
    s->checkpoint.every = 100;
    s->checkpoint.keep = 3;
    s->checkpoint.async = true;
    s->restart.max_restarts = 3;
    s->restart.heartbeat_timeout = 300;
}

int atom_spec_key_find(const char *section, const char *key)
{
    for (int i = 0; i < atom_spec_nkeys; i++)
        if (strcmp(atom_spec_keys[i].section, section) == 0 && strcmp(atom_spec_keys[i].key, key) == 0)
            return i;
    return -1;
}

int atom_spec_key_find_dotted(const char *dotted)
{
    for (int i = 0; i < atom_spec_nkeys; i++)
        if (strcmp(atom_spec_keys[i].dotted, dotted) == 0)
            return i;
    return -1;
}

static const char *const device_names[] = {"auto", "cpu", "cuda", NULL};
static const char *const format_names[] = {"bytes", "uint16", NULL};
static const char *const schedule_names[] = {"cosine", "linear", "constant", "wsd", NULL};
static const char *const cooldown_names[] = {"1-sqrt", "linear", NULL};
static const char *const init_load_names[] = {"weights", "weights+optimizer", NULL};
static const char *const precision_names[] = {"fp32", "bf16", NULL};

static const char *const *enum_names(spec_kind kind)
{
    switch (kind) {
    case SPEC_DEVICE: return device_names;
    case SPEC_FORMAT: return format_names;
    case SPEC_SCHEDULE: return schedule_names;
    case SPEC_PRECISION: return precision_names;
    case SPEC_COOLDOWN: return cooldown_names;
    case SPEC_INIT_LOAD: return init_load_names;
    default: return NULL;
    }
}

const char *atom_spec_enum_name(spec_kind kind, int value)
{
    const char *const *names = enum_names(kind);
    if (!names || value < 0)
        return NULL;
    for (int i = 0; names[i]; i++)
        if (i == value)
            return names[i];
    return NULL;
}

int atom_spec_enum_value(spec_kind kind, const char *name)
{
    const char *const *names = enum_names(kind);
    for (int i = 0; names && names[i]; i++)
        if (strcmp(names[i], name) == 0)
            return i;
    return -1;
}

/* Levenshtein distance, case-insensitive, on words of up to 64 bytes (longer: "far"). */
static int edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return 1000;
    int row[65];
    for (size_t j = 0; j <= lb; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            char ca = a[i - 1], cb = b[j - 1];
            if (ca >= 'A' && ca <= 'Z') ca = (char)(ca - 'A' + 'a');
            if (cb >= 'A' && cb <= 'Z') cb = (char)(cb - 'A' + 'a');
            int best = diag + (ca != cb);
            if (row[j] + 1 < best) best = row[j] + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            diag = row[j];
            row[j] = best;
        }
    }
    return row[lb];
}

const char *atom_spec_nearest(const char *word, const char *const *candidates, int count)
{
    size_t len = strlen(word);
    /* One typo in a short word, up to three in a long one: beyond that the "suggestion" is noise. */
    int limit = len <= 3 ? 1 : len <= 6 ? 2 : 3;
    const char *best = NULL;
    int best_d = limit + 1;
    for (int i = 0; i < count; i++) {
        size_t lc = strlen(candidates[i]);
        if ((len > lc ? len - lc : lc - len) > (size_t)limit)
            continue; /* the distance is at least the difference in length */
        int d = edit_distance(word, candidates[i]);
        if (d < best_d) {
            best_d = d;
            best = candidates[i];
        }
    }
    return best;
}
