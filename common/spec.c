/* common/spec.c: the job spec from YAML: walks the tree of spec_yaml.c against the key table of
 * spec_keys.c, converts each value strictly (a quoted "4" is not a number, 4.0 is not an
 * integer, 99999999999999999999 is not an int64), fills the defaults that depend on other keys,
 * then runs the cross-field checks of spec_check.c. Every problem becomes a diagnostic with
 * file:line:column and the dotted key, and the walk goes on, so one run lists them all.
 *
 * The parser is pure: it reads no file but the one it is given (atom_spec_load) and never looks
 * at data.path; atom_spec_check_data does that, so the parser can be fuzzed. */
#include "common/spec_internal.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A spec is a few dozen lines; a megabyte is already absurd, and bounds what a hostile file
 * costs. */
#define SPEC_MAX_DIAGS 100

typedef struct spec_walk {
    const char *file;
    const char *base_dir;
    atom_spec *spec;
    atom_diags *diags;
    int first_diag;  /* diags->count when the walk began */
    bool too_many;   /* SPEC_MAX_DIAGS reached: the rest is dropped */
    spec_pos pos;
} spec_walk;

static void walk_err(spec_walk *w, const yt_node *at, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void walk_err(spec_walk *w, const yt_node *at, const char *key, const char *fmt, ...)
{
    if (w->too_many)
        return;
    if (w->diags->count - w->first_diag >= SPEC_MAX_DIAGS) {
        atom_diags_add(w->diags, w->file, 0, 0, "", "more than %d errors; the rest are not shown",
                       SPEC_MAX_DIAGS);
        w->too_many = true;
        return;
    }
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    atom_diags_add(w->diags, w->file, at ? at->line : 0, at ? at->column : 0, key, "%s", msg);
}

/* A scalar as it can be shown in a message: at most 40 bytes, control and non-ASCII bytes as
 * \xNN, so that garbage input cannot garble the terminal. */
static const char *show(const yt_node *n, char *buf, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < n->len && o + 8 < size; i++) {
        unsigned char c = (unsigned char)n->text[i];
        if (i == 40) {
            o += (size_t)snprintf(buf + o, size - o, "...");
            break;
        }
        if (c >= 0x20 && c < 0x7f && c != '\'')
            buf[o++] = (char)c;
        else
            o += (size_t)snprintf(buf + o, size - o, "\\x%02x", c);
    }
    buf[o] = '\0';
    return buf;
}

/* "a mapping", "the string \"4\"", "the number 4.5": what was found instead. */
static const char *describe(const yt_node *n, char *buf, size_t size)
{
    if (!n || n->type != YT_SCALAR)
        return yt_type_name(n);
    char shown[200];
    snprintf(buf, size, n->quoted ? "the string \"%s\"" : "'%s'", show(n, shown, sizeof shown));
    return buf;
}

static bool is_decimal_int(const char *s)
{
    if (*s == '+' || *s == '-')
        s++;
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

/* Decimal or scientific notation only: strtod alone would also take "inf", "nan" and hex. */
static bool is_decimal_float(const char *s, size_t len, double *out)
{
    if (len == 0 || strlen(s) != len)
        return false;
    bool digit = false;
    for (const char *p = s; *p; p++) {
        if (*p >= '0' && *p <= '9')
            digit = true;
        else if (!strchr("+-.eE", *p))
            return false;
    }
    if (!digit)
        return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end != '\0')
        return false;
    *out = v;
    return true;
}

static bool is_bool_word(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"};
    static const char *const no[] = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcmp(s, yes[i]) == 0) { *out = true; return true; }
        if (strcmp(s, no[i]) == 0) { *out = false; return true; }
    }
    return false;
}

/* The value of an integer key, range-checked. */
static int get_int(spec_walk *w, const spec_key *k, const yt_node *v, int64_t *out)
{
    char buf[256];
    double d;
    bool b;
    if (v->type != YT_SCALAR || v->quoted || strlen(v->text) != v->len) {
        walk_err(w, v, k->dotted, "expected an integer, got %s", describe(v, buf, sizeof buf));
        return -1;
    }
    if (!is_decimal_int(v->text)) {
        if (is_decimal_float(v->text, v->len, &d))
            walk_err(w, v, k->dotted, "expected an integer (digits only), got the number %s",
                     show(v, buf, sizeof buf));
        else if (is_bool_word(v->text, &b))
            walk_err(w, v, k->dotted, "expected an integer, got the boolean %s",
                     show(v, buf, sizeof buf));
        else
            walk_err(w, v, k->dotted, "expected an integer, got %s", describe(v, buf, sizeof buf));
        return -1;
    }
    errno = 0;
    long long x = strtoll(v->text, NULL, 10);
    if (errno == ERANGE || x < k->imin || x > k->imax) {
        if (errno != ERANGE && x < k->imin && k->imin >= 0)
            walk_err(w, v, k->dotted, "must be %s%lld or more, got %s",
                     x < 0 ? "a count: " : "", (long long)k->imin, show(v, buf, sizeof buf));
        else
            walk_err(w, v, k->dotted, "%s is out of range: must be between %lld and %lld",
                     show(v, buf, sizeof buf), (long long)k->imin, (long long)k->imax);
        return -1;
    }
    *out = x;
    return 0;
}

static int get_float(spec_walk *w, const spec_key *k, const yt_node *v, double *out)
{
    char buf[256];
    double d;
    if (v->type != YT_SCALAR || v->quoted || !is_decimal_float(v->text, v->len, &d)) {
        walk_err(w, v, k->dotted, "expected a number, got %s", describe(v, buf, sizeof buf));
        return -1;
    }
    if (!isfinite(d) || d < k->fmin || d > k->fmax || (k->positive && d <= k->fmin)) {
        walk_err(w, v, k->dotted, "%s is out of range: must be %s %g and at most %g",
                 show(v, buf, sizeof buf), k->positive ? "more than" : "at least", k->fmin, k->fmax);
        return -1;
    }
    *out = d;
    return 0;
}

/* A string key's text: any scalar (name: 123 is a fine name), never a mapping, no NUL inside. */
static const char *get_text(spec_walk *w, const spec_key *k, const yt_node *v, const char *what)
{
    char buf[256];
    if (v->type != YT_SCALAR) {
        walk_err(w, v, k->dotted, "expected %s, got %s", what, describe(v, buf, sizeof buf));
        return NULL;
    }
    if (strlen(v->text) != v->len) {
        walk_err(w, v, k->dotted, "%s holds a NUL byte", show(v, buf, sizeof buf));
        return NULL;
    }
    return v->text;
}

static int set_name(spec_walk *w, const spec_key *k, const yt_node *v, char *field)
{
    char buf[256];
    const char *s = get_text(w, k, v, "a name");
    if (!s)
        return -1;
    size_t len = strlen(s);
    size_t bad = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-");
    if (len == 0 || len >= ATOM_NAME_MAX || bad != len) {
        walk_err(w, v, k->dotted,
                 "'%s' is not a valid name: use 1 to %d of the characters A-Z a-z 0-9 . _ -",
                 show(v, buf, sizeof buf), ATOM_NAME_MAX - 1);
        return -1;
    }
    /* Zero the whole field: specs are compared with memcmp after a JSON round trip. */
    memset(field, 0, ATOM_NAME_MAX);
    memcpy(field, s, len);
    return 0;
}

static int set_path(spec_walk *w, const spec_key *k, const yt_node *v, char *field)
{
    const char *s = get_text(w, k, v, "a path");
    if (!s)
        return -1;
    if (!*s) {
        walk_err(w, v, k->dotted, "the path is empty");
        return -1;
    }
    /* Relative paths mean "next to the spec", whatever folder atomctl runs in. */
    while (s[0] == '.' && s[1] == '/')
        s += 2;
    memset(field, 0, ATOM_PATH_MAX);
    int n;
    if (s[0] != '/' && w->base_dir && w->base_dir[0])
        n = snprintf(field, ATOM_PATH_MAX, "%s/%s", w->base_dir, *s ? s : ".");
    else
        n = snprintf(field, ATOM_PATH_MAX, "%s", *s ? s : ".");
    if (n < 0 || n >= ATOM_PATH_MAX) {
        field[0] = '\0';
        walk_err(w, v, k->dotted, "the path is longer than %d bytes", ATOM_PATH_MAX - 1);
        return -1;
    }
    return 0;
}

static int set_duration(spec_walk *w, const spec_key *k, const yt_node *v, int64_t *field)
{
    char buf[256];
    int64_t secs;
    const char *s = get_text(w, k, v, "a duration");
    if (!s)
        return -1;
    if (atom_parse_duration(s, &secs) != 0) {
        walk_err(w, v, k->dotted,
                 "expected a duration such as 90s, 30m, 2h, 1d, 1h30m, 01:30:00 or a number of "
                 "seconds, got %s", describe(v, buf, sizeof buf));
        return -1;
    }
    if (secs < k->imin || secs > k->imax) {
        walk_err(w, v, k->dotted, "%s is out of range: must be between %llds and %llds",
                 show(v, buf, sizeof buf), (long long)k->imin, (long long)k->imax);
        return -1;
    }
    *field = secs;
    return 0;
}

static void list_words(char *out, size_t size, const char *const *words, int count)
{
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; i < count && o < size; i++)
        o += (size_t)snprintf(out + o, size - o, "%s%s", i ? ", " : "", words[i]);
}

static int set_choice(spec_walk *w, const spec_key *k, const yt_node *v, int *field)
{
    char buf[256], valid[128];
    const char *names[8];
    int count = 0;
    const char *s = get_text(w, k, v, "a name");
    if (!s)
        return -1;
    for (; count < 8 && atom_spec_enum_name(k->kind, count); count++)
        names[count] = atom_spec_enum_name(k->kind, count);
    int value = atom_spec_enum_value(k->kind, s);
    if (value < 0) {
        list_words(valid, sizeof valid, names, count);
        const char *near = atom_spec_nearest(s, names, count);
        walk_err(w, v, k->dotted, "unknown value '%s'%s%s%s; expected one of: %s",
                 show(v, buf, sizeof buf), near ? " (did you mean '" : "", near ? near : "",
                 near ? "'?)" : "", valid);
        return -1;
    }
    *field = value;
    return 0;
}

static int set_preset(spec_walk *w, const spec_key *k, const yt_node *v)
{
    char buf[256], valid[160];
    const char *names[16];
    int count = 0;
    const char *s = get_text(w, k, v, "a preset name");
    if (!s)
        return -1;
    atom_model_cfg cfg;
    if (strlen(s) >= ATOM_NAME_MAX || atom_model_preset(s, &cfg) != 0) {
        for (; count < 16 && atom_model_preset_name(count); count++)
            names[count] = atom_model_preset_name(count);
        list_words(valid, sizeof valid, names, count);
        const char *near = atom_spec_nearest(s, names, count);
        walk_err(w, v, k->dotted, "unknown model preset '%s'%s%s%s; presets: %s",
                 show(v, buf, sizeof buf), near ? " (did you mean '" : "", near ? near : "",
                 near ? "'?)" : "", valid);
        return -1;
    }
    memset(w->spec->model_preset, 0, sizeof w->spec->model_preset);
    snprintf(w->spec->model_preset, sizeof w->spec->model_preset, "%s", s);
    w->spec->model = cfg;
    return 0;
}

/* Converts v into the field of key k; records where the file set it. */
static void set_value(spec_walk *w, int idx, const yt_node *v)
{
    const spec_key *k = &atom_spec_keys[idx];
    char *field = (char *)w->spec + k->offset;
    char buf[256];
    int64_t i64;
    double d;
    int rc = -1;
    if (v->refused)
        return;
    if (v->type == YT_NULL) {
        walk_err(w, v, k->dotted, "has no value (leave the key out to get the default)");
        return;
    }
    switch (k->kind) {
    case SPEC_INT:
        if ((rc = get_int(w, k, v, &i64)) == 0)
            *(int *)(void *)field = (int)i64;
        break;
    case SPEC_I64:
        if ((rc = get_int(w, k, v, &i64)) == 0)
            *(int64_t *)(void *)field = i64;
        break;
    case SPEC_U64:
        if ((rc = get_int(w, k, v, &i64)) == 0)
            *(uint64_t *)(void *)field = (uint64_t)i64;
        break;
    case SPEC_F64:
        if ((rc = get_float(w, k, v, &d)) == 0)
            *(double *)(void *)field = d;
        break;
    case SPEC_BOOL: {
        bool b;
        if (v->type == YT_SCALAR && !v->quoted && is_bool_word(v->text, &b)) {
            *(bool *)(void *)field = b;
            rc = 0;
        } else {
            walk_err(w, v, k->dotted, "expected true or false, got %s", describe(v, buf, sizeof buf));
        }
        break;
    }
    case SPEC_NAME: rc = set_name(w, k, v, field); break;
    case SPEC_PATH: rc = set_path(w, k, v, field); break;
    case SPEC_DURATION: rc = set_duration(w, k, v, (int64_t *)(void *)field); break;
    case SPEC_DEVICE:
    case SPEC_FORMAT:
    case SPEC_SCHEDULE: {
        int value;
        if ((rc = set_choice(w, k, v, &value)) == 0) {
            if (k->kind == SPEC_DEVICE) *(atom_device *)(void *)field = (atom_device)value;
            if (k->kind == SPEC_FORMAT) *(atom_data_format *)(void *)field = (atom_data_format)value;
            if (k->kind == SPEC_SCHEDULE) *(atom_lr_schedule *)(void *)field = (atom_lr_schedule)value;
        }
        break;
    }
    case SPEC_PRESET: rc = set_preset(w, k, v); break;
    }
    if (rc == 0) {
        w->pos.line[idx] = v->line;
        w->pos.column[idx] = v->column;
    }
}

/* Names other tools use for atom's keys (torchrun, Megatron, nanoGPT, HF), so a researcher who
 * writes the name they know is told atom's. */
static const struct { const char *alias, *dotted; } key_aliases[] = {
    {"learning_rate", "training.lr"},       {"lr_min", "training.min_lr"},
    {"min_learning_rate", "training.min_lr"}, {"batch_size", "training.global_batch"},
    {"global_batch_size", "training.global_batch"}, {"micro_batch_size", "training.micro_batch"},
    {"max_steps", "training.steps"},        {"train_steps", "training.steps"},
    {"max_iters", "training.steps"},        {"warmup_steps", "training.warmup"},
    {"warmup_iters", "training.warmup"},    {"max_grad_norm", "training.grad_clip"},
    {"clip_grad", "training.grad_clip"},    {"gradient_clipping", "training.grad_clip"},
    {"wd", "training.weight_decay"},        {"n_layer", "model.layers"},
    {"num_layers", "model.layers"},         {"n_embd", "model.channels"},
    {"hidden_size", "model.channels"},      {"d_model", "model.channels"},
    {"n_head", "model.heads"},              {"num_heads", "model.heads"},
    {"num_attention_heads", "model.heads"}, {"vocab_size", "model.vocab"},
    {"block_size", "model.context"},        {"seq_len", "model.context"},
    {"seq_length", "model.context"},        {"max_seq_len", "model.context"},
    {"n_positions", "model.context"},       {"tp", "parallelism.tensor"},
    {"tensor_parallel", "parallelism.tensor"}, {"tensor_model_parallel_size", "parallelism.tensor"},
    {"dp", "parallelism.data"},             {"data_parallel", "parallelism.data"},
    {"nproc_per_node", "resources.gpus_per_node"}, {"accelerators", "resources.gpus"},
    {"save_interval", "checkpoint.every"},  {"save_every", "checkpoint.every"},
    {"save_dir", "checkpoint.dir"},         {"max_retries", "restart.max_restarts"},
    {"max_restart", "restart.max_restarts"}, {"walltime", "resources.time_limit"},
};

static void unknown_key(spec_walk *w, const char *section, const yt_node *key)
{
    char buf[256], dotted[300], valid[512];
    const char *names[64];
    int count = 0;
    show(key, buf, sizeof buf);
    snprintf(dotted, sizeof dotted, "%s%s%s", section, *section ? "." : "", buf);

    /* 1. a typo of a key of this section (at the top level, of a section name too) */
    for (int i = 0; i < atom_spec_nkeys && count < 56; i++)
        if (strcmp(atom_spec_keys[i].section, section) == 0)
            names[count++] = atom_spec_keys[i].key;
    if (!*section)
        for (int i = 0; atom_spec_sections[i]; i++)
            names[count++] = atom_spec_sections[i];
    const char *near = atom_spec_nearest(key->text, names, count);
    if (near) {
        walk_err(w, key, dotted, "unknown key '%s'; did you mean '%s'?", buf, near);
        return;
    }
    /* 2. a key of another section */
    for (int i = 0; i < atom_spec_nkeys; i++) {
        const spec_key *k = &atom_spec_keys[i];
        if (strcmp(k->key, key->text) == 0 && strcmp(k->section, section) != 0) {
            walk_err(w, key, dotted, "unknown key '%s' here; did you mean '%s' (it belongs %s%s)?",
                     buf, k->dotted, *k->section ? "under " : "at the top level",
                     *k->section ? k->section : "");
            return;
        }
    }
    /* 3. another tool's name for it */
    for (size_t i = 0; i < sizeof key_aliases / sizeof key_aliases[0]; i++) {
        if (strcmp(key_aliases[i].alias, key->text) == 0) {
            walk_err(w, key, dotted, "unknown key '%s'; did you mean '%s'?", buf,
                     key_aliases[i].dotted);
            return;
        }
    }
    /* 4. a typo of a key of another section */
    const char *all[64];
    for (int i = 0; i < atom_spec_nkeys; i++)
        all[i] = atom_spec_keys[i].key;
    near = atom_spec_nearest(key->text, all, atom_spec_nkeys);
    if (near) {
        for (int i = 0; i < atom_spec_nkeys; i++) {
            if (all[i] == near) {
                walk_err(w, key, dotted, "unknown key '%s'; did you mean '%s'?", buf,
                         atom_spec_keys[i].dotted);
                return;
            }
        }
    }
    list_words(valid, sizeof valid, names, count);
    walk_err(w, key, dotted, "unknown key '%s'; valid keys %s%s: %s", buf,
             *section ? "in " : "at the top level", section, valid);
}

/* A mapping key must be a plain word. */
static bool key_ok(spec_walk *w, const char *section, const yt_node *key)
{
    char buf[256];
    if (key->type == YT_SCALAR && strlen(key->text) == key->len)
        return true;
    if (key->refused)
        return false;
    walk_err(w, key, section, "a key must be a plain word, got %s", describe(key, buf, sizeof buf));
    return false;
}

/* Handles one key: value pair of `section`; seen[] holds the line of each key's first use. */
static void walk_pair(spec_walk *w, const char *section, const yt_node *key, const yt_node *value,
                      int *seen_line)
{
    if (!key_ok(w, section, key))
        return;
    int idx = atom_spec_key_find(section, key->text);
    if (idx < 0) {
        unknown_key(w, section, key);
        return;
    }
    if (seen_line[idx]) {
        walk_err(w, key, atom_spec_keys[idx].dotted, "duplicate key '%s' (first given on line %d)",
                 key->text, seen_line[idx]);
        return;
    }
    seen_line[idx] = key->line;
    set_value(w, idx, value);
}

static void walk_section(spec_walk *w, const char *section, const yt_node *map, int *seen_line)
{
    char buf[256];
    if (map->type == YT_NULL)
        return; /* "checkpoint:" alone: the section's defaults */
    if (map->type != YT_MAP) {
        walk_err(w, map, section, "expected a mapping of keys (e.g. '%s: {key: value}'), got %s",
                 section, describe(map, buf, sizeof buf));
        return;
    }
    /* model.preset first, wherever it is written: the other model keys override it. */
    int preset_at = -1;
    if (strcmp(section, "model") == 0) {
        for (int i = 0; i + 1 < map->n && preset_at < 0; i += 2)
            if (map->items[i]->type == YT_SCALAR && strcmp(map->items[i]->text, "preset") == 0)
                preset_at = i;
        if (preset_at >= 0)
            walk_pair(w, section, map->items[preset_at], map->items[preset_at + 1], seen_line);
    }
    for (int i = 0; i + 1 < map->n; i += 2)
        if (i != preset_at)
            walk_pair(w, section, map->items[i], map->items[i + 1], seen_line);
}

/* Returns -1 when there is nothing to check further (no mapping at the top). */
static int walk_root(spec_walk *w, const yt_node *root)
{
    char buf[256];
    int seen_line[64] = {0};
    int section_line[16] = {0};
    if (!root || root->type == YT_NULL) {
        walk_err(w, NULL, "", "the spec is empty: it needs at least data.path (see "
                              "configs/spec-reference.md)");
        return -1;
    }
    if (root->type != YT_MAP) {
        walk_err(w, root, "", "expected a mapping of sections (name, resources, model, data, "
                              "training, ...) at the top level, got %s",
                 describe(root, buf, sizeof buf));
        return -1;
    }
    for (int i = 0; i + 1 < root->n; i += 2) {
        const yt_node *key = root->items[i], *value = root->items[i + 1];
        if (!key_ok(w, "", key))
            continue;
        int s = 0;
        while (atom_spec_sections[s] && strcmp(atom_spec_sections[s], key->text) != 0)
            s++;
        if (!atom_spec_sections[s]) {
            walk_pair(w, "", key, value, seen_line);
            continue;
        }
        if (section_line[s]) {
            walk_err(w, key, key->text, "duplicate section '%s' (first given on line %d)", key->text,
                     section_line[s]);
            continue;
        }
        section_line[s] = key->line;
        walk_section(w, atom_spec_sections[s], value, seen_line);
    }
    return 0;
}

static bool given(const spec_walk *w, const char *dotted)
{
    int i = atom_spec_key_find_dotted(dotted);
    return i >= 0 && w->pos.line[i] > 0;
}

/* The name of "runs/tiny-shakespeare.yaml" is "tiny-shakespeare". */
static void name_from_file(atom_spec *s, const char *file)
{
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    memset(s->name, 0, sizeof s->name);
    size_t n = 0;
    for (; base[n] && n + 1 < sizeof s->name; n++) {
        char c = base[n];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-' || c == '.';
        s->name[n] = ok ? c : '-';
    }
    s->name[n] = '\0';
    char *dot = strrchr(s->name, '.');
    if (dot && (strcmp(dot, ".yaml") == 0 || strcmp(dot, ".yml") == 0))
        memset(dot, 0, strlen(dot));
    if (!s->name[0])
        snprintf(s->name, sizeof s->name, "job");
}

/* Defaults that follow from other keys (configs/spec-reference.md lists them). */
static void derive_defaults(spec_walk *w)
{
    atom_spec *s = w->spec;
    if (!given(w, "name") && w->file)
        name_from_file(s, w->file);
    if (!given(w, "parallelism.data") && given(w, "resources.gpus") &&
        s->resources.gpus % s->parallelism.tensor == 0)
        s->parallelism.data = s->resources.gpus / s->parallelism.tensor;
    if (!given(w, "resources.gpus")) {
        int64_t g = (int64_t)s->parallelism.tensor * s->parallelism.data;
        if (g <= 1000000)
            s->resources.gpus = (int)g;
    }
    if (!given(w, "training.global_batch")) {
        int64_t gb = (int64_t)s->training.micro_batch * s->parallelism.data;
        if (gb <= 1000000000)
            s->training.global_batch = (int)gb;
    }
    if (!given(w, "training.min_lr"))
        s->training.min_lr = s->training.lr / 10;
}

/* In file order (problems of the whole file last), whichever stage found them; stable, so two
 * problems at one place keep the order they were found in. */
static void sort_diags(atom_diags *d, int from)
{
    for (int i = from + 1; i < d->count; i++) {
        atom_diag cur = d->items[i];
        long cur_key = cur.line > 0 ? (long)cur.line * 100000 + cur.column : LONG_MAX;
        int j = i - 1;
        while (j >= from) {
            const atom_diag *p = &d->items[j];
            long p_key = p->line > 0 ? (long)p->line * 100000 + p->column : LONG_MAX;
            if (p_key <= cur_key)
                break;
            d->items[j + 1] = d->items[j];
            j--;
        }
        d->items[j + 1] = cur;
    }
}

int atom_spec_parse(const char *text, size_t len, const char *name, const char *base_dir,
                    atom_spec *spec, atom_diags *diags)
{
    spec_walk w = {.file = name ? name : "<spec>", .base_dir = base_dir, .spec = spec,
                   .diags = diags, .first_diag = diags->count};
    atom_spec_defaults(spec);
    if (len > ATOM_SPEC_MAX_BYTES) {
        atom_diags_add(diags, w.file, 0, 0, "", "the spec is %zu bytes, more than the limit of %d",
                       len, ATOM_SPEC_MAX_BYTES);
        return -1;
    }
    if (len == 0) {
        atom_diags_add(diags, w.file, 0, 0, "", "the spec file is empty");
        return -1;
    }
    yt_node *root;
    int fatal = yt_parse(text, len, w.file, diags, &root);
    if (fatal == 0 && walk_root(&w, root) == 0) {
        derive_defaults(&w);
        atom_spec_check_at(spec, w.file, &w.pos, diags);
    }
    yt_free(root);
    sort_diags(diags, w.first_diag);
    return diags->count > w.first_diag ? -1 : 0;
}

int atom_spec_load(const char *path, atom_spec *spec, atom_diags *diags)
{
    atom_err err;
    size_t len;
    atom_spec_defaults(spec);
    char *text = atom_read_file(path, ATOM_SPEC_MAX_BYTES, &len, &err);
    if (!text) {
        atom_diags_add(diags, path, 0, 0, "", "%s", err.msg);
        return -1;
    }
    /* The folder that relative paths in the spec are relative to, made absolute so that the
     * plan means the same thing on every node and in every working directory. */
    char dir[ATOM_PATH_MAX], abs_dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    const char *base = realpath(dir, abs_dir) ? abs_dir : dir;
    int rc = atom_spec_parse(text, len, path, base, spec, diags);
    free(text);
    return rc;
}
