/* common/spec_json.c: the normalised spec as JSON and back (the plan file embeds it, atomctl sends
 * it to atomd). Same sections and key names as the YAML, every key written, enums as their names,
 * durations as seconds; doubles are printed with 15 significant digits when that is exact and 17
 * otherwise, so they always come back bit-identical. Reading is strict: an unknown key or a wrong
 * type is an error, because the writer is atom itself and a mismatch means two versions disagree.
 */
#include "common/spec_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *value_to_json(const spec_key *k, const atom_spec *spec)
{
    const char *field = (const char *)spec + k->offset;
    switch (k->kind) {
    case SPEC_INT: return json_integer(*(const int *)(const void *)field);
    case SPEC_I64:
    case SPEC_DURATION: return json_integer(*(const int64_t *)(const void *)field);
    case SPEC_U64: return json_integer((json_int_t) * (const uint64_t *)(const void *)field);
    case SPEC_F64: return json_real(*(const double *)(const void *)field);
    case SPEC_BOOL: return json_boolean(*(const bool *)(const void *)field);
    case SPEC_NAME:
    case SPEC_PATH:
    case SPEC_PRESET: return json_string(field);
    case SPEC_DEVICE:
    case SPEC_FORMAT:
    case SPEC_SCHEDULE:
    case SPEC_COOLDOWN:
    case SPEC_INIT_LOAD:
    case SPEC_PRECISION: {
        const char *name = atom_spec_enum_name(k->kind, *(const int *)(const void *)field);
        return json_string(name ? name : "?");
    }
    }
    return NULL;
}

/* Whether every double of the spec survives 15 significant digits: then the JSON says 0.0003,
 * not 0.00029999999999999997, and still reads back to the same bits. */
static bool short_reals(const atom_spec *spec)
{
    for (int i = 0; i < atom_spec_nkeys; i++) {
        const spec_key *k = &atom_spec_keys[i];
        if (k->kind != SPEC_F64)
            continue;
        double v = *(const double *)(const void *)((const char *)spec + k->offset);
        char buf[40];
        snprintf(buf, sizeof buf, "%.15g", v);
        if (strtod(buf, NULL) != v)
            return false;
    }
    return true;
}

char *atom_spec_to_json(const atom_spec *spec)
{
    json_t *root = json_object();
    if (!root)
        return NULL;
    for (int i = 0; i < atom_spec_nkeys; i++) {
        const spec_key *k = &atom_spec_keys[i];
        json_t *obj = root;
        if (*k->section) {
            obj = json_object_get(root, k->section);
            if (!obj) {
                obj = json_object();
                json_object_set_new(root, k->section, obj);
            }
        }
        json_object_set_new(obj, k->key, value_to_json(k, spec));
    }
    char *text = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(short_reals(spec) ? 15 : 17));
    json_decref(root);
    return text;
}

static int value_from_json(const spec_key *k, json_t *v, atom_spec *spec, atom_err *err)
{
    char *field = (char *)spec + k->offset;
    switch (k->kind) {
    case SPEC_INT:
    case SPEC_I64:
    case SPEC_U64:
    case SPEC_DURATION: {
        if (!json_is_integer(v))
            return atom_errf(err, "spec JSON: %s: expected an integer", k->dotted);
        json_int_t x = json_integer_value(v);
        if (x < k->imin || x > k->imax)
            return atom_errf(err, "spec JSON: %s: %lld is out of range", k->dotted, (long long)x);
        if (k->kind == SPEC_INT)
            *(int *)(void *)field = (int)x;
        else if (k->kind == SPEC_U64)
            *(uint64_t *)(void *)field = (uint64_t)x;
        else
            *(int64_t *)(void *)field = x;
        return 0;
    }
    case SPEC_F64:
        if (!json_is_number(v))
            return atom_errf(err, "spec JSON: %s: expected a number", k->dotted);
        *(double *)(void *)field = json_number_value(v);
        return 0;
    case SPEC_BOOL:
        if (!json_is_boolean(v))
            return atom_errf(err, "spec JSON: %s: expected true or false", k->dotted);
        *(bool *)(void *)field = json_is_true(v);
        return 0;
    case SPEC_NAME:
    case SPEC_PRESET:
    case SPEC_PATH: {
        size_t cap = k->kind == SPEC_PATH ? ATOM_PATH_MAX : ATOM_NAME_MAX;
        if (!json_is_string(v) || json_string_length(v) >= cap ||
            strlen(json_string_value(v)) != json_string_length(v))
            return atom_errf(err, "spec JSON: %s: expected a string of fewer than %zu bytes",
                             k->dotted, cap);
        memset(field, 0, cap);
        memcpy(field, json_string_value(v), json_string_length(v));
        return 0;
    }
    case SPEC_DEVICE:
    case SPEC_FORMAT:
    case SPEC_SCHEDULE:
    case SPEC_COOLDOWN:
    case SPEC_INIT_LOAD:
    case SPEC_PRECISION: {
        int x = json_is_string(v) ? atom_spec_enum_value(k->kind, json_string_value(v)) : -1;
        if (x < 0)
            return atom_errf(err, "spec JSON: %s: unknown value", k->dotted);
        *(int *)(void *)field = x;
        return 0;
    }
    }
    return atom_errf(err, "spec JSON: %s: unsupported", k->dotted);
}

static int object_from_json(const char *section, json_t *obj, atom_spec *spec, atom_err *err)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        if (!*section && json_is_object(v)) {
            int s = 0;
            while (atom_spec_sections[s] && strcmp(atom_spec_sections[s], key) != 0)
                s++;
            if (!atom_spec_sections[s])
                return atom_errf(err, "spec JSON: unknown section '%s'", key);
            if (object_from_json(atom_spec_sections[s], v, spec, err) != 0)
                return -1;
            continue;
        }
        int idx = atom_spec_key_find(section, key);
        if (idx < 0)
            return atom_errf(err, "spec JSON: unknown key '%s%s%s'", section, *section ? "." : "",
                             key);
        if (value_from_json(&atom_spec_keys[idx], v, spec, err) != 0)
            return -1;
    }
    return 0;
}

int atom_spec_from_json(const char *json, atom_spec *spec, atom_err *err)
{
    json_error_t jerr;
    atom_spec_defaults(spec);
    json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return atom_errf(err, "spec JSON: line %d column %d: %s", jerr.line, jerr.column,
                         jerr.text);
    int rc = json_is_object(root) ? object_from_json("", root, spec, err)
                                  : atom_errf(err, "spec JSON: expected an object");
    json_decref(root);
    return rc;
}
