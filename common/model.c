/* common/model.c: the named model presets (GPT-2's published shapes plus gpt-tiny) and the
 * parameter count of the model docs/model.md defines. */
#include "common/common.h"

#include <string.h>

typedef struct model_preset {
    const char *name;
    atom_model_cfg cfg; /* layers, channels, heads, vocab, context */
} model_preset;

static const model_preset presets[] = {
    {"gpt-tiny", {4, 256, 4, 256, 128}},
    {"gpt2-124m", {12, 768, 12, 50257, 1024}},
    {"gpt2-350m", {24, 1024, 16, 50257, 1024}},
    {"gpt2-774m", {36, 1280, 20, 50257, 1024}},
    {"gpt2-1558m", {48, 1600, 25, 50257, 1024}},
};

int atom_model_preset(const char *name, atom_model_cfg *cfg)
{
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        if (strcmp(presets[i].name, name) == 0) {
            *cfg = presets[i].cfg;
            return 0;
        }
    }
    return -1;
}

const char *atom_model_preset_name(int i)
{
    if (i < 0 || (size_t)i >= sizeof presets / sizeof presets[0])
        return NULL;
    return presets[i].name;
}

int64_t atom_model_params(const atom_model_cfg *cfg)
{
    int64_t C = cfg->channels, L = cfg->layers, T = cfg->context;
    int64_t Vp = atom_padded_vocab(cfg->vocab);
    /* wte + wpe + per layer (ln1 2C, qkv 3C*C+3C, attproj C*C+C, ln2 2C, fc 4C*C+4C,
     * fcproj 4C*C+C) + lnf 2C */
    return Vp * C + T * C + L * (12 * C * C + 13 * C) + 2 * C;
}
