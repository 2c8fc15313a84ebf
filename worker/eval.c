/* worker/eval.c: a checkpoint's loss on a token file (infer.h), through the training forward
 * itself (atom_model_forward at TP 1), so it is the loss training computes for the same tokens. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "worker/data.h"
#include "worker/infer.h"

int atom_eval_run(const atom_infer_ckpt *ck, const char *data_path, atom_data_format format,
                  int batch, int max_batches, atom_eval_result *res, atom_err *err)
{
    memset(res, 0, sizeof *res);
    const atom_model_cfg *cfg = &ck->spec.model;
    int T = cfg->context;
    if (batch < 1)
        return atom_errf(err, "the batch must be at least 1 sequence, not %d", batch);
    if (max_batches < 0)
        return atom_errf(err, "batches must be 0 (the whole file) or more, not %d", max_batches);
    atom_data data;
    if (atom_data_open(&data, data_path, format, cfg->vocab, T, err) != 0)
        return -1;
    int64_t sequences = data.n_tokens / (T + 1);
    if (max_batches > 0 && sequences > (int64_t)max_batches * batch)
        sequences = (int64_t)max_batches * batch;
    if (sequences < 1) {
        atom_data_close(&data);
        return atom_errf(err, "data %s: fewer than %d tokens, one sequence of the model's "
                              "context + 1", data_path, T + 1);
    }
    if (sequences < batch)
        batch = (int)sequences;
    atom_model_opts mo = {
        .cfg = *cfg,
        .max_batch = batch,
        .backend = atom_backend_cpu(),
        .tp_rank = 0,
        .tp_size = 1,
        .precision = ck->spec.training.precision,
    };
    atom_model *model = NULL;
    int *tokens = malloc((size_t)batch * (T + 1) * sizeof(int));
    int rc = tokens ? 0 : atom_errf(err, "out of memory for a batch of %d sequences", batch);
    if (rc == 0)
        rc = atom_model_create(&mo, &model, err);
    if (rc == 0)
        rc = atom_model_upload(model, ATOM_BUF_PARAMS, ck->params, err);
    double weighted = 0.0, t0 = atom_monotonic();
    for (int64_t first = 0; rc == 0 && first < sequences; first += batch) {
        int B = sequences - first < batch ? (int)(sequences - first) : batch;
        rc = atom_data_read_span(&data, first * (T + 1), B * (T + 1), tokens, err);
        float loss = 0;
        if (rc == 0)
            rc = atom_model_forward(model, tokens, B, &loss, err);
        weighted += (double)loss * B; /* a batch's loss is its mean over B*T targets */
    }
    res->seconds = atom_monotonic() - t0;
    if (rc == 0) {
        res->sequences = sequences;
        res->tokens = sequences * T;
        res->loss = weighted / (double)sequences;
        res->perplexity = exp(res->loss);
        res->tokens_per_s = res->seconds > 0 ? (double)res->tokens / res->seconds : 0.0;
    }
    atom_model_free(model);
    free(tokens);
    atom_data_close(&data);
    return rc;
}
