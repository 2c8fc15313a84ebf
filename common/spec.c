/* common/spec.c: the job spec from YAML: walks the tree of spec_yaml.c against the key table of
 * spec_keys.c, converts each value strictly (a quoted "4" is not a number, 4.0 is not an
 * integer, 99999999999999999999 is not an int64), fills the defaults that depend on other keys,
 * then runs the cross-field checks of spec_check.c. Every problem becomes a diagnostic with
 * file:line:column and the dotted key, and the walk goes on, so one run lists them all.
 * Unknown keys get the nearest valid one: a typo, a key of another section, another tool's name.
 *
 * The parser is pure: it reads no file but the one it is given (atom_spec_load) and never looks
 * at data.path; atom_spec_check_data does that, so the parser can be fuzzed. */
#include "common/spec_internal.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void spec_walk_err(spec_walk *w, const yt_node *at, const char *key, const char *fmt, ...)
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

/* Names other tools use for atom's keys (torchrun, Megatron, nanoGPT, HF), so a researcher who
 * writes the name they know is told atom's. */
static const struct { const char *alias, *dotted; } key_aliases[] = {
    {"learning_rate", "training.lr"},       {"lr_min", "training.min_lr"},
    {"min_learning_rate", "training.min_lr"}, {"batch_size", "training.micro_batch"},
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
    spec_show(key, buf, sizeof buf);
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
        spec_walk_err(w, key, dotted, "unknown key '%s'; did you mean '%s'?", buf, near);
        return;
    }
    /* 2. a key of another section */
    for (int i = 0; i < atom_spec_nkeys; i++) {
        const spec_key *k = &atom_spec_keys[i];
        if (strcmp(k->key, key->text) == 0 && strcmp(k->section, section) != 0) {
            spec_walk_err(w, key, dotted,
                          "unknown key '%s' here; did you mean '%s' (it belongs %s%s)?", buf,
                          k->dotted, *k->section ? "under " : "at the top level",
                          *k->section ? k->section : "");
            return;
        }
    }
    /* 3. another tool's name for it */
    for (size_t i = 0; i < sizeof key_aliases / sizeof key_aliases[0]; i++) {
        if (strcmp(key_aliases[i].alias, key->text) == 0) {
            spec_walk_err(w, key, dotted, "unknown key '%s'; did you mean '%s'?", buf,
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
                spec_walk_err(w, key, dotted, "unknown key '%s'; did you mean '%s'?", buf,
                              atom_spec_keys[i].dotted);
                return;
            }
        }
    }
    spec_list_words(valid, sizeof valid, names, count);
    spec_walk_err(w, key, dotted, "unknown key '%s'; valid keys %s%s: %s", buf,
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
    spec_walk_err(w, key, section, "a key must be a plain word, got %s",
                  spec_describe(key, buf, sizeof buf));
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
        spec_walk_err(w, key, atom_spec_keys[idx].dotted,
                      "duplicate key '%s' (first given on line %d)", key->text, seen_line[idx]);
        return;
    }
    seen_line[idx] = key->line;
    spec_set_value(w, idx, value);
}

static void walk_section(spec_walk *w, const char *section, const yt_node *map, int *seen_line)
{
    char buf[256];
    if (map->type == YT_NULL)
        return; /* "checkpoint:" alone: the section's defaults */
    if (map->type != YT_MAP) {
        spec_walk_err(w, map, section,
                      "expected a mapping of keys (e.g. '%s: {key: value}'), got %s", section,
                      spec_describe(map, buf, sizeof buf));
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
        spec_walk_err(w, NULL, "",
                      "the spec is empty: it needs at least data.path (see "
                      "configs/spec-reference.md)");
        return -1;
    }
    if (root->type != YT_MAP) {
        spec_walk_err(w, root, "",
                      "expected a mapping of sections (name, resources, model, data, "
                      "training, ...) at the top level, got %s",
                      spec_describe(root, buf, sizeof buf));
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
            spec_walk_err(w, key, key->text, "duplicate section '%s' (first given on line %d)",
                          key->text, section_line[s]);
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
    if (!given(w, "training.min_lr")) {
        /* lr / 10 as a person means it: 3e-4 gives 3e-5, not 2.9999999999999997e-05 (rounded
         * to 15 digits, the nearest double to the decimal value). */
        char tenth[40];
        snprintf(tenth, sizeof tenth, "%.15g", s->training.lr / 10);
        s->training.min_lr = strtod(tenth, NULL);
    }
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
    atom_path_dir(path, dir, sizeof dir);
    const char *base = realpath(dir, abs_dir) ? abs_dir : dir;
    int rc = atom_spec_parse(text, len, path, base, spec, diags);
    free(text);
    return rc;
}
