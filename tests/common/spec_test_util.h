/* tests/common/spec_test_util.h: parse a YAML string and look for one diagnostic. */
#ifndef SPEC_TEST_UTIL_H
#define SPEC_TEST_UTIL_H

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/common.h"

/* A valid first line, so that cases can add one bad line without "data.path is required". */
#define DATA_LINE "data: {path: /usr/share/common-licenses/GPL-3}\n"

static inline int parse_str(const char *yaml, atom_spec *spec, atom_diags *d)
{
    return atom_spec_parse(yaml, strlen(yaml), "t.yaml", "/base", spec, d);
}

/* The diagnostic at line:column for key whose message contains `part`, or NULL. */
static inline const atom_diag *find_diag(const atom_diags *d, int line, int column, const char *key,
                                         const char *part)
{
    for (int i = 0; i < d->count; i++) {
        const atom_diag *g = &d->items[i];
        if (g->line == line && g->column == column && strcmp(g->key, key) == 0 &&
            strstr(g->msg, part) && strcmp(g->file, "t.yaml") == 0)
            return g;
    }
    return NULL;
}

static inline void dump_diags(const atom_diags *d)
{
    atom_diags_print(d, stderr);
}

/* A table case's verdict: parsing failed (rc != 0) with that diagnostic among d's. When not, says
 * what was expected and prints what came, so one run shows every failing case. */
static inline bool diag_as_expected(const char *what, int rc, const atom_diags *d, int line,
                                    int column, const char *key, const char *part)
{
    if (rc != 0 && find_diag(d, line, column, key, part))
        return true;
    fprintf(stderr, "case '%s': expected t.yaml:%d:%d: %s: ...%s... (rc %d), got:\n", what, line,
            column, key, part, rc);
    dump_diags(d);
    return false;
}

#endif
