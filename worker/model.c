/* worker/model.c: the GPT model's shard on one rank: creation (flat buffers, activations, the
 * data-parallel gradient buckets) and the forward and backward passes of one micro-batch with
 * Megatron tensor parallelism (docs/model.md).
 *
 * Per layer, the forward all-reduces twice over the tensor group (after the row-parallel
 * attprojw and fcprojw matmuls, before their bias) and the backward twice (after the
 * column-parallel qkvw and fcw input gradients). The embedding lookup, the head's input gradient
 * and the parallel cross-entropy's statistics are the other tensor-group collectives.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "worker/model_internal.h"

#define LAYER_PIECES 12 /* per-layer parameters: ln1w .. fcprojb */

int atom_model_tp_sum(atom_model *m, float *buf, size_t n, atom_err *err)
{
    if (m->opts.tp_size == 1)
        return 0;
    if (!m->opts.tensor_group)
        return atom_errf(err, "model: tensor size %d but no tensor group to all-reduce over",
                         m->opts.tp_size);
    coll_err ce;
    if (m->be->synchronize() != 0)
        return atom_errf(err, "model: backend synchronize failed before a tensor all-reduce");
    if (coll_all_reduce(m->opts.tensor_group, buf, n, COLL_F32, COLL_SUM, &ce) != 0)
        return atom_errf(err, "model: tensor all-reduce: %s", ce.msg);
    return 0;
}

int atom_model_sum_scalars(atom_model *m, coll_group *group, float *host, int n,
                           atom_err *err)
{
    if (n < 1 || n > ATOM_MODEL_MAX_SCALARS)
        return atom_errf(err, "model: %d scalars to sum (1..%d)", n, ATOM_MODEL_MAX_SCALARS);
    size_t bytes = (size_t)n * sizeof(float);
    coll_err ce;
    if (m->be->from_host(m->scalars, host, bytes) != 0 || m->be->synchronize() != 0)
        return atom_errf(err, "model: copying %d scalars to the backend failed", n);
    if (coll_all_reduce(group, m->scalars, (size_t)n, COLL_F32, COLL_SUM, &ce) != 0)
        return atom_errf(err, "model: all-reduce of %d scalars over the %s group: %s", n,
                         coll_group_name(group), ce.msg);
    if (m->be->to_host(host, m->scalars, bytes) != 0)
        return atom_errf(err, "model: copying %d scalars from the backend failed", n);
    return 0;
}

/* The maximum over the tensor group, element by element: an all-gather and a column max. */
static int tp_max(atom_model *m, float *buf, float *gathered, int n, atom_err *err)
{
    if (m->opts.tp_size == 1)
        return 0;
    coll_err ce;
    if (m->be->synchronize() != 0)
        return atom_errf(err, "model: backend synchronize failed before a tensor all-gather");
    if (coll_all_gather(m->opts.tensor_group, buf, gathered, (size_t)n, COLL_F32, &ce) != 0)
        return atom_errf(err, "model: tensor all-gather: %s", ce.msg);
    m->be->column_max(buf, gathered, m->opts.tp_size, n);
    return 0;
}

/* ---- creation ---- */

/* Allocates in the backend's memory; a failure is noted in *failed and reported once. */
static void alloc_floats(atom_model *m, float **p, int64_t n, int *failed)
{
    *p = m->be->alloc((size_t)n * sizeof(float));
    if (!*p)
        *failed = 1;
}

static void alloc_activations(atom_model *m, int *failed)
{
    const atom_model_cfg *c = &m->opts.cfg;
    atom_activations *a = &m->act;
    int64_t B = m->opts.max_batch, T = c->context, C = c->channels, L = c->layers;
    int64_t N = B * T, P = m->opts.tp_size;
    a->inputs = m->be->alloc((size_t)N * sizeof(int));
    a->targets = m->be->alloc((size_t)N * sizeof(int));
    if (!a->inputs || !a->targets)
        *failed = 1;
    alloc_floats(m, &a->encoded, N * C, failed);
    alloc_floats(m, &a->ln1, L * N * C, failed);
    alloc_floats(m, &a->ln1_mean, L * N, failed);
    alloc_floats(m, &a->ln1_rstd, L * N, failed);
    alloc_floats(m, &a->qkv, L * N * 3 * m->Cl, failed);
    /* The probabilities of every layer are kept when they take no more memory than the
     * MLP's saved inputs (NHl*T*T <= Fl*T per sequence and layer: gpt-tiny, short contexts);
     * else one layer's, recomputed in the backward ((B, NH, T, T) per layer was 9.6 GB for
     * gpt2-124m at B=16). Keeping them saved gpt-tiny's backward an attention forward per
     * layer: its two sgemms per head and the softmax's exps. */
    a->att_layers = (int64_t)m->NHl * T <= (int64_t)m->Fl ? (int)L : 1;
    alloc_floats(m, &a->att, a->att_layers * B * m->NHl * T * T, failed);
    alloc_floats(m, &a->atty, L * N * m->Cl, failed);
    alloc_floats(m, &a->res2, L * N * C, failed);
    alloc_floats(m, &a->ln2, L * N * C, failed);
    alloc_floats(m, &a->ln2_mean, L * N, failed);
    alloc_floats(m, &a->ln2_rstd, L * N, failed);
    alloc_floats(m, &a->fch, L * N * m->Fl, failed);
    alloc_floats(m, &a->fch_gelu, L * N * m->Fl, failed);
    alloc_floats(m, &a->res3, L * N * C, failed);
    alloc_floats(m, &a->lnf, N * C, failed);
    alloc_floats(m, &a->lnf_mean, N, failed);
    alloc_floats(m, &a->lnf_rstd, N, failed);
    alloc_floats(m, &a->logits, N * m->Vl, failed);
    alloc_floats(m, &a->rowmax, N, failed);
    alloc_floats(m, &a->rowmax_all, P * N, failed);
    alloc_floats(m, &a->ce_sums, 2 * N, failed);
    alloc_floats(m, &a->losses, N, failed);
    alloc_floats(m, &a->partial, N * C, failed);
    alloc_floats(m, &a->dresidual, N * C, failed);
    alloc_floats(m, &a->dln, N * C, failed);
    alloc_floats(m, &a->dfch_gelu, N * m->Fl, failed);
    alloc_floats(m, &a->dfch, N * m->Fl, failed);
    alloc_floats(m, &a->dqkv, N * 3 * m->Cl, failed);
    alloc_floats(m, &a->datty, N * m->Cl, failed);
    alloc_floats(m, &a->datt, B * m->NHl * T * T, failed);
}

static void free_activations(atom_model *m)
{
    atom_activations *a = &m->act;
    void *all[] = {a->inputs,    a->targets,   a->encoded, a->ln1,       a->ln1_mean,
                   a->ln1_rstd,  a->qkv,       a->att,     a->atty,      a->res2,
                   a->ln2,       a->ln2_mean,  a->ln2_rstd, a->fch,      a->fch_gelu,
                   a->res3,      a->lnf,       a->lnf_mean, a->lnf_rstd, a->logits,
                   a->rowmax,    a->rowmax_all, a->ce_sums, a->losses,   a->partial,
                   a->dresidual, a->dln,       a->dfch_gelu, a->dfch,    a->dqkv,
                   a->datty,     a->datt};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        m->be->release(all[i]);
    memset(a, 0, sizeof *a);
}

/* The tied wte's gradient has two parts: the LM head's, complete as soon as the backward has
 * begun, and the embedding's, complete only at its end but nonzero only on the rows of the
 * micro-batch's tokens. With data parallelism the head's part is all-reduced in the first bucket,
 * behind the layers' backward, and the embedding's part is exchanged at the end as rows: the
 * data group's tokens are gathered when the backward begins, every rank lists the same touched
 * rows U (in order of first appearance), and the group's average embedding gradient of U's rows
 * (at most D * B * T of them, never more than wte's) is added to the averaged head part. A step
 * all-reduces wte's floats once early and |U| rows late, instead of all of wte last. When
 * D * B * T approaches V (many replicas), U approaches all of wte: the late exchange is then as
 * large as the whole-wte all-reduce it replaces, and the early one is extra traffic, hidden
 * behind the backward; emb.grad costs up to one more wte-sized buffer. */
static int setup_embedding_exchange(atom_model *m, atom_err *err)
{
    int64_t D = coll_group_size(m->opts.data_group);
    int64_t N = (int64_t)m->opts.max_batch * m->opts.cfg.context, C = m->opts.cfg.channels;
    int64_t umax = D * N < m->Vl ? D * N : m->Vl;
    m->emb.umax = (int)umax;
    const atom_backend *be = m->be;
    m->emb.mine = be->alloc((size_t)N * sizeof(int));
    m->emb.all = be->alloc((size_t)(D * N) * sizeof(int));
    m->emb.rows = be->alloc((size_t)umax * sizeof(int) + 1);
    m->emb.slots = be->alloc((size_t)N * sizeof(int));
    m->emb.grad = be->alloc((size_t)(umax * C) * sizeof(float) + 1);
    m->emb.wpe_sink = be->alloc((size_t)C * sizeof(float));
    m->emb.host_all = malloc((size_t)(D * N) * sizeof(int));
    m->emb.host_rows = malloc((size_t)umax * sizeof(int) + 1);
    m->emb.host_slots = malloc((size_t)N * sizeof(int));
    m->emb.host_index = malloc((size_t)m->Vl * sizeof(int) + 1);
    if (!m->emb.mine || !m->emb.all || !m->emb.rows || !m->emb.slots || !m->emb.grad ||
        !m->emb.wpe_sink || !m->emb.host_all || !m->emb.host_rows || !m->emb.host_slots ||
        !m->emb.host_index)
        return atom_errf(err, "model: out of memory for the embedding gradient exchange (%lld rows)",
                         (long long)umax);
    for (int i = 0; i < m->Vl; i++)
        m->emb.host_index[i] = -1;
    return 0;
}

static void free_embedding_exchange(atom_model *m)
{
    void *dev[] = {m->emb.mine, m->emb.all, m->emb.rows, m->emb.slots, m->emb.grad, m->emb.wpe_sink};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        m->be->release(dev[i]);
    free(m->emb.host_all);
    free(m->emb.host_rows);
    free(m->emb.host_slots);
    free(m->emb.host_index);
    memset(&m->emb, 0, sizeof m->emb);
}

/* Registers the gradient pieces in the reverse of the order the backward completes them (wpe,
 * each layer's slices, lnfw, lnfb, then wte, whose LM head part is complete first): the bucket
 * manager packs them in reverse, so wte's head part opens the first bucket. */
static int setup_buckets(atom_model *m, atom_err *err)
{
    coll_group *g = m->opts.data_group;
    if (!g || coll_group_size(g) == 1)
        return 0;
    int L = m->opts.cfg.layers;
    coll_err ce;
    size_t bytes = m->opts.bucket_bytes ? m->opts.bucket_bytes : (size_t)4 << 20;
    if (coll_buckets_create(g, m->grads, (size_t)m->table.total, bytes, &m->buckets, &ce) != 0)
        return atom_errf(err, "model: gradient buckets: %s", ce.msg);
    m->piece_layer = calloc((size_t)L * LAYER_PIECES, sizeof(int));
    if (!m->piece_layer)
        return atom_errf(err, "model: out of memory for bucket pieces");
    const atom_param *P = m->table.params;
    int id;
#define ADD_PIECE(dst, off, len)                                                                  \
    do {                                                                                          \
        id = coll_buckets_add(m->buckets, (size_t)(off), (size_t)(len), &ce);                     \
        if (id < 0)                                                                               \
            return atom_errf(err, "model: gradient bucket piece: %s", ce.msg);                     \
        (dst) = id;                                                                               \
    } while (0)
    ADD_PIECE(m->piece_global[1], P[ATOM_P_WPE].offset, P[ATOM_P_WPE].numel);
    for (int l = 0; l < L; l++)
        for (int k = 0; k < LAYER_PIECES; k++) {
            const atom_param *p = &P[ATOM_P_LN1W + k];
            int64_t slice = p->numel / L;
            ADD_PIECE(m->piece_layer[l * LAYER_PIECES + k], p->offset + l * slice, slice);
        }
    ADD_PIECE(m->piece_global[2], P[ATOM_P_LNFW].offset, P[ATOM_P_LNFW].numel);
    ADD_PIECE(m->piece_global[3], P[ATOM_P_LNFB].offset, P[ATOM_P_LNFB].numel);
    ADD_PIECE(m->piece_global[0], P[ATOM_P_WTE].offset, P[ATOM_P_WTE].numel);
#undef ADD_PIECE
    if (coll_buckets_seal(m->buckets, &ce) != 0)
        return atom_errf(err, "model: sealing gradient buckets: %s", ce.msg);
    return setup_embedding_exchange(m, err);
}

int atom_model_create(const atom_model_opts *opts, atom_model **out, atom_err *err)
{
    *out = NULL;
    if (!opts->backend)
        return atom_errf(err, "model: no backend");
    if (opts->max_batch < 1)
        return atom_errf(err, "model: max_batch must be at least 1, not %d", opts->max_batch);
    if (opts->tensor_group && coll_group_size(opts->tensor_group) != opts->tp_size)
        return atom_errf(err, "model: tensor size %d but the tensor group has %d ranks",
                         opts->tp_size, coll_group_size(opts->tensor_group));
    atom_model *m = calloc(1, sizeof *m);
    if (!m)
        return atom_errf(err, "model: out of memory");
    m->opts = *opts;
    m->be = opts->backend;
    if (atom_param_table_build(&m->table, &opts->cfg, opts->tp_rank, opts->tp_size, err) != 0) {
        free(m);
        return -1;
    }
    const atom_model_cfg *c = &opts->cfg;
    int P = opts->tp_size;
    /* this rank's vocabulary slice is wte's rows in the table: one description of the split */
    const atom_param *wte = &m->table.params[ATOM_P_WTE];
    m->Vp = (int)wte->shape[0];
    m->Vl = (int)wte->local_shape[0];
    m->vocab_start = (int)wte->start[0];
    int valid = c->vocab - m->vocab_start;
    m->vocab_valid = valid < 0 ? 0 : (valid > m->Vl ? m->Vl : valid);
    m->Cl = c->channels / P;
    m->Fl = 4 * c->channels / P;
    m->NHl = c->heads / P;
    m->hs = c->channels / c->heads;

    int failed = 0;
    int64_t n = m->table.total;
    alloc_floats(m, &m->params, n, &failed);
    alloc_floats(m, &m->grads, n, &failed);
    alloc_floats(m, &m->adam_m, n, &failed);
    alloc_floats(m, &m->adam_v, n, &failed);
    alloc_activations(m, &failed);
    alloc_floats(m, &m->scalars, ATOM_MODEL_MAX_SCALARS, &failed);
    m->host_losses = malloc((size_t)opts->max_batch * c->context * sizeof(float));
    if (failed || !m->host_losses) {
        atom_model_free(m);
        return atom_errf(err, "model: out of memory (%lld parameters, micro-batch %d)",
                         (long long)n, opts->max_batch);
    }
    if (setup_buckets(m, err) != 0) {
        atom_model_free(m);
        return -1;
    }
    *out = m;
    return 0;
}

void atom_model_free(atom_model *m)
{
    if (!m)
        return;
    if (m->buckets)
        coll_buckets_free(m->buckets);
    free_embedding_exchange(m);
    free(m->piece_layer);
    free_activations(m);
    m->be->release(m->params);
    m->be->release(m->grads);
    m->be->release(m->adam_m);
    m->be->release(m->adam_v);
    m->be->release(m->scalars);
    free(m->host_losses);
    free(m);
}

/* ---- forward ---- */

/* Copies the micro-batch's inputs and targets to the backend and checks them. */
static int load_tokens(atom_model *m, const int *tokens, int B, atom_err *err)
{
    int T = m->opts.cfg.context, V = m->opts.cfg.vocab;
    if (B < 1 || B > m->opts.max_batch)
        return atom_errf(err, "model: micro-batch %d outside 1..%d", B, m->opts.max_batch);
    int *in = malloc((size_t)2 * B * T * sizeof(int));
    if (!in)
        return atom_errf(err, "model: out of memory for tokens");
    int *tg = in + (size_t)B * T;
    for (int b = 0; b < B; b++)
        for (int t = 0; t <= T; t++) {
            int tok = tokens[(size_t)b * (T + 1) + t];
            if (tok < 0 || tok >= V) {
                free(in);
                return atom_errf(err, "model: token %d at sample %d position %d is outside the "
                                 "vocabulary of %d", tok, b, t, V);
            }
            if (t < T)
                in[b * T + t] = tok;
            if (t > 0)
                tg[b * T + t - 1] = tok;
        }
    int rc = m->be->from_host(m->act.inputs, in, (size_t)B * T * sizeof(int));
    if (rc == 0)
        rc = m->be->from_host(m->act.targets, tg, (size_t)B * T * sizeof(int));
    free(in);
    return rc == 0 ? 0 : atom_errf(err, "model: copying tokens to the %s backend failed",
                                   m->be->name);
}

static int forward(atom_model *m, const int *tokens, int B, float *loss, atom_err *err)
{
    if (load_tokens(m, tokens, B, err) != 0)
        return -1;
    const atom_backend *be = m->be;
    const atom_model_cfg *c = &m->opts.cfg;
    atom_activations *a = &m->act;
    bool bf16 = m->opts.precision == ATOM_PRECISION_BF16;
    int T = c->context, C = c->channels, L = c->layers, N = B * T;
    int Cl = m->Cl, Fl = m->Fl;
    float *W = m->params;
    int64_t LNC = (int64_t)N * C; /* strides of the per-layer activations at this B */
    int64_t att_stride = (int64_t)B * m->NHl * T * T;
    m->last_B = B;

    /* vocab-parallel embedding: each rank looks up the rows it holds; rank 0 adds wpe, so the
     * sum over the group adds it once */
    be->encoder_forward(a->encoded, a->inputs, atom_param_ptr(m, W, ATOM_P_WTE),
                        m->opts.tp_rank == 0 ? atom_param_ptr(m, W, ATOM_P_WPE) : NULL,
                        m->vocab_start, m->Vl, B, T, C);
    if (atom_model_tp_sum(m, a->encoded, (size_t)N * C, err) != 0)
        return -1;

    for (int l = 0; l < L; l++) {
        float *resid = l == 0 ? a->encoded : a->res3 + (l - 1) * LNC;
        float *ln1 = a->ln1 + l * LNC, *ln2 = a->ln2 + l * LNC;
        float *qkv = a->qkv + (int64_t)l * N * 3 * Cl, *atty = a->atty + (int64_t)l * N * Cl;
        float *res2 = a->res2 + l * LNC, *res3 = a->res3 + l * LNC;
        float *fch = a->fch + (int64_t)l * N * Fl, *fchg = a->fch_gelu + (int64_t)l * N * Fl;

        be->layernorm_forward(ln1, a->ln1_mean + l * N, a->ln1_rstd + l * N, resid,
                              atom_layer_ptr(m, W, ATOM_P_LN1W, l),
                              atom_layer_ptr(m, W, ATOM_P_LN1B, l), N, C);
        be->matmul_forward(qkv, ln1, atom_layer_ptr(m, W, ATOM_P_QKVW, l),
                           atom_layer_ptr(m, W, ATOM_P_QKVB, l), N, C, 3 * Cl, bf16);
        float *att = a->att + (a->att_layers > 1 ? l : 0) * att_stride;
        be->attention_forward(atty, att, qkv, B, T, m->NHl, m->hs);
        be->matmul_forward(a->partial, atty, atom_layer_ptr(m, W, ATOM_P_ATTPROJW, l), NULL, N,
                           Cl, C, bf16);
        if (atom_model_tp_sum(m, a->partial, (size_t)N * C, err) != 0)
            return -1;
        be->residual_forward(res2, resid, a->partial, atom_layer_ptr(m, W, ATOM_P_ATTPROJB, l),
                             N, C);

        be->layernorm_forward(ln2, a->ln2_mean + l * N, a->ln2_rstd + l * N, res2,
                              atom_layer_ptr(m, W, ATOM_P_LN2W, l),
                              atom_layer_ptr(m, W, ATOM_P_LN2B, l), N, C);
        be->matmul_forward(fch, ln2, atom_layer_ptr(m, W, ATOM_P_FCW, l),
                           atom_layer_ptr(m, W, ATOM_P_FCB, l), N, C, Fl, bf16);
        be->gelu_forward(fchg, fch, (int64_t)N * Fl);
        be->matmul_forward(a->partial, fchg, atom_layer_ptr(m, W, ATOM_P_FCPROJW, l), NULL, N,
                           Fl, C, bf16);
        if (atom_model_tp_sum(m, a->partial, (size_t)N * C, err) != 0)
            return -1;
        be->residual_forward(res3, res2, a->partial, atom_layer_ptr(m, W, ATOM_P_FCPROJB, l), N,
                             C);
    }

    /* tied head: this rank's slice of the logits, then Megatron's parallel cross-entropy */
    be->layernorm_forward(a->lnf, a->lnf_mean, a->lnf_rstd, a->res3 + (L - 1) * LNC,
                          atom_param_ptr(m, W, ATOM_P_LNFW), atom_param_ptr(m, W, ATOM_P_LNFB),
                          N, C);
    be->matmul_forward(a->logits, a->lnf, atom_param_ptr(m, W, ATOM_P_WTE), NULL, N, C, m->Vl,
                       bf16);
    be->ce_rowmax(a->rowmax, a->logits, N, m->Vl, m->vocab_valid);
    if (tp_max(m, a->rowmax, a->rowmax_all, N, err) != 0)
        return -1;
    be->ce_sums(a->ce_sums, a->logits, a->rowmax, a->targets, m->vocab_start, N, m->Vl,
                m->vocab_valid);
    if (atom_model_tp_sum(m, a->ce_sums, (size_t)2 * N, err) != 0)
        return -1;
    be->ce_loss(a->losses, a->rowmax, a->ce_sums, N);
    if (loss) {
        if (be->to_host(m->host_losses, a->losses, (size_t)N * sizeof(float)) != 0)
            return atom_errf(err, "model: copying losses from the %s backend failed", be->name);
        double sum = 0.0;
        for (int i = 0; i < N; i++)
            sum += m->host_losses[i];
        *loss = (float)(sum / N);
    }
    return 0;
}

int atom_model_forward(atom_model *m, const int *tokens, int B, float *loss, atom_err *err)
{
    return forward(m, tokens, B, loss, err);
}

/* ---- backward ---- */

static int mark_ready(atom_model *m, int piece, atom_err *err)
{
    coll_err ce;
    if (m->be->synchronize() != 0)
        return atom_errf(err, "model: backend synchronize failed before a gradient bucket");
    if (coll_buckets_mark_ready(m->buckets, piece, &ce) != 0)
        return atom_errf(err, "model: gradient bucket: %s", ce.msg);
    return 0;
}

/* When the backward begins (data parallelism): gathers the data group's tokens and lists U,
 * the local wte rows they touch, in order of first appearance rank by rank, the same list on
 * every rank; and for each of this rank's tokens its row's index in U (-1: another tensor rank's
 * row). See setup_embedding_exchange. */
static int list_touched_rows(atom_model *m, int N, atom_err *err)
{
    const atom_backend *be = m->be;
    coll_group *g = m->opts.data_group;
    int D = coll_group_size(g), me = coll_group_rank(g);
    int Nmax = m->opts.max_batch * m->opts.cfg.context;
    int *mine = m->emb.host_all + (size_t)me * Nmax, *index = m->emb.host_index;
    coll_err ce;
    if (be->to_host(mine, m->act.inputs, (size_t)N * sizeof(int)) != 0)
        return atom_errf(err, "model: copying tokens from the %s backend failed", be->name);
    for (int i = N; i < Nmax; i++)
        mine[i] = -1; /* a shorter micro-batch: past its end, no token */
    if (be->from_host(m->emb.mine, mine, (size_t)Nmax * sizeof(int)) != 0)
        return atom_errf(err, "model: copying tokens to the %s backend failed", be->name);
    if (coll_all_gather(g, m->emb.mine, m->emb.all, (size_t)Nmax, COLL_I32, &ce) != 0)
        return atom_errf(err, "model: gathering the data group's tokens: %s", ce.msg);
    if (be->to_host(m->emb.host_all, m->emb.all, (size_t)D * Nmax * sizeof(int)) != 0)
        return atom_errf(err, "model: copying tokens from the %s backend failed", be->name);
    int n = 0;
    for (size_t i = 0; i < (size_t)D * Nmax; i++) {
        int row = m->emb.host_all[i] - m->vocab_start;
        if (m->emb.host_all[i] >= 0 && row >= 0 && row < m->Vl && index[row] < 0) {
            index[row] = n;
            m->emb.host_rows[n++] = row;
        }
    }
    for (int i = 0; i < N; i++) {
        int row = mine[i] - m->vocab_start;
        m->emb.host_slots[i] = row >= 0 && row < m->Vl ? index[row] : -1;
    }
    for (int k = 0; k < n; k++)
        index[m->emb.host_rows[k]] = -1;
    m->emb.nrows = n;
    if (be->from_host(m->emb.rows, m->emb.host_rows, (size_t)n * sizeof(int)) != 0 ||
        be->from_host(m->emb.slots, m->emb.host_slots, (size_t)N * sizeof(int)) != 0)
        return atom_errf(err, "model: copying wte rows to the %s backend failed", be->name);
    return 0;
}

/* The embedding's backward with data parallelism, after the layers': wpe's gradient as always,
 * wte's as rows of U (list_touched_rows), averaged over the group and added to wte's head part
 * once the buckets (which hold it) are done. Ends the step's gradient averaging. */
static int embedding_backward_dp(atom_model *m, int B, atom_err *err)
{
    const atom_backend *be = m->be;
    int T = m->opts.cfg.context, C = m->opts.cfg.channels;
    float *G = m->grads;
    coll_err ce;
    be->zero(m->emb.grad, (int64_t)m->emb.nrows * C);
    /* slots index U: the rows of emb.grad stand for wte's rows of U */
    be->encoder_backward(m->emb.grad, atom_param_ptr(m, G, ATOM_P_WPE), m->act.dresidual,
                         m->emb.slots, 0, m->emb.nrows, B, T, C);
    if (mark_ready(m, m->piece_global[1], err) != 0)
        return -1;
    coll_req *rows_req;
    if (coll_all_reduce_start(m->opts.data_group, m->emb.grad, (size_t)m->emb.nrows * C, COLL_F32,
                              COLL_AVG, &rows_req, &ce) != 0)
        return atom_errf(err, "model: embedding gradient all-reduce: %s", ce.msg);
    int rc = coll_buckets_finish(m->buckets, &ce);
    if (rc != 0)
        atom_errf(err, "model: gradient all-reduce: %s", ce.msg);
    if (coll_wait(rows_req, rc == 0 ? &ce : NULL) != 0 && rc == 0)
        rc = atom_errf(err, "model: embedding gradient all-reduce: %s", ce.msg);
    if (rc != 0)
        return -1;
    /* wte's rows of U += the group's average, one row per entry of U: each row is added to
     * once, so the order does not matter */
    be->encoder_backward(atom_param_ptr(m, G, ATOM_P_WTE), m->emb.wpe_sink, m->emb.grad,
                         m->emb.rows, 0, m->Vl, m->emb.nrows, 1, C);
    return 0;
}

static int backward(atom_model *m, int B, float grad_scale, bool sync, atom_err *err)
{
    const atom_backend *be = m->be;
    const atom_model_cfg *c = &m->opts.cfg;
    atom_activations *a = &m->act;
    bool bf16 = m->opts.precision == ATOM_PRECISION_BF16;
    int T = c->context, C = c->channels, L = c->layers, N = B * T;
    int Cl = m->Cl, Fl = m->Fl;
    float *W = m->params, *G = m->grads;
    int64_t LNC = (int64_t)N * C, att_stride = (int64_t)B * m->NHl * T * T;
    bool dp = sync && m->buckets;
    if (dp && list_touched_rows(m, N, err) != 0)
        return -1;

    /* cross-entropy and the tied head: logits become dlogits in place */
    be->ce_backward(a->logits, a->logits, a->rowmax, a->ce_sums, a->targets, m->vocab_start,
                    grad_scale / (float)N, N, m->Vl, m->vocab_valid);
    be->matmul_backward(a->dln, atom_param_ptr(m, G, ATOM_P_WTE), NULL, a->logits, a->lnf,
                        atom_param_ptr(m, W, ATOM_P_WTE), N, C, m->Vl, bf16);
    /* wte's head part is complete: the first bucket (setup_embedding_exchange) */
    if (dp && mark_ready(m, m->piece_global[0], err) != 0)
        return -1;
    if (atom_model_tp_sum(m, a->dln, (size_t)N * C, err) != 0)
        return -1;
    be->zero(a->dresidual, LNC);
    be->layernorm_backward(a->dresidual, atom_param_ptr(m, G, ATOM_P_LNFW),
                           atom_param_ptr(m, G, ATOM_P_LNFB), a->dln, a->res3 + (L - 1) * LNC,
                           atom_param_ptr(m, W, ATOM_P_LNFW), a->lnf_mean, a->lnf_rstd, N, C);
    if (dp && (mark_ready(m, m->piece_global[3], err) != 0 ||
               mark_ready(m, m->piece_global[2], err) != 0))
        return -1;

    for (int l = L - 1; l >= 0; l--) {
        float *resid = l == 0 ? a->encoded : a->res3 + (l - 1) * LNC;
        float *ln1 = a->ln1 + l * LNC, *ln2 = a->ln2 + l * LNC;
        float *qkv = a->qkv + (int64_t)l * N * 3 * Cl, *atty = a->atty + (int64_t)l * N * Cl;
        float *res2 = a->res2 + l * LNC;
        float *fch = a->fch + (int64_t)l * N * Fl, *fchg = a->fch_gelu + (int64_t)l * N * Fl;

        /* dresidual holds d(layer output); the residual passes it straight through */
        be->matmul_backward(a->dfch_gelu, atom_layer_ptr(m, G, ATOM_P_FCPROJW, l),
                            atom_layer_ptr(m, G, ATOM_P_FCPROJB, l), a->dresidual, fchg,
                            atom_layer_ptr(m, W, ATOM_P_FCPROJW, l), N, Fl, C, bf16);
        be->gelu_backward(a->dfch, fch, a->dfch_gelu, (int64_t)N * Fl);
        be->matmul_backward(a->dln, atom_layer_ptr(m, G, ATOM_P_FCW, l),
                            atom_layer_ptr(m, G, ATOM_P_FCB, l), a->dfch, ln2,
                            atom_layer_ptr(m, W, ATOM_P_FCW, l), N, C, Fl, bf16);
        if (atom_model_tp_sum(m, a->dln, (size_t)N * C, err) != 0)
            return -1;
        be->layernorm_backward(a->dresidual, atom_layer_ptr(m, G, ATOM_P_LN2W, l),
                               atom_layer_ptr(m, G, ATOM_P_LN2B, l), a->dln, res2,
                               atom_layer_ptr(m, W, ATOM_P_LN2W, l), a->ln2_mean + l * N,
                               a->ln2_rstd + l * N, N, C);

        be->matmul_backward(a->datty, atom_layer_ptr(m, G, ATOM_P_ATTPROJW, l),
                            atom_layer_ptr(m, G, ATOM_P_ATTPROJB, l), a->dresidual, atty,
                            atom_layer_ptr(m, W, ATOM_P_ATTPROJW, l), N, Cl, C, bf16);
        /* when the probabilities are not kept for every layer (alloc_activations) they are
         * recomputed: one more attention forward, rewriting atty[l] with the same values */
        float *att = a->att + (a->att_layers > 1 ? l : 0) * att_stride;
        if (a->att_layers == 1)
            be->attention_forward(atty, att, qkv, B, T, m->NHl, m->hs);
        be->attention_backward(a->dqkv, a->datt, a->datty, qkv, att, B, T, m->NHl, m->hs);
        be->matmul_backward(a->dln, atom_layer_ptr(m, G, ATOM_P_QKVW, l),
                            atom_layer_ptr(m, G, ATOM_P_QKVB, l), a->dqkv, ln1,
                            atom_layer_ptr(m, W, ATOM_P_QKVW, l), N, C, 3 * Cl, bf16);
        if (atom_model_tp_sum(m, a->dln, (size_t)N * C, err) != 0)
            return -1;
        be->layernorm_backward(a->dresidual, atom_layer_ptr(m, G, ATOM_P_LN1W, l),
                               atom_layer_ptr(m, G, ATOM_P_LN1B, l), a->dln, resid,
                               atom_layer_ptr(m, W, ATOM_P_LN1W, l), a->ln1_mean + l * N,
                               a->ln1_rstd + l * N, N, C);
        if (dp)
            for (int k = LAYER_PIECES - 1; k >= 0; k--)
                if (mark_ready(m, m->piece_layer[l * LAYER_PIECES + k], err) != 0)
                    return -1;
    }

    if (dp)
        return embedding_backward_dp(m, B, err);
    be->encoder_backward(atom_param_ptr(m, G, ATOM_P_WTE), atom_param_ptr(m, G, ATOM_P_WPE),
                         a->dresidual, a->inputs, m->vocab_start, m->Vl, B, T, C);
    return 0;
}

int atom_model_forward_backward(atom_model *m, const int *tokens, int B, float grad_scale,
                                bool sync_grads, float *loss, atom_err *err)
{
    if (forward(m, tokens, B, loss, err) != 0)
        return -1;
    return backward(m, B, grad_scale, sync_grads, err);
}

/* ---- access ---- */

int atom_model_copy_logits(const atom_model *m, float *host, atom_err *err)
{
    size_t n = (size_t)m->last_B * m->opts.cfg.context * m->Vl;
    if (m->be->to_host(host, m->act.logits, n * sizeof(float)) != 0)
        return atom_errf(err, "model: copying logits from the %s backend failed", m->be->name);
    return 0;
}

void atom_model_zero_grads(atom_model *m) { m->be->zero(m->grads, m->table.total); }

const atom_param_table *atom_model_table(const atom_model *m) { return &m->table; }
const atom_model_opts *atom_model_options(const atom_model *m) { return &m->opts; }
int64_t atom_model_adam_steps(const atom_model *m) { return m->adam_steps; }
void atom_model_set_adam_steps(atom_model *m, int64_t steps) { m->adam_steps = steps; }

static float *buffer_of(const atom_model *m, atom_model_buffer which)
{
    switch (which) {
    case ATOM_BUF_PARAMS: return m->params;
    case ATOM_BUF_GRADS: return m->grads;
    case ATOM_BUF_ADAM_M: return m->adam_m;
    case ATOM_BUF_ADAM_V: return m->adam_v;
    }
    return NULL;
}

float *atom_model_buffer_ptr(atom_model *m, atom_model_buffer which) { return buffer_of(m, which); }

int atom_model_download(const atom_model *m, atom_model_buffer which, float *host, atom_err *err)
{
    float *src = buffer_of(m, which);
    if (!src)
        return atom_errf(err, "model: unknown buffer %d", (int)which);
    if (m->be->to_host(host, src, (size_t)m->table.total * sizeof(float)) != 0)
        return atom_errf(err, "model: copying a buffer from the %s backend failed", m->be->name);
    return 0;
}

int atom_model_upload(atom_model *m, atom_model_buffer which, const float *host, atom_err *err)
{
    float *dst = buffer_of(m, which);
    if (!dst)
        return atom_errf(err, "model: unknown buffer %d", (int)which);
    if (m->be->from_host(dst, host, (size_t)m->table.total * sizeof(float)) != 0)
        return atom_errf(err, "model: copying a buffer to the %s backend failed", m->be->name);
    return 0;
}
