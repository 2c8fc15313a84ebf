/* common/spec_internal.h: what the spec's parts share among themselves (not a public contract):
 * the table of every key a job spec has, the YAML tree the parser walks, and the positions of the
 * keys a file gave, so that cross-field checks point at the offending line. Tests include it to
 * check the table against configs/spec-reference.md. */
#ifndef ATOM_SPEC_INTERNAL_H
#define ATOM_SPEC_INTERNAL_H

#include "common/common.h"

/* ---- the key table: one row per key, shared by the YAML parser, the JSON codec and the docs
 * test, so that a key added here is parsed, serialised and documented-or-failing at once. ---- */

typedef enum {
    SPEC_INT,      /* int field, range [imin, imax] */
    SPEC_I64,      /* int64_t field */
    SPEC_U64,      /* uint64_t field (kept <= INT64_MAX so JSON carries it exactly) */
    SPEC_F64,      /* double; `positive` excludes 0 */
    SPEC_BOOL,
    SPEC_NAME,     /* char[ATOM_NAME_MAX] of [A-Za-z0-9._-] */
    SPEC_PATH,     /* char[ATOM_PATH_MAX], resolved against the spec's folder */
    SPEC_DURATION, /* int64_t seconds from "90s", "1h30m", "01:30:00" or a number */
    SPEC_DEVICE,   /* atom_device from "auto" | "cpu" | "cuda" */
    SPEC_FORMAT,   /* atom_data_format from "bytes" | "uint16" */
    SPEC_SCHEDULE, /* atom_lr_schedule from "cosine" | "linear" | "constant" | "wsd" */
    SPEC_COOLDOWN, /* atom_cooldown_shape from "1-sqrt" | "linear" */
    SPEC_INIT_LOAD,/* atom_init_load from "weights" | "weights+optimizer" */
    SPEC_PRECISION,/* atom_precision from "fp32" | "bf16" */
    SPEC_PRESET,   /* model_preset; in YAML also fills the model's shape */
} spec_kind;

typedef struct spec_key {
    const char *section; /* "" for top-level keys */
    const char *key;
    const char *dotted;  /* "training.lr" */
    spec_kind kind;
    size_t offset;       /* into atom_spec */
    int64_t imin, imax;  /* integers and durations */
    double fmin, fmax;   /* doubles */
    bool positive;       /* doubles: > fmin rather than >= */
} spec_key;

extern const spec_key atom_spec_keys[];
extern const int atom_spec_nkeys;
extern const char *const atom_spec_sections[]; /* NULL-terminated, in file order */

int atom_spec_key_find(const char *section, const char *key); /* index or -1 */
int atom_spec_key_find_dotted(const char *dotted);            /* index or -1 */
const char *atom_spec_enum_name(spec_kind kind, int value);
int atom_spec_enum_value(spec_kind kind, const char *name); /* -1 when unknown */
/* The nearest of `count` candidates by edit distance, or NULL when none is near enough. */
const char *atom_spec_nearest(const char *word, const char *const *candidates, int count);

/* ---- positions: where the file set each key (0 when it did not) ---- */

typedef struct spec_pos {
    int line[64], column[64]; /* indexed like atom_spec_keys */
} spec_pos;

/* Cross-field checks; pos may be NULL (no positions known). */
int atom_spec_check_at(const atom_spec *spec, const char *file, const spec_pos *pos,
                       atom_diags *diags);

/* ---- the YAML tree: libyaml's events gathered into nodes that keep their positions ---- */

typedef enum { YT_NULL, YT_SCALAR, YT_MAP, YT_SEQ } yt_type;

typedef struct yt_node {
    yt_type type;
    int line, column;        /* 1-based */
    char *text;              /* scalars: the value (NUL-terminated; may hold NULs within len) */
    size_t len;
    bool quoted;             /* scalars: written in quotes or as a block, so never a number */
    bool refused;            /* an alias, already reported: the walk skips it silently */
    struct yt_node **items;  /* maps: key, value, key, value...; sequences: the elements */
    int n, cap;
} yt_node;

#define YT_MAX_DEPTH 32
#define YT_MAX_NODES 20000

/* Builds the tree of the first document. Errors that stop the parse (syntax, encoding, depth,
 * size) return -1; others (aliases, anchors, tags, more documents) are reported and the tree is
 * still returned, so the walk can report the rest. *root may be NULL (empty file). */
int yt_parse(const char *text, size_t len, const char *file, atom_diags *diags, yt_node **root);
void yt_free(yt_node *node);
const char *yt_type_name(const yt_node *node);

/* ---- the walk over the tree (spec.c) and the conversion of values (spec_values.c) ---- */

#define SPEC_MAX_DIAGS 100 /* past this many errors a file is garbage: stop listing */

typedef struct spec_walk {
    const char *file;
    const char *base_dir;
    atom_spec *spec;
    atom_diags *diags;
    int first_diag;  /* diags->count when the walk began */
    bool too_many;   /* SPEC_MAX_DIAGS reached: the rest is dropped */
    spec_pos pos;
} spec_walk;

/* Adds a diagnostic at node `at` (NULL: the whole file), up to SPEC_MAX_DIAGS. */
void spec_walk_err(spec_walk *w, const yt_node *at, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Converts v into the field of key idx; records where the file set it. */
void spec_set_value(spec_walk *w, int idx, const yt_node *v);
/* A scalar as a message can show it (at most 40 bytes, odd bytes as \xNN). */
const char *spec_show(const yt_node *n, char *buf, size_t size);
/* What was found instead: "a mapping", "the string \"4\"", "'fast'". */
const char *spec_describe(const yt_node *n, char *buf, size_t size);
/* "a, b, c" */
void spec_list_words(char *out, size_t size, const char *const *words, int count);

#endif
