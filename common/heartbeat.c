/* common/heartbeat.c: the heartbeat message every rank sends atomd, one JSON object per message:
 *
 *   {"type": "heartbeat", "job_id": "j42", "attempt": 0, "rank": 3, "host": "gpu007", "pid": 1234,
 *    "step": 120, "collectives": [361, 240, 121], "time": 1795442400.25,
 *    "loss": 3.21, "tokens_per_s": 51234.5, "last_checkpoint_step": 100}
 *
 * The progress fields (loss, tokens_per_s, last_checkpoint_step) are sent by rank 0 only, all
 * three or none; so are, once its restore fell back past checkpoints that failed to load,
 * "ckpt_skipped" (how many), "ckpt_skipped_step" (the newest) and "ckpt_skipped_why" (its
 * error, printable ASCII: it reaches `atomctl show` and the metrics' readers). They sit at the
 * top level so that a reader can pick "loss" without nesting. A loss that is not a finite
 * number (a diverged run) is sent as null, since JSON has no NaN, and read back as NaN. atomd
 * trusts nothing it reads: every field is checked for type and range.
 */
#include "common/json_get.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define HB_TYPE "heartbeat"

static json_t *finite_or_null(double x)
{
    return isfinite(x) ? json_real(x) : json_null();
}

/* Printable ASCII only: the text is shown on other users' terminals and must stay valid
 * UTF-8 after truncation (a cut multi-byte character would make jansson refuse it). */
static void printable(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
            *s = '?';
}

char *atom_heartbeat_to_json(const atom_heartbeat *hb)
{
    json_t *coll = json_array();
    if (!coll)
        return NULL;
    for (int i = 0; i < ATOM_HB_GROUPS; i++)
        json_array_append_new(coll, json_integer(hb->collectives[i]));
    json_t *root = json_pack("{s:s, s:s, s:i, s:i, s:s, s:i, s:I, s:o, s:o}", "type", HB_TYPE,
                             "job_id", hb->job_id, "attempt", hb->attempt, "rank", hb->rank,
                             "host", hb->host, "pid", hb->pid, "step", (json_int_t)hb->step,
                             "collectives", coll, "time", finite_or_null(hb->time));
    if (!root)
        return NULL;
    if (hb->has_progress) {
        json_object_set_new(root, "loss", finite_or_null(hb->loss));
        json_object_set_new(root, "tokens_per_s", finite_or_null(hb->tokens_per_s));
        json_object_set_new(root, "last_checkpoint_step",
                            json_integer((json_int_t)hb->last_checkpoint_step));
    }
    if (hb->ckpt_skipped > 0) {
        char why[ATOM_HB_WHY_MAX];
        snprintf(why, sizeof why, "%s", hb->ckpt_skipped_why);
        printable(why);
        json_object_set_new(root, "ckpt_skipped", json_integer(hb->ckpt_skipped));
        json_object_set_new(root, "ckpt_skipped_step",
                            json_integer((json_int_t)hb->ckpt_skipped_step));
        json_object_set_new(root, "ckpt_skipped_why", json_string(why));
    }
    char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    return text;
}

/* A number (integer or real), or null for "not a number"; nothing else. */
static int get_number_or_null(json_t *obj, const char *key, double *dst, atom_err *err)
{
    json_t *v = json_object_get(obj, key);
    if (json_is_null(v)) {
        *dst = NAN;
        return 0;
    }
    if (!json_is_number(v))
        return atom_errf(err, "heartbeat: '%s' must be a number", key);
    *dst = json_number_value(v);
    return 0;
}

static int heartbeat_from_root(json_t *root, atom_heartbeat *hb, atom_err *err)
{
    if (!json_is_object(root))
        return atom_errf(err, "heartbeat: expected a JSON object");
    json_t *type = json_object_get(root, "type");
    if (!json_is_string(type) || strcmp(json_string_value(type), HB_TYPE))
        return atom_errf(err, "heartbeat: \"type\" must be \"%s\"", HB_TYPE);
    if (atom_json_get_str(root, "job_id", hb->job_id, sizeof hb->job_id, "heartbeat: ", err) ||
        atom_json_get_int(root, "attempt", 0, 1 << 30, &hb->attempt, "heartbeat: ", err) ||
        atom_json_get_int(root, "rank", 0, 1 << 24, &hb->rank, "heartbeat: ", err) ||
        atom_json_get_str(root, "host", hb->host, sizeof hb->host, "heartbeat: ", err) ||
        atom_json_get_int(root, "pid", 1, 1 << 30, &hb->pid, "heartbeat: ", err) ||
        atom_json_get_i64(root, "step", 0, INT64_MAX, &hb->step, "heartbeat: ", err))
        return -1;
    json_t *coll = json_object_get(root, "collectives");
    if (!json_is_array(coll) || json_array_size(coll) != ATOM_HB_GROUPS)
        return atom_errf(err, "heartbeat: 'collectives' must be a list of %d counts (world, "
                         "tensor, data)", ATOM_HB_GROUPS);
    for (int i = 0; i < ATOM_HB_GROUPS; i++) {
        json_t *c = json_array_get(coll, (size_t)i);
        if (!json_is_integer(c) || json_integer_value(c) < 0)
            return atom_errf(err, "heartbeat: collectives[%d] must be a count (0 or more)", i);
        hb->collectives[i] = json_integer_value(c);
    }
    if (get_number_or_null(root, "time", &hb->time, err))
        return -1;
    if (!isfinite(hb->time) || hb->time < 0)
        return atom_errf(err, "heartbeat: 'time' must be seconds since the epoch");
    /* All three progress fields, or none of them. */
    int present = (json_object_get(root, "loss") != NULL) +
                  (json_object_get(root, "tokens_per_s") != NULL) +
                  (json_object_get(root, "last_checkpoint_step") != NULL);
    if (present != 0 && present != 3)
        return atom_errf(err, "heartbeat: loss, tokens_per_s and last_checkpoint_step come "
                         "together (got %d of 3)", present);
    hb->has_progress = present == 3;
    hb->last_checkpoint_step = -1;
    if (hb->has_progress) {
        if (get_number_or_null(root, "loss", &hb->loss, err) ||
            get_number_or_null(root, "tokens_per_s", &hb->tokens_per_s, err) ||
            atom_json_get_i64(root, "last_checkpoint_step", -1, INT64_MAX, &hb->last_checkpoint_step,
                              "heartbeat: ", err))
            return -1;
        if (isfinite(hb->tokens_per_s) && hb->tokens_per_s < 0)
            return atom_errf(err, "heartbeat: 'tokens_per_s' is negative");
    }
    /* The skipped checkpoint: all three fields, or none. */
    present = (json_object_get(root, "ckpt_skipped") != NULL) +
              (json_object_get(root, "ckpt_skipped_step") != NULL) +
              (json_object_get(root, "ckpt_skipped_why") != NULL);
    if (present != 0 && present != 3)
        return atom_errf(err, "heartbeat: ckpt_skipped, ckpt_skipped_step and ckpt_skipped_why "
                         "come together (got %d of 3)", present);
    if (present == 3) {
        if (atom_json_get_int(root, "ckpt_skipped", 1, 1 << 30, &hb->ckpt_skipped, "heartbeat: ",
                              err) ||
            atom_json_get_i64(root, "ckpt_skipped_step", 0, INT64_MAX, &hb->ckpt_skipped_step,
                              "heartbeat: ", err) ||
            atom_json_get_str(root, "ckpt_skipped_why", hb->ckpt_skipped_why,
                              sizeof hb->ckpt_skipped_why, "heartbeat: ", err))
            return -1;
        printable(hb->ckpt_skipped_why);
    }
    return 0;
}

int atom_heartbeat_from_json(const char *json, atom_heartbeat *hb, atom_err *err)
{
    memset(hb, 0, sizeof *hb);
    json_error_t jerr;
    json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return atom_errf(err, "heartbeat: not valid JSON at line %d, column %d: %s", jerr.line,
                         jerr.column, jerr.text);
    int rc = heartbeat_from_root(root, hb, err);
    json_decref(root);
    if (rc)
        memset(hb, 0, sizeof *hb);
    return rc;
}
