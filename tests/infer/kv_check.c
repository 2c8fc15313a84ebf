/* tests/infer/kv_check.c: the key/value-cache generator against the training forward recomputed
 * from scratch, on a real checkpoint. Usage: kv_check CKPT PROMPT_LEN TOKENS
 *
 * Greedy generation after the first PROMPT_LEN bytes of the GPL text; at every step the
 * generator's logits must equal, within 1e-5, those of atom_model_forward (the training
 * forward at TP 1) run from scratch over the tokens the cache holds (the last `length` tokens
 * of the sequence: all of them before the context is full, the slid window after), and the
 * greedy ids must be the same. Exit 0 and "kv_check: ok ..." when they are. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "worker/infer.h"

#define TEXT "/usr/share/common-licenses/GPL-3"

static int argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: kv_check CKPT PROMPT_LEN TOKENS\n");
        return 2;
    }
    MPI_Init(&argc, &argv);
    atom_err err = {{0}};
    atom_infer_ckpt ck;
    if (atom_infer_ckpt_load(argv[1], MPI_COMM_SELF, &ck, &err) != 0) {
        fprintf(stderr, "kv_check: %s\n", err.msg);
        return 1;
    }
    int n_prompt = atoi(argv[2]), tokens = atoi(argv[3]);
    int T = ck.spec.model.context, V = ck.spec.model.vocab;
    int Vp = (int)ck.table.params[ATOM_P_WTE].shape[0];
    FILE *f = fopen(TEXT, "rb");
    int *seq = calloc((size_t)n_prompt + tokens, sizeof(int));
    for (int i = 0; f && i < n_prompt; i++)
        seq[i] = fgetc(f);
    if (f)
        fclose(f);

    /* the reference: the training model at TP 1, batch 1, with the checkpoint's weights */
    atom_model_opts mo = {.cfg = ck.spec.model, .max_batch = 1, .backend = atom_backend_cpu(),
                          .tp_rank = 0, .tp_size = 1, .precision = ck.spec.training.precision};
    atom_model *model = NULL;
    atom_generator *g = NULL;
    int *window = calloc((size_t)T + 1, sizeof(int));
    float *ref = malloc((size_t)T * Vp * sizeof(float));
    if (atom_model_create(&mo, &model, &err) != 0 ||
        atom_model_upload(model, ATOM_BUF_PARAMS, ck.params, &err) != 0 ||
        atom_generator_create(&ck, &g, &err) != 0 ||
        atom_generator_feed(g, seq, n_prompt, &err) != 0) {
        fprintf(stderr, "kv_check: %s\n", err.msg);
        return 1;
    }
    int n = n_prompt, slides = 0;
    double worst = 0.0;
    for (int step = 0; step < tokens; step++) {
        int len = atom_generator_length(g);
        if (len > T || len > n) {
            fprintf(stderr, "kv_check: the cache holds %d positions (context %d, %d tokens)\n",
                    len, T, n);
            return 1;
        }
        /* from scratch: the cache's tokens, padded to T+1 (the causal forward's logits at
         * position len-1 do not see the padding) */
        memset(window, 0, (size_t)(T + 1) * sizeof(int));
        memcpy(window, seq + n - len, (size_t)len * sizeof(int));
        if (atom_model_forward(model, window, 1, NULL, &err) != 0 ||
            atom_model_copy_logits(model, ref, &err) != 0) {
            fprintf(stderr, "kv_check: %s\n", err.msg);
            return 1;
        }
        const float *want = ref + (size_t)(len - 1) * Vp, *got = atom_generator_logits(g);
        for (int v = 0; v < V; v++) {
            double d = fabs((double)want[v] - got[v]);
            worst = d > worst ? d : worst;
            if (!(d <= 1e-5)) {
                fprintf(stderr, "kv_check: step %d (cache %d): logit %d is %.8g with the cache, "
                        "%.8g from scratch\n", step, len, v, got[v], want[v]);
                return 1;
            }
        }
        int id = argmax(got, V), id_ref = argmax(want, V);
        if (id != id_ref || id != atom_sample_token(got, V, 0.0f, 0, 1, (uint64_t)step, ref)) {
            fprintf(stderr, "kv_check: step %d: greedy id %d with the cache, %d from scratch\n",
                    step, id, id_ref);
            return 1;
        }
        seq[n++] = id;
        if (len < T) {
            if (atom_generator_feed(g, &id, 1, &err) != 0) {
                fprintf(stderr, "kv_check: %s\n", err.msg);
                return 1;
            }
        } else {
            atom_generator_reset(g);
            if (atom_generator_feed(g, seq + n - (T - 1), T - 1, &err) != 0) {
                fprintf(stderr, "kv_check: %s\n", err.msg);
                return 1;
            }
            slides++;
        }
    }
    printf("kv_check: ok: %d greedy tokens after %d, %d slides, largest logit difference %.3g\n",
           tokens, n_prompt, slides, worst);
    atom_generator_free(g);
    atom_model_free(model);
    atom_infer_ckpt_free(&ck);
    free(seq);
    free(window);
    free(ref);
    MPI_Finalize();
    return 0;
}
