/* common/json_get.h: copying members of a JSON object into fixed C fields (private to common/:
 * the plan file and the heartbeat message read their members the same way). The error names the
 * member after `what`, a prefix such as "heartbeat: " or "plan: nodes[2].". */
#ifndef ATOM_COMMON_JSON_GET_H
#define ATOM_COMMON_JSON_GET_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

/* A string member into dst (cap bytes with the NUL); missing, not a string or too long: error. */
int atom_json_get_str(json_t *obj, const char *key, char *dst, size_t cap, const char *what,
                      atom_err *err);
/* A whole-number member within lo..hi. */
int atom_json_get_i64(json_t *obj, const char *key, int64_t lo, int64_t hi, int64_t *dst,
                      const char *what, atom_err *err);
int atom_json_get_int(json_t *obj, const char *key, int lo, int hi, int *dst, const char *what,
                      atom_err *err);

#endif
