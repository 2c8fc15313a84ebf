/* data/bpe.c: GPT-2's byte-pair merges on one pre-tokenized piece.
 *
 * A piece starts as the tokens of its bytes; the adjacent pair of lowest merge rank is merged
 * into its token, the leftmost one on a tie, until no adjacent pair has a rank (tiktoken's rule;
 * OpenAI's encoder.py merges every occurrence of the pair at once, which gives the same tokens
 * because a merged token only takes part in merges of higher rank). The pairs wait in a binary
 * heap ordered by (rank, position), so a piece of n bytes costs O(n log n) however long it is
 * (a line of 100,000 '=' is one piece). Ranks are found in an open-addressing hash of the
 * 50,000 merges; finished pieces are kept in a per-thread cache, since words repeat. */
#include <stdlib.h>
#include <string.h>

#include "data/data_internal.h"

/* ---- the merges: (left id, right id) -> (rank, merged id) ---- */

#define MERGE_SLOTS (1u << 17) /* a power of two above 2 x 50,000 */
#define NO_KEY 0xffffffffu

typedef struct merge_slot {
    uint32_t key; /* left << 16 | right */
    uint32_t rank;
    uint16_t merged;
} merge_slot;

struct gpt2_merges {
    merge_slot slots[MERGE_SLOTS];
    uint16_t byte_token[256]; /* the token of each byte alone */
};

static uint32_t slot_of(uint32_t key)
{
    return (key * 0x9e3779b1u) >> 15; /* Fibonacci hashing onto 17 bits */
}

gpt2_merges *gpt2_merges_new(void)
{
    gpt2_merges *m = malloc(sizeof *m);
    if (!m)
        return NULL;
    for (uint32_t i = 0; i < MERGE_SLOTS; i++)
        m->slots[i].key = NO_KEY;
    for (int r = 0; r < atom_gpt2_merge_count; r++) {
        const uint16_t *t = atom_gpt2_merges + 3 * r;
        uint32_t key = (uint32_t)t[0] << 16 | t[1];
        uint32_t s = slot_of(key);
        while (m->slots[s].key != NO_KEY && m->slots[s].key != key)
            s = (s + 1) & (MERGE_SLOTS - 1);
        if (m->slots[s].key == key)
            continue; /* a pair listed twice keeps its first (lowest) rank */
        m->slots[s] = (merge_slot){.key = key, .rank = (uint32_t)r, .merged = t[2]};
    }
    for (int id = 0; id < atom_gpt2_vocab; id++)
        if (atom_gpt2_token_offset[id + 1] - atom_gpt2_token_offset[id] == 1)
            m->byte_token[atom_gpt2_token_bytes[atom_gpt2_token_offset[id]]] = (uint16_t)id;
    return m;
}

void gpt2_merges_free(gpt2_merges *m)
{
    free(m);
}

static const merge_slot *merge_find(const gpt2_merges *m, uint16_t left, uint16_t right)
{
    uint32_t key = (uint32_t)left << 16 | right;
    for (uint32_t s = slot_of(key);; s = (s + 1) & (MERGE_SLOTS - 1)) {
        if (m->slots[s].key == key)
            return &m->slots[s];
        if (m->slots[s].key == NO_KEY)
            return NULL;
    }
}

/* ---- the cache of finished pieces ---- */

#define CACHE_SLOTS (1u << 16)
#define CACHE_ARENA (4u << 20)
#define CACHE_MAX_PIECE 64 /* longer pieces are rare and not worth a slot */

typedef struct cache_slot {
    uint64_t hash; /* 0: empty */
    uint32_t at;   /* piece bytes, then ids, in the arena */
    uint16_t len, n_ids;
} cache_slot;

struct bpe_cache {
    cache_slot slots[CACHE_SLOTS];
    unsigned used;
    size_t arena_used;
    unsigned char arena[CACHE_ARENA];
    /* scratch for one piece: its nodes and its heap, grown as pieces need */
    uint16_t *id;
    int32_t *next, *prev;
    struct heap_item *heap;
    size_t nodes_cap, heap_cap;
};

typedef struct heap_item {
    uint32_t rank;
    int32_t pos;
    uint16_t left, right;
} heap_item;

bpe_cache *bpe_cache_new(void)
{
    return calloc(1, sizeof(bpe_cache));
}

void bpe_cache_free(bpe_cache *c)
{
    if (!c)
        return;
    free(c->id);
    free(c->next);
    free(c->prev);
    free(c->heap);
    free(c);
}

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h | 1; /* never 0, the empty mark */
}

static cache_slot *cache_find(bpe_cache *c, const unsigned char *p, size_t n, uint64_t h)
{
    for (uint32_t s = (uint32_t)h & (CACHE_SLOTS - 1);; s = (s + 1) & (CACHE_SLOTS - 1)) {
        cache_slot *slot = &c->slots[s];
        if (slot->hash == 0 ||
            (slot->hash == h && slot->len == n && memcmp(c->arena + slot->at, p, n) == 0))
            return slot;
    }
}

static void cache_put(bpe_cache *c, cache_slot *slot, uint64_t h, const unsigned char *p,
                      size_t n, const uint16_t *ids, size_t n_ids)
{
    size_t need = n + 2 * n_ids + 1;
    if (c->used >= CACHE_SLOTS / 2 || c->arena_used + need > CACHE_ARENA) {
        /* full: start again (the words that matter come back at once) */
        memset(c->slots, 0, sizeof c->slots);
        c->used = 0;
        c->arena_used = 0;
        slot = cache_find(c, p, n, h);
    }
    size_t at = c->arena_used;
    memcpy(c->arena + at, p, n);
    size_t ids_at = (at + n + 1) & ~(size_t)1; /* the ids 2-byte aligned */
    memcpy(c->arena + ids_at, ids, 2 * n_ids);
    c->arena_used = ids_at + 2 * n_ids;
    *slot = (cache_slot){.hash = h, .at = (uint32_t)at, .len = (uint16_t)n,
                         .n_ids = (uint16_t)n_ids};
    c->used++;
}

/* ---- the merge loop ---- */

static int heap_less(const heap_item *a, const heap_item *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(heap_item *h, size_t *n, heap_item item)
{
    size_t i = (*n)++;
    while (i > 0 && heap_less(&item, &h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = item;
}

static heap_item heap_pop(heap_item *h, size_t *n)
{
    heap_item top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && heap_less(&h[c + 1], &h[c]))
            c++;
        if (!heap_less(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0)
        h[i] = last;
    return top;
}

static int grow(bpe_cache *c, size_t n, atom_err *err)
{
    if (n > c->nodes_cap) {
        size_t cap = n < 256 ? 256 : n;
        uint16_t *id = realloc(c->id, cap * sizeof *id);
        if (id)
            c->id = id;
        int32_t *next = realloc(c->next, cap * sizeof *next);
        if (next)
            c->next = next;
        int32_t *prev = realloc(c->prev, cap * sizeof *prev);
        if (prev)
            c->prev = prev;
        if (!id || !next || !prev)
            return atom_errf(err, "out of memory for a piece of %zu bytes", n);
        c->nodes_cap = cap;
    }
    if (3 * n > c->heap_cap) { /* n - 1 pairs, and at most 2 new ones per merge */
        heap_item *heap = realloc(c->heap, 3 * n * sizeof *heap);
        if (!heap)
            return atom_errf(err, "out of memory for a piece of %zu bytes", n);
        c->heap = heap;
        c->heap_cap = 3 * n;
    }
    return 0;
}

static void push_pair(const gpt2_merges *m, bpe_cache *c, size_t *n_heap, int32_t left)
{
    int32_t right = c->next[left];
    if (right < 0)
        return;
    const merge_slot *s = merge_find(m, c->id[left], c->id[right]);
    if (s)
        heap_push(c->heap, n_heap, (heap_item){.rank = s->rank, .pos = left,
                                                .left = c->id[left], .right = c->id[right]});
}

int gpt2_bpe_piece(const gpt2_merges *m, bpe_cache *c, const unsigned char *piece, size_t len,
                   atom_tokens *out, atom_err *err)
{
    uint64_t h = 0;
    cache_slot *slot = NULL;
    if (len <= CACHE_MAX_PIECE) {
        h = fnv1a(piece, len);
        slot = cache_find(c, piece, len, h);
        if (slot->hash) {
            const unsigned char *ids = c->arena + ((slot->at + slot->len + 1) & ~(size_t)1);
            for (size_t i = 0; i < slot->n_ids; i++) {
                uint16_t id;
                memcpy(&id, ids + 2 * i, 2);
                if (atom_tokens_push(out, id, err) != 0)
                    return -1;
            }
            return 0;
        }
    }
    if (grow(c, len, err) != 0)
        return -1;
    size_t n_heap = 0;
    for (size_t i = 0; i < len; i++) {
        c->id[i] = m->byte_token[piece[i]];
        c->prev[i] = (int32_t)i - 1;
        c->next[i] = i + 1 < len ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < len; i++)
        push_pair(m, c, &n_heap, (int32_t)i);
    while (n_heap > 0) {
        heap_item top = heap_pop(c->heap, &n_heap);
        int32_t left = top.pos, right = c->next[left];
        /* stale: the left node was merged into its neighbour, or either side changed */
        if (c->id[left] != top.left || right < 0 || c->id[right] != top.right)
            continue;
        c->id[left] = merge_find(m, top.left, top.right)->merged;
        c->next[left] = c->next[right];
        if (c->next[right] >= 0)
            c->prev[c->next[right]] = left;
        c->id[right] = 0xffff; /* dead: no id matches it */
        if (c->prev[left] >= 0)
            push_pair(m, c, &n_heap, c->prev[left]);
        push_pair(m, c, &n_heap, left);
    }
    size_t first = out->n;
    for (int32_t i = 0; i >= 0; i = c->next[i])
        if (atom_tokens_push(out, c->id[i], err) != 0)
            return -1;
    if (slot)
        cache_put(c, slot, h, piece, len, out->ids + first, out->n - first);
    return 0;
}
