/* worker/infer_ckpt.c: a checkpoint of any TP x DP layout loaded whole (TP 1) into host memory
 * for atom-infer: the checkpoints module reads each parameter's full tensor (its load at any
 * layout); the AdamW moments, which inference does not need, pass through one scratch buffer. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "worker/ckpt_tensors.h"
#include "worker/infer.h"

/* PATH as the checkpoint file it names: a folder's latest, a link's target. */
static int resolve(const char *path, char *file, size_t size, atom_err *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return atom_errf(err, "checkpoint %s: %s", path, strerror(errno));
    char link[ATOM_PATH_MAX + 16];
    if (snprintf(link, sizeof link, "%s%s", path, S_ISDIR(st.st_mode) ? "/latest" : "") >=
        (int)sizeof link)
        return atom_errf(err, "checkpoint %s: path too long", path);
    char real[PATH_MAX];
    if (!realpath(link, real)) {
        if (S_ISDIR(st.st_mode))
            return atom_errf(err, "checkpoint folder %s holds no committed checkpoint (no "
                                  "latest)", path);
        return atom_errf(err, "checkpoint %s: %s", path, strerror(errno));
    }
    if (snprintf(file, size, "%s", real) >= (int)size)
        return atom_errf(err, "checkpoint %s: path too long", real);
    return 0;
}

int atom_infer_ckpt_load(const char *path, MPI_Comm comm, atom_infer_ckpt *ck, atom_err *err)
{
    memset(ck, 0, sizeof *ck);
    if (resolve(path, ck->path, sizeof ck->path, err) != 0)
        return -1;
    /* the metadata first: the job spec gives the model's shape */
    atom_ckpt_meta meta;
    atom_ckpt_err cerr;
    if (atom_ckpt_load(ck->path, comm, NULL, 0, &meta, false, &cerr) != 0)
        return atom_errf(err, "%s", cerr.msg);
    ck->step = meta.step;
    ck->tp = meta.tp;
    ck->dp = meta.dp;
    snprintf(ck->tokenizer, sizeof ck->tokenizer, "%s", meta.tokenizer);
    int rc = 0;
    if (!meta.spec_json || !meta.spec_json[0])
        rc = atom_errf(err, "checkpoint %s records no job spec: its model's shape is unknown",
                       ck->path);
    else if (atom_spec_from_json(meta.spec_json, &ck->spec, err) != 0)
        rc = -1;
    else if (meta.vocab != ck->spec.model.vocab)
        rc = atom_errf(err, "checkpoint %s: its vocabulary %lld is not its spec's %d", ck->path,
                       (long long)meta.vocab, ck->spec.model.vocab);
    atom_ckpt_meta_free(&meta);
    if (rc != 0)
        return -1;
    if (atom_param_table_build(&ck->table, &ck->spec.model, 0, 1, err) != 0)
        return -1;

    int64_t largest = 0;
    for (int i = 0; i < ATOM_N_PARAMS; i++)
        if (ck->table.params[i].numel > largest)
            largest = ck->table.params[i].numel;
    ck->params = malloc((size_t)ck->table.total * sizeof(float));
    float *moments = malloc((size_t)largest * sizeof(float));
    if (!ck->params || !moments) {
        free(moments);
        atom_infer_ckpt_free(ck);
        return atom_errf(err, "out of memory for %lld parameters", (long long)ck->table.total);
    }
    atom_ckpt_tensor tensors[ATOM_N_PARAMS];
    atom_ckpt_tensors_of(&ck->table, ck->params, ck->params, ck->params, tensors);
    for (int i = 0; i < ATOM_N_PARAMS; i++)
        tensors[i].adam_m = tensors[i].adam_v = moments; /* read one tensor at a time */
    rc = atom_ckpt_load(ck->path, comm, tensors, ATOM_N_PARAMS, NULL, true, &cerr);
    free(moments);
    if (rc != 0) {
        atom_infer_ckpt_free(ck);
        return atom_errf(err, "%s", cerr.msg);
    }
    return 0;
}

void atom_infer_ckpt_free(atom_infer_ckpt *ck)
{
    free(ck->params);
    ck->params = NULL;
}

int atom_infer_ckpt_tokenizer(const atom_infer_ckpt *ck, const char *override, char *name,
                              size_t size, atom_err *err)
{
    const char *pick = override && override[0] ? override
                       : ck->tokenizer[0]       ? ck->tokenizer
                       : ck->spec.data.format == ATOM_DATA_BYTES || ck->spec.model.vocab <= 256
                           ? "bytes"
                           : NULL;
    if (!pick)
        return atom_errf(err, "checkpoint %s does not record the tokenizer its uint16 data was "
                              "made with: pass --tokenizer (gpt2 or bytes)", ck->path);
    snprintf(name, size, "%s", pick);
    return 0;
}
