/* common/spec_values.c: one YAML value into one field of the spec, strictly: an integer is
 * digits only (a quoted "4" is a string, 4.0 and 1e3 are not integers, 99999999999999999999 is
 * out of range, not wrapped), numbers are decimal (no .inf or .nan), names keep to a safe
 * alphabet, paths resolve against the spec's folder (~/ against the loading user's home),
 * durations read "1h30m" or "01:30:00", and enumerations and presets name their valid values
 * and the nearest one. */
#include "common/spec_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A scalar as it can be shown in a message: at most 40 bytes, control and non-ASCII bytes as
 * \xNN, so that garbage input cannot garble the terminal. */
const char *spec_show(const yt_node *n, char *buf, size_t size)
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
const char *spec_describe(const yt_node *n, char *buf, size_t size)
{
    if (!n || n->type != YT_SCALAR)
        return yt_type_name(n);
    char shown[200];
    snprintf(buf, size, n->quoted ? "the string \"%s\"" : "'%s'",
             spec_show(n, shown, sizeof shown));
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
    static const char *const yes[] = {"true", "True", "TRUE", "yes", "Yes",
                                      "YES",  "on",   "On",   "ON"};
    static const char *const no[] = {"false", "False", "FALSE", "no", "No",
                                     "NO",    "off",   "Off",   "OFF"};
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
        spec_walk_err(w, v, k->dotted, "expected an integer, got %s",
                      spec_describe(v, buf, sizeof buf));
        return -1;
    }
    if (!is_decimal_int(v->text)) {
        if (is_decimal_float(v->text, v->len, &d))
            spec_walk_err(w, v, k->dotted, "expected an integer (digits only), got the number %s",
                          spec_show(v, buf, sizeof buf));
        else if (is_bool_word(v->text, &b))
            spec_walk_err(w, v, k->dotted, "expected an integer, got the boolean %s",
                          spec_show(v, buf, sizeof buf));
        else
            spec_walk_err(w, v, k->dotted, "expected an integer, got %s",
                          spec_describe(v, buf, sizeof buf));
        return -1;
    }
    errno = 0;
    long long x = strtoll(v->text, NULL, 10);
    if (errno == ERANGE || x < k->imin || x > k->imax) {
        if (errno != ERANGE && x < k->imin && k->imin >= 0)
            spec_walk_err(w, v, k->dotted, "must be %s%lld or more, got %s",
                          x < 0 ? "a count: " : "", (long long)k->imin,
                          spec_show(v, buf, sizeof buf));
        else
            spec_walk_err(w, v, k->dotted, "%s is out of range: must be between %lld and %lld",
                          spec_show(v, buf, sizeof buf), (long long)k->imin, (long long)k->imax);
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
        spec_walk_err(w, v, k->dotted, "expected a number, got %s",
                      spec_describe(v, buf, sizeof buf));
        return -1;
    }
    if (!isfinite(d) || d < k->fmin || d > k->fmax || (k->positive && d <= k->fmin)) {
        spec_walk_err(w, v, k->dotted, "%s is out of range: must be %s %g and at most %g",
                      spec_show(v, buf, sizeof buf), k->positive ? "more than" : "at least",
                      k->fmin, k->fmax);
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
        spec_walk_err(w, v, k->dotted, "expected %s, got %s", what,
                      spec_describe(v, buf, sizeof buf));
        return NULL;
    }
    if (strlen(v->text) != v->len) {
        spec_walk_err(w, v, k->dotted, "%s holds a NUL byte", spec_show(v, buf, sizeof buf));
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
        spec_walk_err(w, v, k->dotted,
                      "'%s' is not a valid name: use 1 to %d of the characters A-Z a-z 0-9 . _ -",
                      spec_show(v, buf, sizeof buf), ATOM_NAME_MAX - 1);
        return -1;
    }
    /* Zero the whole field: specs are compared with memcmp after a JSON round trip. */
    memset(field, 0, ATOM_NAME_MAX);
    memcpy(field, s, len);
    return 0;
}

static int set_path(spec_walk *w, const spec_key *k, const yt_node *v, char *field)
{
    char buf[256];
    const char *s = get_text(w, k, v, "a path");
    if (!s)
        return -1;
    if (!*s && field != w->spec->data.path) {
        /* "" is what the JSON of a spec holds for an optional path it does not set (no
         * checkpoints, no init source): unset. Only data.path is required. */
        memset(field, 0, ATOM_PATH_MAX);
        return 0;
    }
    if (!*s) {
        spec_walk_err(w, v, k->dotted, "the path is empty");
        return -1;
    }
    /* "~/..." is the home of the user who loads the spec (atomctl, atom-srun: the job's owner),
     * as a shell would expand it; "~user" is not (its home is another user's). */
    char home[ATOM_PATH_MAX];
    bool tilde = s[0] == '~' && (s[1] == '/' || s[1] == '\0');
    if (s[0] == '~' && !tilde) {
        spec_walk_err(w, v, k->dotted, "'%s': only ~/ (your own home) is expanded, not ~user",
                      spec_show(v, buf, sizeof buf));
        return -1;
    }
    atom_err herr = {{0}};
    if (tilde && atom_user_home(home, sizeof home, &herr) != 0) {
        spec_walk_err(w, v, k->dotted, "cannot expand ~: %s", herr.msg);
        return -1;
    }
    /* Relative paths mean "next to the spec", whatever folder atomctl runs in. */
    while (s[0] == '.' && s[1] == '/')
        s += 2;
    memset(field, 0, ATOM_PATH_MAX);
    int n;
    if (tilde)
        n = snprintf(field, ATOM_PATH_MAX, "%s%s", home, s + 1);
    else if (s[0] != '/' && w->base_dir && w->base_dir[0])
        n = snprintf(field, ATOM_PATH_MAX, "%s/%s", w->base_dir, *s ? s : ".");
    else
        n = snprintf(field, ATOM_PATH_MAX, "%s", *s ? s : ".");
    if (n < 0 || n >= ATOM_PATH_MAX) {
        field[0] = '\0';
        spec_walk_err(w, v, k->dotted, "the path is longer than %d bytes", ATOM_PATH_MAX - 1);
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
        spec_walk_err(
            w, v, k->dotted,
            "expected a duration such as 90s, 30m, 2h, 1d, 1h30m, 01:30:00 or a number of "
            "seconds, got %s",
            spec_describe(v, buf, sizeof buf));
        return -1;
    }
    if (secs < k->imin || secs > k->imax) {
        spec_walk_err(w, v, k->dotted, "%s is out of range: must be between %llds and %llds",
                      spec_show(v, buf, sizeof buf), (long long)k->imin, (long long)k->imax);
        return -1;
    }
    *field = secs;
    return 0;
}

void spec_list_words(char *out, size_t size, const char *const *words, int count)
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
        spec_list_words(valid, sizeof valid, names, count);
        const char *near = atom_spec_nearest(s, names, count);
        spec_walk_err(w, v, k->dotted, "unknown value '%s'%s%s%s; expected one of: %s",
                      spec_show(v, buf, sizeof buf), near ? " (did you mean '" : "",
                      near ? near : "", near ? "'?)" : "", valid);
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
        spec_list_words(valid, sizeof valid, names, count);
        const char *near = atom_spec_nearest(s, names, count);
        spec_walk_err(w, v, k->dotted, "unknown model preset '%s'%s%s%s; presets: %s",
                      spec_show(v, buf, sizeof buf), near ? " (did you mean '" : "",
                      near ? near : "", near ? "'?)" : "", valid);
        return -1;
    }
    memset(w->spec->model_preset, 0, sizeof w->spec->model_preset);
    snprintf(w->spec->model_preset, sizeof w->spec->model_preset, "%s", s);
    w->spec->model = cfg;
    return 0;
}

/* Converts v into the field of key k; records where the file set it. */
void spec_set_value(spec_walk *w, int idx, const yt_node *v)
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
        spec_walk_err(w, v, k->dotted, "has no value (leave the key out to get the default)");
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
            spec_walk_err(w, v, k->dotted, "expected true or false, got %s",
                          spec_describe(v, buf, sizeof buf));
        }
        break;
    }
    case SPEC_NAME: rc = set_name(w, k, v, field); break;
    case SPEC_PATH: rc = set_path(w, k, v, field); break;
    case SPEC_DURATION: rc = set_duration(w, k, v, (int64_t *)(void *)field); break;
    case SPEC_DEVICE:
    case SPEC_FORMAT:
    case SPEC_SCHEDULE:
    case SPEC_COOLDOWN:
    case SPEC_INIT_LOAD:
    case SPEC_PRECISION: {
        int value;
        if ((rc = set_choice(w, k, v, &value)) == 0) {
            if (k->kind == SPEC_DEVICE) *(atom_device *)(void *)field = (atom_device)value;
            if (k->kind == SPEC_FORMAT)
                *(atom_data_format *)(void *)field = (atom_data_format)value;
            if (k->kind == SPEC_SCHEDULE)
                *(atom_lr_schedule *)(void *)field = (atom_lr_schedule)value;
            if (k->kind == SPEC_PRECISION)
                *(atom_precision *)(void *)field = (atom_precision)value;
            if (k->kind == SPEC_COOLDOWN)
                *(atom_cooldown_shape *)(void *)field = (atom_cooldown_shape)value;
            if (k->kind == SPEC_INIT_LOAD)
                *(atom_init_load *)(void *)field = (atom_init_load)value;
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
