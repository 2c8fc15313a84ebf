/* common/spec_yaml.c: YAML text to a small tree of positioned nodes, through libyaml's event API.
 *
 * A job spec is plain data, so the features that make YAML dangerous or surprising are refused
 * here with a position: aliases (a few lines of nested aliases expand to gigabytes, the "billion
 * laughs"), anchors, explicit tags, documents after the first, nesting deeper than any spec needs,
 * and more nodes than any spec needs. Syntax and encoding errors (invalid UTF-8, control bytes)
 * come from libyaml itself with its position. */
#include "common/spec_internal.h"

#include <stdlib.h>
#include <string.h>
#include <yaml.h>

typedef struct yt_builder {
    const char *file;
    atom_diags *diags;
    yt_node *root;
    yt_node *stack[YT_MAX_DEPTH + 1];
    int depth;
    int nodes;
    int first_diag; /* diags->count at the start: the errors of this parse are counted */
} yt_builder;

/* Whether fewer than SPEC_MAX_DIAGS errors were found: past that (a file of aliases, say) the
 * parse stops, so a hostile file cannot make an unbounded list. */
static bool yt_err_room(const yt_builder *b)
{
    return b->diags->count - b->first_diag < SPEC_MAX_DIAGS;
}

static yt_node *node_new(yt_type type, const yaml_mark_t *mark)
{
    yt_node *n = calloc(1, sizeof *n);
    if (n) {
        n->type = type;
        n->line = (int)mark->line + 1;
        n->column = (int)mark->column + 1;
    }
    return n;
}

void yt_free(yt_node *node)
{
    if (!node)
        return;
    for (int i = 0; i < node->n; i++)
        yt_free(node->items[i]);
    free(node->items);
    free(node->text);
    free(node);
}

const char *yt_type_name(const yt_node *node)
{
    if (!node)
        return "nothing";
    switch (node->type) {
    case YT_NULL: return "an empty value";
    case YT_SCALAR: return "a scalar";
    case YT_MAP: return "a mapping";
    case YT_SEQ: return "a sequence";
    }
    return "?";
}

/* Hangs n under the innermost open container (or makes it the root). Takes ownership. */
static int attach(yt_builder *b, yt_node *n)
{
    if (b->depth == 0) {
        if (b->root) { /* cannot happen within one document; be safe */
            yt_free(n);
            return 0;
        }
        b->root = n;
        return 0;
    }
    yt_node *parent = b->stack[b->depth - 1];
    if (parent->n == parent->cap) {
        int ncap = parent->cap ? parent->cap * 2 : 8;
        yt_node **items = realloc(parent->items, (size_t)ncap * sizeof *items);
        if (!items) {
            yt_free(n);
            return -1;
        }
        parent->items = items;
        parent->cap = ncap;
    }
    parent->items[parent->n++] = n;
    return 0;
}

static bool is_null_scalar(const yaml_event_t *ev)
{
    if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *v = (const char *)ev->data.scalar.value;
    return ev->data.scalar.length == 0 || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
           strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

/* The dotted key of the node about to be attached ("training.lr", "x[3]"): in a mapping with
 * a key waiting for its value, that key; in a sequence, the next index. Best effort for
 * messages: keys that are not plain scalars, or paths over 120 bytes, are cut short. */
static const char *node_path(const yt_builder *b, char *buf, size_t size)
{
    size_t o = 0;
    buf[0] = '\0';
    for (int i = 0; i < b->depth && o + 16 < size; i++) {
        const yt_node *c = b->stack[i];
        /* An outer container already holds the open child as its last item; the innermost one
         * holds only what came before the node being attached. */
        int held = i < b->depth - 1 ? c->n - 1 : c->n;
        int n;
        if (c->type == YT_SEQ) {
            n = snprintf(buf + o, size - o, "[%d]", held);
        } else if (held % 2 == 1 && c->items[held - 1]->type == YT_SCALAR) {
            const yt_node *k = c->items[held - 1];
            n = snprintf(buf + o, size - o, "%s%.*s", o ? "." : "",
                         (int)(k->len > 40 ? 40 : k->len), k->text);
        } else {
            break;
        }
        if (n < 0 || (size_t)n >= size - o)
            break;
        o += (size_t)n;
    }
    /* Keys come from the input: keep only printable ASCII in what goes to a terminal. */
    for (size_t i = 0; i < o; i++)
        if ((unsigned char)buf[i] < 0x20 || (unsigned char)buf[i] >= 0x7f)
            buf[i] = '?';
    return buf;
}

/* Anchors and explicit tags on a node: reported, the node itself is kept. */
static void check_decorations(yt_builder *b, const yaml_event_t *ev, const yaml_char_t *anchor,
                              const yaml_char_t *tag, bool implicit_tag)
{
    int line = (int)ev->start_mark.line + 1, col = (int)ev->start_mark.column + 1;
    char path[128];
    if (anchor || (tag && !implicit_tag))
        node_path(b, path, sizeof path);
    if (anchor)
        atom_diags_add(b->diags, b->file, line, col, path,
                       "anchor '&%.64s' is not allowed in a job spec (anchors and aliases are "
                       "refused: write each value out)", (const char *)anchor);
    if (tag && !implicit_tag)
        atom_diags_add(b->diags, b->file, line, col, path,
                       "tag '%.64s' is not allowed in a job spec (write the plain value)",
                       (const char *)tag);
}

/* 0, or -1 out of memory, or -2 an error already reported; both stop the parse. */
static int on_event(yt_builder *b, const yaml_event_t *ev, int *documents, bool *done)
{
    int line = (int)ev->start_mark.line + 1, col = (int)ev->start_mark.column + 1;
    char path[128];
    yt_node *n = NULL;
    switch (ev->type) {
    case YAML_DOCUMENT_START_EVENT:
        if (++*documents > 1) {
            atom_diags_add(b->diags, b->file, line, col, "",
                           "a job spec is one YAML document; a second one ('---') starts here");
            *done = true;
        }
        return 0;
    case YAML_STREAM_END_EVENT:
    case YAML_DOCUMENT_END_EVENT:
        if (ev->type == YAML_STREAM_END_EVENT)
            *done = true;
        return 0;
    case YAML_ALIAS_EVENT:
        atom_diags_add(b->diags, b->file, line, col, node_path(b, path, sizeof path),
                       "alias '*%.64s' is not allowed in a job spec (aliases can expand without "
                       "bound; write the value out)", (const char *)ev->data.alias.anchor);
        n = node_new(YT_NULL, &ev->start_mark); /* keeps key/value pairs aligned */
        if (n)
            n->refused = true;
        break;
    case YAML_SCALAR_EVENT:
        check_decorations(b, ev, ev->data.scalar.anchor, ev->data.scalar.tag,
                          ev->data.scalar.plain_implicit || ev->data.scalar.quoted_implicit);
        if (is_null_scalar(ev)) {
            n = node_new(YT_NULL, &ev->start_mark);
            break;
        }
        n = node_new(YT_SCALAR, &ev->start_mark);
        if (n) {
            n->len = ev->data.scalar.length;
            n->text = malloc(n->len + 1);
            if (!n->text) {
                free(n);
                return -1;
            }
            memcpy(n->text, ev->data.scalar.value, n->len);
            n->text[n->len] = '\0';
            n->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
        }
        break;
    case YAML_MAPPING_START_EVENT:
    case YAML_SEQUENCE_START_EVENT: {
        bool map = ev->type == YAML_MAPPING_START_EVENT;
        if (map)
            check_decorations(b, ev, ev->data.mapping_start.anchor, ev->data.mapping_start.tag,
                              ev->data.mapping_start.implicit);
        else
            check_decorations(b, ev, ev->data.sequence_start.anchor, ev->data.sequence_start.tag,
                              ev->data.sequence_start.implicit);
        if (b->depth == YT_MAX_DEPTH) {
            atom_diags_add(b->diags, b->file, line, col, node_path(b, path, sizeof path),
                           "nesting deeper than %d levels (a job spec needs 2)", YT_MAX_DEPTH);
            return -2; /* reported */
        }
        n = node_new(map ? YT_MAP : YT_SEQ, &ev->start_mark);
        if (!n || attach(b, n) != 0)
            return -1;
        b->stack[b->depth++] = n;
        b->nodes++;
        return 0;
    }
    case YAML_MAPPING_END_EVENT:
    case YAML_SEQUENCE_END_EVENT:
        if (b->depth > 0)
            b->depth--;
        return 0;
    default:
        return 0;
    }
    if (!n || attach(b, n) != 0)
        return -1;
    b->nodes++;
    return 0;
}

/* 1-based line and column (in characters) of byte `offset`. */
static void offset_position(const char *text, size_t len, size_t offset, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < offset && i < len; i++) {
        if (text[i] == '\n' || (text[i] == '\r' && (i + 1 >= len || text[i + 1] != '\n'))) {
            ++*line;
            *col = 1;
        } else if (((unsigned char)text[i] & 0xC0) != 0x80) { /* not a UTF-8 continuation byte */
            ++*col;
        }
    }
}

int yt_parse(const char *text, size_t len, const char *file, atom_diags *diags, yt_node **root)
{
    yt_builder b = {.file = file, .diags = diags, .first_diag = diags->count};
    yaml_parser_t parser;
    *root = NULL;
    if (!yaml_parser_initialize(&parser)) {
        atom_diags_add(diags, file, 0, 0, "", "out of memory");
        return -1;
    }
    /* Spec files are UTF-8; a UTF-16 byte-order mark is not a way to smuggle in other text. */
    yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);

    int rc = 0, documents = 0;
    bool done = false;
    while (!done) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            const char *problem = parser.problem ? parser.problem : "invalid YAML";
            char path[128];
            node_path(&b, path, sizeof path);
            /* libyaml's marks are 0-based; where it has none (reader errors) the offset is. */
            int line = (int)parser.problem_mark.line + 1, col = (int)parser.problem_mark.column + 1;
            if (parser.error == YAML_READER_ERROR) {
                /* The reader runs ahead of the scanner, so its marks say where scanning was,
                 * not where the bad byte is: count from the byte offset instead. */
                offset_position(text, len, parser.problem_offset, &line, &col);
                atom_diags_add(diags, file, line, col, "",
                               "unreadable text (a spec is UTF-8 YAML): %s at byte %zu", problem,
                               parser.problem_offset);
            } else if (parser.context) {
                atom_diags_add(diags, file, line, col, path, "YAML syntax error: %s %s", problem,
                               parser.context);
            } else {
                atom_diags_add(diags, file, line, col, path, "YAML syntax error: %s", problem);
            }
            rc = -1;
            break;
        }
        int erc = on_event(&b, &ev, &documents, &done);
        yaml_event_delete(&ev);
        if (erc != 0) {
            if (erc == -1)
                atom_diags_add(diags, file, 0, 0, "", "out of memory while reading YAML");
            rc = -1;
            break;
        }
        if (!yt_err_room(&b)) {
            atom_diags_add(diags, file, 0, 0, "", "more than %d errors; the rest are not shown",
                           SPEC_MAX_DIAGS);
            rc = -1;
            break;
        }
        if (b.nodes > YT_MAX_NODES) {
            atom_diags_add(diags, file, (int)parser.mark.line + 1, (int)parser.mark.column + 1, "",
                           "more than %d YAML nodes: this is not a job spec", YT_MAX_NODES);
            rc = -1;
            break;
        }
    }
    yaml_parser_delete(&parser);
    *root = b.root;
    return rc;
}
