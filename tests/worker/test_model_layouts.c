/* tests/worker/test_model_layouts.c: the same training run in every TP x DP layout of 4 ranks
 * (2x2, 4x1, 1x4) gives the losses and gradient norms of the unsplit TP=1 x DP=1 run, step by
 * step, within 1e-4 relative. Run under mpirun -np 4.
 *
 * Each step trains on one global batch of 8 samples drawn from a fixed generator; replica d of
 * D takes samples [d*8/D, (d+1)*8/D) in micro-batches of 2 with gradient accumulation, and the
 * gradients are averaged over the data group by the model's buckets. Clipping (norm 1) and
 * weight decay are on, so the TP-aware grad norm is part of what must match. Every rank also
 * runs the TP=1 x DP=1 reference itself, without communication.
 *
 * Before training, each layout also checks that every rank's initial shard is the unsplit
 * model's weights at its hyperslab, and that the tensor group's logit slices, gathered, are the
 * unsplit model's logits.
 *
 * Then bf16 autocast (training.precision: bf16): the unsplit bf16 run's losses at step 0 and
 * after the last step are within 1e-2 of the fp32 run's but not equal (the operands were
 * rounded), no more of its weights are bf16 values than the fp32 run's (the zero biases and the
 * LayerNorms' ones are; master weights stay fp32), and TP=2 x DP=2
 * in bf16 matches it within BF16_LAYOUT_TOL.
 */
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collectives/collectives.h"
#include "hyperslab.h"
#include "worker/model.h"

#define STEPS 10
#define GLOBAL_BATCH 8
#define MICRO 2
#define LR 3e-3f
#define WD 0.1f
#define CLIP 1.0
/* bf16 keeps 8 significant bits: a layout that sums a product in another order can round an
 * operand near a tie to the other neighbour, 2^-8 away, where fp32 moves by 2^-24. Such flips
 * are rare and average out over thousands of operands; the loss and norm must stay within half
 * of bf16's own relative rounding error (2^-9 / 2 ~ 1e-3). Measured for TP=2 x DP=2: loss
 * 8.7e-6, grad norm 2.4e-4. */
#define BF16_LAYOUT_TOL 1e-3

static const atom_model_cfg CFG = {.layers = 2, .channels = 32, .heads = 4, .vocab = 64,
                                   .context = 16};

/* The global batch of a step: (GLOBAL_BATCH, T+1) tokens, the same on every rank. */
static void batch_of_step(int step, int *tokens)
{
    uint64_t x = 0x9E3779B97F4A7C15ull * (uint64_t)(step + 1);
    for (int i = 0; i < GLOBAL_BATCH * (CFG.context + 1); i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        /* a little structure (token t+1 often follows t) so the loss has something to learn */
        int prev = i > 0 ? tokens[i - 1] : 0;
        tokens[i] = (x % 4 == 0) ? (int)((x >> 8) % CFG.vocab) : (prev + 1) % CFG.vocab;
    }
}

typedef struct run_result {
    float loss[STEPS];
    double norm[STEPS];
    double bf16_weights; /* share of the final weights that are bf16 values */
} run_result;

/* The unsplit model's initial weights and its logits on the first micro-batch of step 0. */
typedef struct reference {
    atom_param_table table;
    float *params;
    float *logits; /* (MICRO, T, Vp) */
} reference;

static int make_reference(reference *ref, atom_err *err)
{
    atom_model_opts o = {.cfg = CFG, .max_batch = MICRO, .backend = atom_backend_cpu(),
                         .tp_size = 1};
    atom_model *m;
    if (atom_model_create(&o, &m, err) != 0 || atom_model_init_weights(m, 2024, err) != 0)
        return -1;
    int T = CFG.context, Vp = atom_padded_vocab(CFG.vocab);
    ref->table = *atom_model_table(m);
    ref->params = malloc(sizeof(float) * ref->table.total);
    ref->logits = malloc(sizeof(float) * MICRO * T * Vp);
    int *tokens = malloc(sizeof(int) * GLOBAL_BATCH * (T + 1));
    batch_of_step(0, tokens);
    if (atom_model_download(m, ATOM_BUF_PARAMS, ref->params, err) != 0 ||
        atom_model_forward(m, tokens, MICRO, NULL, err) != 0 ||
        atom_model_copy_logits(m, ref->logits, err) != 0)
        return -1;
    free(tokens);
    atom_model_free(m);
    return 0;
}

/* This rank's initial shard against the unsplit weights, through the hyperslabs; then the
 * logits of samples 0..MICRO-1, each TP rank's slice gathered over the tensor group. Returns the
 * number of mismatches (printed). */
static int check_shard_and_logits(atom_model *m, const reference *ref, coll_group *tg,
                                  int tp_size, int rank, atom_err *err)
{
    int bad = 0;
    const atom_param_table *t = atom_model_table(m);
    float *w = malloc(sizeof(float) * t->total);
    if (atom_model_download(m, ATOM_BUF_PARAMS, w, err) != 0)
        return 1;
    for (int id = 0; id < ATOM_N_PARAMS && !bad; id++) {
        const atom_param *p = &t->params[id];
        int64_t *gi = hyperslab_indices(p);
        if (!gi) {
            fprintf(stderr, "rank %d: %s: the hyperslab does not select %lld elements\n", rank,
                    p->name, (long long)p->numel);
            bad++;
            continue;
        }
        for (int64_t i = 0; i < p->numel; i++)
            if (w[p->offset + i] != ref->params[ref->table.params[id].offset + gi[i]]) {
                fprintf(stderr, "rank %d: %s local %lld = %g, unsplit %g\n", rank, p->name,
                        (long long)i, w[p->offset + i],
                        ref->params[ref->table.params[id].offset + gi[i]]);
                bad++;
                break;
            }
        free(gi);
    }
    free(w);

    int T = CFG.context, Vp = atom_padded_vocab(CFG.vocab), Vl = Vp / tp_size, N = MICRO * T;
    int *tokens = malloc(sizeof(int) * GLOBAL_BATCH * (T + 1));
    batch_of_step(0, tokens);
    float *mine = malloc(sizeof(float) * N * Vl), *all = malloc(sizeof(float) * N * Vp);
    if (atom_model_forward(m, tokens, MICRO, NULL, err) != 0 ||
        atom_model_copy_logits(m, mine, err) != 0)
        return bad + 1;
    if (tp_size > 1) {
        coll_err ce;
        if (coll_all_gather(tg, mine, all, (size_t)N * Vl, COLL_F32, &ce) != 0) {
            fprintf(stderr, "rank %d: gathering logits: %s\n", rank, ce.msg);
            return bad + 1;
        }
    } else {
        memcpy(all, mine, sizeof(float) * N * Vl);
    }
    double worst = 0;
    for (int r = 0; r < tp_size; r++) /* block r is rank r's columns [r*Vl, (r+1)*Vl) */
        for (int n = 0; n < N; n++)
            for (int v = 0; v < Vl; v++) {
                int col = r * Vl + v;
                if (col >= CFG.vocab)
                    continue; /* padding: outside the softmax */
                float got = all[((size_t)r * N + n) * Vl + v];
                worst = fmax(worst, fabs(got - ref->logits[(size_t)n * Vp + col]));
            }
    if (worst > 1e-5) {
        fprintf(stderr, "rank %d: TP=%d logits differ from the unsplit ones by %g\n", rank,
                tp_size, worst);
        bad++;
    }
    free(tokens);
    free(mine);
    free(all);
    return bad;
}

/* Trains STEPS steps as replica dp_rank of dp_size; groups NULL for the unsplit reference. */
static int train(int tp_rank, int tp_size, coll_group *tg, coll_group *dg, int dp_rank,
                 int dp_size, const reference *ref, int *mismatches, atom_precision precision,
                 run_result *res, atom_err *err)
{
    atom_model_opts o = {.cfg = CFG, .max_batch = MICRO, .backend = atom_backend_cpu(),
                         .tp_rank = tp_rank, .tp_size = tp_size, .tensor_group = tg,
                         .data_group = dg, .bucket_bytes = 16 << 10, .precision = precision};
    atom_model *m;
    if (atom_model_create(&o, &m, err) != 0 || atom_model_init_weights(m, 2024, err) != 0)
        return -1;
    if (ref) {
        int rank;
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        *mismatches += check_shard_and_logits(m, ref, tg, tp_size, rank, err);
    }
    int T = CFG.context, per_replica = GLOBAL_BATCH / dp_size, accum = per_replica / MICRO;
    int *tokens = malloc(sizeof(int) * GLOBAL_BATCH * (T + 1));
    for (int step = 0; step < STEPS; step++) {
        batch_of_step(step, tokens);
        atom_model_zero_grads(m);
        double loss_sum = 0;
        for (int k = 0; k < accum; k++) {
            const int *mb = tokens + (size_t)(dp_rank * per_replica + k * MICRO) * (T + 1);
            float loss;
            if (atom_model_forward_backward(m, mb, MICRO, 1.0f / accum, k == accum - 1, &loss,
                                            err) != 0)
                return -1;
            loss_sum += loss;
        }
        float replica_loss = (float)(loss_sum / accum);
        if (dg && dp_size > 1) {
            coll_err ce;
            if (coll_all_reduce(dg, &replica_loss, 1, COLL_F32, COLL_AVG, &ce) != 0)
                return atom_errf(err, "loss all-reduce: %s", ce.msg);
        }
        double norm;
        if (atom_model_grad_norm(m, &norm, err) != 0)
            return -1;
        float mult = norm > CLIP ? (float)(CLIP / norm) : 1.0f;
        if (atom_model_adamw_step(m, LR, WD, mult, err) != 0)
            return -1;
        res->loss[step] = replica_loss;
        res->norm[step] = norm;
    }
    /* weights whose low 16 bits are zero are bf16 values: master weights in fp32 have few */
    const atom_param_table *table = atom_model_table(m);
    float *w = malloc(sizeof(float) * table->total);
    if (!w || atom_model_download(m, ATOM_BUF_PARAMS, w, err) != 0)
        return -1;
    res->bf16_weights = 0;
    for (int64_t i = 0; i < table->total; i++) {
        uint32_t bits;
        memcpy(&bits, &w[i], sizeof bits);
        res->bf16_weights += (bits & 0xFFFFu) == 0;
    }
    res->bf16_weights /= (double)table->total;
    free(w);
    free(tokens);
    atom_model_free(m);
    return 0;
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    int provided, rank, world;
    MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    if (world != 4) {
        if (rank == 0)
            fprintf(stderr, "run with mpirun -np 4 (got %d ranks)\n", world);
        MPI_Finalize();
        return 2;
    }
    atom_err err = {{0}};
    reference unsplit;
    if (make_reference(&unsplit, &err) != 0) {
        fprintf(stderr, "rank %d: reference model: %s\n", rank, err.msg);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    run_result ref;
    if (train(0, 1, NULL, NULL, 0, 1, NULL, NULL, ATOM_PRECISION_FP32, &ref, &err) != 0) {
        fprintf(stderr, "rank %d: reference run: %s\n", rank, err.msg);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (rank == 0)
        printf("reference TP=1 x DP=1: loss %.5f -> %.5f, grad norm %.4f -> %.4f\n", ref.loss[0],
               ref.loss[STEPS - 1], ref.norm[0], ref.norm[STEPS - 1]);
    int failures = 0;
    /* the reference must itself learn, or matching it would prove little */
    if (!(ref.loss[STEPS - 1] < ref.loss[0] - 0.05f)) {
        if (rank == 0)
            fprintf(stderr, "the reference run did not learn (%.5f -> %.5f)\n", ref.loss[0],
                    ref.loss[STEPS - 1]);
        failures++;
    }

    /* bf16: the unsplit run against fp32, then a layout against it */
    run_result ref16;
    if (train(0, 1, NULL, NULL, 0, 1, NULL, NULL, ATOM_PRECISION_BF16, &ref16, &err) != 0) {
        fprintf(stderr, "rank %d: bf16 reference run: %s\n", rank, err.msg);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    double first = fabs(ref16.loss[0] - ref.loss[0]) / ref.loss[0];
    double last = fabs(ref16.loss[STEPS - 1] - ref.loss[STEPS - 1]) / ref.loss[STEPS - 1];
    bool close = first <= 1e-2 && last <= 1e-2, rounded = first > 0 && last > 0;
    if (rank == 0)
        printf("bf16 TP=1 x DP=1: loss %.5f -> %.5f, relative to fp32: %.2e at step 0, %.2e after "
               "step %d; bf16 values among its final weights: %.1f%% (fp32: %.1f%%)\n",
               ref16.loss[0], ref16.loss[STEPS - 1], first, last, STEPS, 100 * ref16.bf16_weights,
               100 * ref.bf16_weights);
    if (!close || !rounded || ref16.bf16_weights > ref.bf16_weights + 0.01) {
        if (rank == 0)
            fprintf(stderr, "bf16 against fp32: %s\n",
                    !close ? "more than 1e-2 apart"
                           : !rounded ? "identical: the operands were not rounded"
                                      : "the weights became bf16 values (no fp32 master copy)");
        failures++;
    }

    static const struct {
        int tp, dp;
        atom_precision precision;
    } layouts[] = {{2, 2, ATOM_PRECISION_FP32},
                   {4, 1, ATOM_PRECISION_FP32},
                   {1, 4, ATOM_PRECISION_FP32},
                   {2, 2, ATOM_PRECISION_BF16}};
    for (size_t li = 0; li < sizeof layouts / sizeof layouts[0]; li++) {
        int tp = layouts[li].tp, dp = layouts[li].dp;
        bool bf16 = layouts[li].precision == ATOM_PRECISION_BF16;
        const run_result *want = bf16 ? &ref16 : &ref;
        double tol = bf16 ? BF16_LAYOUT_TOL : 1e-4;
        coll_config cc = {.backend = COLL_BACKEND_MPI, .tensor_size = tp, .hang_timeout_s = 60,
                          .hang_action = COLL_HANG_RETURN, .progress = COLL_PROGRESS_POLL};
        coll_ctx *ctx;
        coll_err ce;
        if (coll_open(&cc, &ctx, &ce) != 0) {
            fprintf(stderr, "rank %d: coll_open TP=%d: %s\n", rank, tp, ce.msg);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        coll_group *tg = coll_group_of(ctx, COLL_TENSOR), *dg = coll_group_of(ctx, COLL_DATA);
        run_result res;
        int mismatches = 0;
        if (train(coll_group_rank(tg), tp, tp > 1 ? tg : NULL, dg, coll_group_rank(dg), dp,
                  bf16 ? NULL : &unsplit, &mismatches, layouts[li].precision, &res, &err) != 0) {
            fprintf(stderr, "rank %d: TP=%d x DP=%d: %s\n", rank, tp, dp, err.msg);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        double worst_loss = 0, worst_norm = 0;
        for (int s = 0; s < STEPS; s++) {
            worst_loss = fmax(worst_loss, fabs(res.loss[s] - want->loss[s]) / fabs(want->loss[s]));
            worst_norm = fmax(worst_norm, fabs(res.norm[s] - want->norm[s]) / want->norm[s]);
        }
        bool ok = worst_loss <= tol && worst_norm <= tol && mismatches == 0;
        if (!ok) {
            failures++;
            for (int s = 0; s < STEPS; s++)
                fprintf(stderr, "rank %d TP=%d x DP=%d%s step %d: loss %.7f (ref %.7f), norm %.7f "
                        "(ref %.7f)\n", rank, tp, dp, bf16 ? " bf16" : "", s, res.loss[s],
                        want->loss[s], res.norm[s], want->norm[s]);
        }
        double worst[2] = {worst_loss, worst_norm}, all[2];
        MPI_Allreduce(worst, all, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        if (rank == 0)
            printf("TP=%d x DP=%d%s: initial shards and logits %s; %d steps, largest relative "
                   "difference: loss %.2e, grad norm %.2e (limit %.0e)\n", tp, dp,
                   bf16 ? " bf16" : "", bf16 ? "not checked" : mismatches ? "DIFFER" : "match",
                   STEPS, all[0], all[1], tol);
        coll_close(ctx);
    }
    free(unsplit.params);
    free(unsplit.logits);
    int total;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0)
        printf("%s\n", total == 0 ? "all layouts match" : "MISMATCH");
    MPI_Finalize();
    return total == 0 ? 0 : 1;
}
