/* tests/common/test_spec_checks.c: the cross-field checks a researcher trips over (layout,
 * tensor-parallel divisibility, batch arithmetic, schedule, checkpoints), each reported at the key
 * to change, and the file-system check of the data file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "spec_test_util.h"

typedef struct check_case {
    const char *what;
    const char *yaml;
    int line, column;
    const char *key;
    const char *msg_part;
} check_case;

static const check_case check_cases[] = {
    {"gpus != tensor x data", DATA_LINE "resources: {gpus: 8}\nparallelism: {tensor: 2, data: 2}\n",
     2, 19, "resources.gpus", "tensor x parallelism.data is 2 x 2 = 4"},
    {"heads % tensor", DATA_LINE "model: {heads: 2, channels: 258}\nparallelism: {tensor: 4}\n", 3,
     23, "parallelism.tensor", "model.heads (2) is not a multiple of parallelism.tensor (4)"},
    /* 4C % tensor holds whenever heads % tensor and channels % heads do: it comes with them. */
    {"4C % tensor", DATA_LINE "parallelism: {tensor: 3}\n", 2, 23, "parallelism.tensor",
     "4 x model.channels (1024) is not a multiple of parallelism.tensor (3)"},
    {"padded vocab % tensor",
     DATA_LINE "model: {heads: 3, channels: 258}\nparallelism: {tensor: 3}\n", 3, 23,
     "parallelism.tensor", "padded vocabulary (256"},
    {"channels % heads", DATA_LINE "model: {heads: 3}\n", 2, 16, "model.heads",
     "model.channels (256) is not a multiple of model.heads (3)"},
    {"tensor > gpus_per_node",
     DATA_LINE "resources: {gpus_per_node: 2}\nparallelism: {tensor: 4}\n", 3, 23,
     "parallelism.tensor", "must fit in one node"},
    {"gpus_per_node % tensor",
     DATA_LINE "resources: {gpus_per_node: 6}\nparallelism: {tensor: 4}\n", 3, 23,
     "parallelism.tensor", "straddle nodes"},
    {"global_batch % (micro x data)",
     DATA_LINE "parallelism: {data: 2}\ntraining: {global_batch: 20, micro_batch: 3}\n", 3, 26,
     "training.global_batch", "the nearest that are: 18 and 24"},
    {"global_batch < micro x data",
     DATA_LINE "parallelism: {data: 4}\ntraining: {global_batch: 4, micro_batch: 2}\n", 3, 26,
     "training.global_batch", "at least one micro-batch"},
    {"warmup > steps", DATA_LINE "training: {steps: 10, warmup: 20}\n", 2, 31, "training.warmup",
     "longer than training.steps (10)"},
    {"min_lr > lr", DATA_LINE "training: {lr: 1e-4, min_lr: 1e-3}\n", 2, 30, "training.min_lr",
     "is more than training.lr"},
    {"wsd cooldown longer than the run",
     DATA_LINE "training: {steps: 100, warmup: 30, lr_schedule: wsd, cooldown_steps: 80}\n", 2,
     70, "training.cooldown_steps", "the cooldown (80 steps) is more than the schedule's 100"},
    {"wsd's default cooldown with a long warm-up",
     DATA_LINE "training: {steps: 100, warmup: 90, lr_schedule: wsd}\n", 2, 32,
     "training.warmup", "the cooldown (20 steps)"},
    {"cooldown without wsd", DATA_LINE "training: {cooldown_steps: 10}\n", 2, 28,
     "training.cooldown_steps", "applies to lr_schedule wsd only (this spec's is cosine)"},
    {"horizon shorter than warm-up",
     DATA_LINE "training: {warmup: 50, lr_decay_steps: 40}\n", 2, 40, "training.lr_decay_steps",
     "shorter than training.warmup (50 steps)"},
    {"bad cooldown shape", DATA_LINE "training: {lr_schedule: wsd, cooldown_shape: sqrt}\n", 2, 46,
     "training.cooldown_shape", "expected one of: 1-sqrt, linear"},
    {"two init sources", DATA_LINE "init: {checkpoint: /a, safetensors: /b.safetensors}\n", 2,
     37, "init.safetensors", "both set"},
    {"optimizer state from safetensors",
     DATA_LINE "init: {safetensors: /b, load: weights+optimizer}\n", 2, 31, "init.load",
     "needs init.checkpoint"},
    {"init from the job's own checkpoint folder",
     DATA_LINE "checkpoint: {dir: /runs/a}\ninit: {checkpoint: /runs/a/ckpt-0000000010.h5}\n", 3,
     20, "init.checkpoint", "inside this job's own checkpoint.dir (/runs/a)"},
    {"resume_step without a checkpoint", DATA_LINE "init: {resume_step: true}\n", 2, 21,
     "init.resume_step", "needs init.checkpoint"},
    {"checkpoint.every 0 with a dir", DATA_LINE "checkpoint: {dir: /tmp/x, every: 0}\n", 2, 34,
     "checkpoint.every", "at least 1"},
    {"data twice", DATA_LINE "data: {format: uint16}\n", 0, 0, "", ""},
    {"vocab too big for uint16", "data: {path: /x, format: uint16}\nmodel: {vocab: 100000}\n", 2,
     16, "model.vocab", "does not fit data.format uint16"},
    {"bytes with a small vocabulary", "data: {path: /x}\nmodel: {vocab: 100}\n", 2, 16,
     "model.vocab", "less than 256"},
    {"no data path", "name: a\n", 0, 0, "data.path", "is required"},
    {"GPT-2 XL's 25 heads on tensor 8",
     "data: {path: /x, format: uint16}\n"
     "model: {preset: gpt2-1558m}\nparallelism: {tensor: 8}\n",
     3, 23, "parallelism.tensor", "model.heads (25) is not a multiple of parallelism.tensor (8)"},
};

static void test_cross_field_checks(void **state)
{
    (void)state;
    int failed = 0;
    for (size_t i = 0; i < sizeof check_cases / sizeof check_cases[0]; i++) {
        const check_case *c = &check_cases[i];
        atom_spec s;
        atom_diags d = {0};
        int rc = parse_str(c->yaml, &s, &d);
        if (!c->msg_part[0]) /* a duplicate-section case: just must fail */
            failed += rc == 0;
        else
            failed += !diag_as_expected(c->what, rc, &d, c->line, c->column, c->key, c->msg_part);
        atom_diags_free(&d);
    }
    assert_int_equal(failed, 0);
}

/* A spec built in code (no file, no positions): same checks, position 0, and out-of-range fields
 * are reported instead of dividing by zero. */
static void test_check_without_positions(void **state)
{
    (void)state;
    atom_spec s;
    atom_diags d = {0};
    atom_spec_defaults(&s);
    snprintf(s.data.path, sizeof s.data.path, "/x");
    assert_int_equal(atom_spec_check(&s, NULL, &d), 0);
    s.parallelism.tensor = 2;
    assert_int_equal(atom_spec_check(&s, "plan", &d), -1);
    assert_int_equal(d.count, 1);
    assert_string_equal(d.items[0].key, "resources.gpus");
    assert_int_equal(d.items[0].line, 0);
    atom_diags_free(&d);

    atom_spec_defaults(&s);
    snprintf(s.data.path, sizeof s.data.path, "/x");
    s.parallelism.tensor = 0;
    s.training.micro_batch = 0;
    s.model.heads = 0;
    s.training.lr = -1;
    assert_int_equal(atom_spec_check(&s, "plan", &d), -1);
    assert_int_equal(d.count, 4);
    atom_diags_free(&d);
}

static void write_bytes(const char *path, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (size_t i = 0; i < n; i++)
        fputc('a' + (int)(i % 26), f);
    fclose(f);
}

static void test_data_file_checks(void **state)
{
    (void)state;
    char dir[] = "/tmp/atom-test-data-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/tokens.bin", dir);
    atom_spec s;
    atom_diags d = {0};
    atom_spec_defaults(&s); /* gpt-tiny: context 128, so a sample is 129 tokens */
    snprintf(s.data.path, sizeof s.data.path, "%s", path);

    assert_int_equal(atom_spec_check_data(&s, "t.yaml", &d), -1); /* missing */
    assert_non_null(strstr(d.items[0].msg, "No such file"));
    assert_string_equal(d.items[0].key, "data.path");
    atom_diags_free(&d);

    write_bytes(path, 129); /* exactly one sample's worth: not more than context + 1 */
    assert_int_equal(atom_spec_check_data(&s, "t.yaml", &d), -1);
    assert_non_null(strstr(d.items[0].msg, "holds 129 tokens"));
    atom_diags_free(&d);

    write_bytes(path, 130);
    assert_int_equal(atom_spec_check_data(&s, "t.yaml", &d), 0);
    assert_int_equal(d.count, 0);

    s.data.format = ATOM_DATA_UINT16; /* 130 bytes = 65 tokens of 2 bytes */
    assert_int_equal(atom_spec_check_data(&s, "t.yaml", &d), -1);
    assert_non_null(strstr(d.items[0].msg, "holds 65 tokens"));
    atom_diags_free(&d);
    write_bytes(path, 301); /* odd: cannot be uint16 */
    assert_int_equal(atom_spec_check_data(&s, "t.yaml", &d), -1);
    assert_string_equal(d.items[0].key, "data.format");
    atom_diags_free(&d);

    /* uint16 ids at or past the vocabulary: another tokenizer's file. */
    FILE *f = fopen(path, "wb");
    for (int i = 0; i < 200; i++) {
        int id = i == 150 ? 256 : i; /* gpt-tiny's vocabulary is 256: ids 0..255 */
        fputc(id & 0xff, f);
        fputc(id >> 8, f);
    }
    fclose(f);
    assert_int_equal(atom_spec_check_data(&s, "t.yaml", &d), -1);
    assert_string_equal(d.items[0].key, "model.vocab");
    assert_non_null(strstr(d.items[0].msg, "token id 256 at byte 300"));
    atom_diags_free(&d);
    s.model.vocab = 257;
    assert_int_equal(atom_spec_check_data(&s, "t.yaml", &d), 0);
    s.model.vocab = 256;

    snprintf(s.data.path, sizeof s.data.path, "%s", dir); /* a folder */
    assert_int_equal(atom_spec_check_data(&s, "t.yaml", &d), -1);
    assert_non_null(strstr(d.items[0].msg, "not a regular file"));
    atom_diags_free(&d);

    /* checkpoint.dir that is a file */
    s.data.format = ATOM_DATA_BYTES;
    snprintf(s.data.path, sizeof s.data.path, "%s", path);
    snprintf(s.checkpoint.dir, sizeof s.checkpoint.dir, "%s", path);
    assert_int_equal(atom_spec_check_data(&s, "t.yaml", &d), -1);
    assert_string_equal(d.items[0].key, "checkpoint.dir");
    atom_diags_free(&d);
    s.checkpoint.dir[0] = '\0';

    /* init's source must exist at submit; a safetensors source must be a file */
    snprintf(s.init.checkpoint, sizeof s.init.checkpoint, "%s/no-such-ckpt", dir);
    assert_int_equal(atom_spec_check_data(&s, "t.yaml", &d), -1);
    assert_string_equal(d.items[0].key, "init.checkpoint");
    assert_non_null(strstr(d.items[0].msg, "no-such-ckpt: No such file"));
    atom_diags_free(&d);
    s.init.checkpoint[0] = '\0';
    snprintf(s.init.safetensors, sizeof s.init.safetensors, "%s", dir);
    assert_int_equal(atom_spec_check_data(&s, "t.yaml", &d), -1);
    assert_string_equal(d.items[0].key, "init.safetensors");
    assert_non_null(strstr(d.items[0].msg, "is not a regular file"));
    atom_diags_free(&d);
    snprintf(s.init.safetensors, sizeof s.init.safetensors, "%s", path);
    assert_int_equal(atom_spec_check_data(&s, "t.yaml", &d), 0);
    s.init.safetensors[0] = '\0';

    if (geteuid() !=
        0) { /* root reads anything: the permission case only means something otherwise */
        s.checkpoint.dir[0] = '\0';
        chmod(path, 0);
        assert_int_equal(atom_spec_check_data(&s, "t.yaml", &d), -1);
        assert_non_null(strstr(d.items[0].msg, "not readable"));
        atom_diags_free(&d);
    }
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cross_field_checks),
        cmocka_unit_test(test_check_without_positions),
        cmocka_unit_test(test_data_file_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
