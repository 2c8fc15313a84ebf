/* scheduler/atomctl_export.c: `atomctl ckpt export SRC [-o OUT]`: a checkpoint as a folder that
 * transformers' GPT-2 loads (GPT2LMHeadModel.from_pretrained(OUT)): model.safetensors (the
 * checkpoints module writes it under GPT-2's names) and config.json (written here, from the
 * job spec the checkpoint records), plus the tokenizer's files once atom ships them.
 *
 * SRC: a checkpoint file, a checkpoint folder (its latest) or a `latest` link, resolved to the
 * file it names so the output is named after the step. OUT: a folder (made if missing), or a
 * path ending in .safetensors (config.json goes beside it). Without OUT: STEM-hf/ beside the
 * checkpoint (ckpt-0000000050.h5 -> ckpt-0000000050-hf/). */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoints/checkpoints.h"
#include "common/common.h"
#include "data/data.h"
#include "scheduler/atomctl.h"

/* GPT-2's <|endoftext|>, its only special token: bos and eos of GPT-2's config. */
#define GPT2_VOCAB 50257
#define GPT2_EOT 50256

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* SRC as the checkpoint file it names (a folder's latest, a link's target). */
static int resolve_source(const char *src, char *file, size_t size, atom_err *err)
{
    struct stat st;
    char link[PATH_MAX + 16];
    if (stat(src, &st) != 0)
        return atom_errf(err, "%s: %s", src, strerror(errno));
    snprintf(link, sizeof link, "%s%s", src, S_ISDIR(st.st_mode) ? "/latest" : "");
    char real[PATH_MAX];
    if (!realpath(link, real))
        return atom_errf(err, S_ISDIR(st.st_mode) ? "%s holds no committed checkpoint (%s: %s)"
                                                  : "%s: cannot resolve %s: %s",
                         src, link, strerror(errno));
    if (snprintf(file, size, "%s", real) >= (int)size)
        return atom_errf(err, "%s: path too long", real);
    return 0;
}

/* Where model.safetensors and config.json go. */
static int output_paths(const char *file, const char *out, char *dir, char *weights, size_t size,
                        atom_err *err)
{
    int n;
    if (out && ends_with(out, ".safetensors")) {
        snprintf(dir, size, "%s", out);
        char *slash = strrchr(dir, '/');
        if (slash)
            slash[slash == dir ? 1 : 0] = '\0';
        else
            snprintf(dir, size, ".");
        n = snprintf(weights, size, "%s", out);
    } else {
        if (out) {
            snprintf(dir, size, "%s", out);
        } else {
            snprintf(dir, size, "%s", file); /* .../ckpt-0000000050.h5 -> ...-hf */
            char *dot = strrchr(dir, '.'), *slash = strrchr(dir, '/');
            if (dot && (!slash || dot > slash))
                *dot = '\0';
            strncat(dir, "-hf", size - strlen(dir) - 1);
        }
        n = snprintf(weights, size, "%s/model.safetensors", dir);
    }
    if (n >= (int)size)
        return atom_errf(err, "output path too long");
    int rc = atom_make_dirs(dir, 0755);
    return rc ? atom_errf(err, "cannot create the folder %s: %s", dir, strerror(rc)) : 0;
}

/* The fields of transformers' GPT2Config that describe atom's model (docs/model.md): GELU in
 * its tanh form is "gelu_new", LayerNorm's eps 1e-5, the LM head tied to wte, no dropout. The
 * vocabulary is V, the padded rows being dropped by the export. */
static json_t *gpt2_config(const atom_spec *spec, const atom_ckpt_shape *shape)
{
    const atom_model_cfg *m = &spec->model;
    json_t *c = json_object();
    json_object_set_new(c, "architectures", json_pack("[s]", "GPT2LMHeadModel"));
    json_object_set_new(c, "model_type", json_string("gpt2"));
    json_object_set_new(c, "vocab_size", json_integer(m->vocab));
    json_object_set_new(c, "n_positions", json_integer(shape->context));
    json_object_set_new(c, "n_ctx", json_integer(shape->context));
    json_object_set_new(c, "n_embd", json_integer(shape->channels));
    json_object_set_new(c, "n_layer", json_integer(shape->layers));
    json_object_set_new(c, "n_head", json_integer(m->heads));
    json_object_set_new(c, "n_inner", json_null()); /* 4 x n_embd */
    json_object_set_new(c, "activation_function", json_string("gelu_new"));
    json_object_set_new(c, "layer_norm_epsilon", json_real(1e-5));
    json_object_set_new(c, "initializer_range", json_real(0.02));
    json_object_set_new(c, "resid_pdrop", json_real(0.0));
    json_object_set_new(c, "embd_pdrop", json_real(0.0));
    json_object_set_new(c, "attn_pdrop", json_real(0.0));
    json_object_set_new(c, "scale_attn_weights", json_true());
    json_object_set_new(c, "scale_attn_by_inverse_layer_idx", json_false());
    json_object_set_new(c, "reorder_and_upcast_attn", json_false());
    json_object_set_new(c, "tie_word_embeddings", json_true());
    json_object_set_new(c, "use_cache", json_true());
    json_object_set_new(c, "torch_dtype", json_string("float32"));
    if (spec->data.format == ATOM_DATA_UINT16 && m->vocab == GPT2_VOCAB) {
        json_object_set_new(c, "bos_token_id", json_integer(GPT2_EOT));
        json_object_set_new(c, "eos_token_id", json_integer(GPT2_EOT));
    }
    return c;
}

/* Writes text to path through path.tmp and a rename, so a reader never sees half a file. */
static int write_file(const char *path, const char *text, atom_err *err)
{
    char tmp[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return atom_errf(err, "cannot create %s: %s", tmp, strerror(errno));
    bool ok = fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        return atom_errf(err, "cannot write %s: %s", path, strerror(e));
    }
    return 0;
}

/* The job spec the checkpoint records, checked against the shape of its datasets. */
static int read_spec(const char *file, atom_spec *spec, atom_ckpt_shape *shape, atom_err *err)
{
    atom_ckpt_meta meta;
    atom_ckpt_err cerr = {{0}};
    if (atom_ckpt_read_info(file, &meta, shape, &cerr) != 0)
        return atom_errf(err, "%s", cerr.msg);
    int rc = meta.spec_json ? atom_spec_from_json(meta.spec_json, spec, err)
                            : atom_errf(err, "%s records no job spec: no config.json", file);
    atom_ckpt_meta_free(&meta);
    if (rc != 0)
        return -1;
    if (spec->model.layers != shape->layers || spec->model.channels != shape->channels ||
        spec->model.context != shape->context ||
        atom_padded_vocab(spec->model.vocab) != shape->padded_vocab)
        return atom_errf(err, "%s: its recorded spec and its datasets disagree on the model shape",
                         file);
    return 0;
}

static int write_config(const char *dir, const atom_spec *spec, const atom_ckpt_shape *shape,
                        atom_err *err)
{
    json_t *config = gpt2_config(spec, shape);
    char *text = json_dumps(config, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(15));
    json_decref(config);
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/config.json", dir);
    int rc = text ? write_file(path, text, err) : atom_errf(err, "out of memory");
    free(text);
    return rc;
}

/* The tokenizer's files (vocab.json, merges.txt, ...) that transformers' GPT2Tokenizer reads,
 * written into the export's folder for the tokenizer the job trained with: GPT-2's BPE for a
 * uint16 model of GPT-2's 50,257 ids (what atom-data prepare --tokenizer gpt2 makes). A bytes
 * model has no tokenizer transformers knows: its folder loads as a model, ids are bytes. */
static int write_tokenizer_files(const char *dir, const atom_spec *spec, atom_err *err)
{
    if (spec->data.format != ATOM_DATA_UINT16 || spec->model.vocab != 50257)
        return 0;
    atom_tokenizer *tok = NULL;
    int rc = atom_tokenizer_open("gpt2", &tok, err);
    rc = rc ? rc : atom_tokenizer_write_hf(tok, dir, spec->model.context, err);
    atom_tokenizer_close(tok);
    return rc;
}

int atomctl_ckpt_export(const char *src, const char *out)
{
    char file[PATH_MAX], dir[PATH_MAX], weights[PATH_MAX + 32];
    atom_err err = {{0}};
    atom_spec spec;
    atom_ckpt_shape shape;
    /* everything is checked before anything is written */
    int rc = resolve_source(src, file, sizeof file, &err);
    rc = rc ? rc : read_spec(file, &spec, &shape, &err);
    rc = rc ? rc : output_paths(file, out, dir, weights, sizeof weights, &err);
    if (rc == 0) {
        atom_ckpt_err cerr = {{0}};
        rc = atom_ckpt_export_safetensors(file, weights, stdout, &cerr);
        if (rc != 0)
            atom_errf(&err, "%s", cerr.msg);
    }
    rc = rc ? rc : write_config(dir, &spec, &shape, &err);
    rc = rc ? rc : write_tokenizer_files(dir, &spec, &err);
    if (rc != 0) {
        fprintf(stderr, "atomctl ckpt export: %s\n", err.msg);
        return ATOMCTL_FAILED;
    }
    printf("wrote %s and %s/config.json\n", weights, dir);
    if (ends_with(weights, "/model.safetensors"))
        printf("load it with transformers: GPT2LMHeadModel.from_pretrained(\"%s\")\n", dir);
    return ATOMCTL_OK;
}
