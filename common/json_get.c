/* common/json_get.c: copying members of a JSON object into fixed C fields (see json_get.h). */
#include "common/json_get.h"

#include <string.h>

int atom_json_get_str(json_t *obj, const char *key, char *dst, size_t cap, const char *what,
                      atom_err *err)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v))
        return atom_errf(err, "%s'%s' must be a string", what, key);
    const char *s = json_string_value(v);
    size_t len = strlen(s);
    if (len >= cap)
        return atom_errf(err, "%s'%s' is longer than %zu characters", what, key, cap - 1);
    memcpy(dst, s, len + 1);
    return 0;
}

int atom_json_get_i64(json_t *obj, const char *key, int64_t lo, int64_t hi, int64_t *dst,
                      const char *what, atom_err *err)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v))
        return atom_errf(err, "%s'%s' must be a whole number", what, key);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return atom_errf(err, "%s'%s' is %lld, outside %lld..%lld", what, key, (long long)x,
                         (long long)lo, (long long)hi);
    *dst = x;
    return 0;
}

int atom_json_get_int(json_t *obj, const char *key, int lo, int hi, int *dst, const char *what,
                      atom_err *err)
{
    int64_t x = 0;
    if (atom_json_get_i64(obj, key, lo, hi, &x, what, err))
        return -1;
    *dst = (int)x;
    return 0;
}
