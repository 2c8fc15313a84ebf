/* common/diag.c: a growing list of file:line:column diagnostics, so that a spec or an inventory
 * reports every mistake at once instead of the first only. */
#include "common/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void atom_diags_add(atom_diags *d, const char *file, int line, int column, const char *key,
                    const char *fmt, ...)
{
    if (d->count == d->cap) {
        int ncap = d->cap ? d->cap * 2 : 8;
        atom_diag *items = realloc(d->items, (size_t)ncap * sizeof *items);
        if (!items)
            return; /* out of memory: the diagnostics already listed still stand */
        d->items = items;
        d->cap = ncap;
    }
    atom_diag *g = &d->items[d->count++];
    snprintf(g->file, sizeof g->file, "%s", file ? file : "<spec>");
    g->line = line;
    g->column = column;
    snprintf(g->key, sizeof g->key, "%s", key ? key : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->msg, sizeof g->msg, fmt, ap);
    va_end(ap);
}

void atom_diags_print(const atom_diags *d, void *stream)
{
    FILE *out = stream;
    for (int i = 0; i < d->count; i++) {
        const atom_diag *g = &d->items[i];
        if (g->line > 0)
            fprintf(out, "%s:%d:%d: ", g->file, g->line, g->column);
        else
            fprintf(out, "%s: ", g->file);
        if (g->key[0])
            fprintf(out, "%s: ", g->key);
        fprintf(out, "%s\n", g->msg);
    }
}

void atom_diags_free(atom_diags *d)
{
    free(d->items);
    d->items = NULL;
    d->count = d->cap = 0;
}
