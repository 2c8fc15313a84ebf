/* tests/common/test_spec.c: the job spec as researchers write it: defaults, the example specs,
 * every kind of malformed file with the file:line:column and key it must report, all errors at
 * once, nearest-key hints, derived defaults, relative paths, the JSON round trip, and the
 * reference page listing every key. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/spec_internal.h"
#include "spec_test_util.h"

static const char *source_dir(void)
{
    const char *s = getenv("ATOM_SOURCE_DIR");
    return s ? s : ".";
}

static void test_defaults(void **state)
{
    (void)state;
    atom_spec s;
    atom_spec_defaults(&s);
    assert_string_equal(s.name, "job");
    assert_string_equal(s.project, "default");
    assert_int_equal(s.priority, 100);
    assert_int_equal(s.resources.gpus, 1);
    assert_int_equal(s.resources.device, ATOM_DEVICE_AUTO);
    assert_int_equal(s.parallelism.tensor, 1);
    assert_int_equal(s.parallelism.data, 1);
    assert_string_equal(s.model_preset, "gpt-tiny");
    assert_int_equal(s.model.channels, 256);
    assert_int_equal(s.training.steps, 1000);
    assert_int_equal(s.training.micro_batch, 8);
    assert_int_equal(s.training.global_batch, 8);
    assert_true(s.training.lr == 3e-4);
    assert_true(s.training.min_lr == 3e-5);
    assert_int_equal(s.training.lr_schedule, ATOM_LR_COSINE);
    assert_int_equal(s.training.seed, 1234);
    assert_int_equal(s.training.precision, ATOM_PRECISION_FP32);
    assert_string_equal(s.checkpoint.dir, "");
    assert_true(s.checkpoint.async);
    assert_int_equal(s.restart.max_restarts, 3);
    assert_int_equal(s.restart.heartbeat_timeout, 300);

    /* The smallest valid spec: everything else comes from the defaults. */
    atom_diags d = {0};
    assert_int_equal(parse_str(DATA_LINE, &s, &d), 0);
    assert_int_equal(d.count, 0);
    assert_string_equal(s.name, "t"); /* from the file name t.yaml */
    assert_int_equal(s.resources.gpus, 1);
    assert_int_equal(atom_spec_accum_steps(&s), 1);
    atom_diags_free(&d);
}

/* The README's job, exactly as the issue wrote it. */
static void test_tiny_cpu_example(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/configs/examples/tiny-cpu.yaml", source_dir());
    atom_spec s;
    atom_diags d = {0};
    int rc = atom_spec_load(path, &s, &d);
    dump_diags(&d);
    assert_int_equal(rc, 0);
    assert_string_equal(s.name, "tiny-shakespeare");
    assert_string_equal(s.project, "lm-research");
    assert_int_equal(s.resources.gpus, 4);
    assert_int_equal(s.resources.time_limit, 600);
    assert_int_equal(s.resources.device, ATOM_DEVICE_CPU);
    assert_int_equal(s.parallelism.tensor, 2);
    assert_int_equal(s.parallelism.data, 2);
    assert_int_equal(s.model.layers, 4);
    assert_int_equal(s.training.steps, 50);
    assert_int_equal(atom_spec_accum_steps(&s), 2);
    assert_true(s.training.lr == 3e-4);
    assert_int_equal(s.checkpoint.every, 25);
    assert_int_equal(s.restart.heartbeat_timeout, 60);
    /* Its data file is on every Debian machine: the file-system check passes too. */
    assert_int_equal(atom_spec_check_data(&s, path, &d), 0);
    atom_diags_free(&d);
}

/* Every file in configs/examples/ validates, and survives the JSON round trip unchanged. */
static void test_every_example_validates(void **state)
{
    (void)state;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/configs/examples", source_dir());
    DIR *dh = opendir(dir);
    assert_non_null(dh);
    int files = 0;
    struct dirent *e;
    while ((e = readdir(dh))) {
        size_t n = strlen(e->d_name);
        if (n < 5 || strcmp(e->d_name + n - 5, ".yaml") != 0)
            continue;
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        atom_spec s, back;
        atom_diags d = {0};
        int rc = atom_spec_load(path, &s, &d);
        if (rc != 0)
            fprintf(stderr, "example %s does not validate:\n", e->d_name);
        dump_diags(&d);
        assert_int_equal(rc, 0);
        char *json = atom_spec_to_json(&s);
        atom_err err = {{0}};
        assert_int_equal(atom_spec_from_json(json, &back, &err), 0);
        assert_memory_equal(&s, &back, sizeof s);
        free(json);
        atom_diags_free(&d);
        files++;
    }
    closedir(dh);
    assert_true(files >= 3); /* tiny-cpu, gpt2-124m-64gpu, gpt2-1.5b-1024gpu at least */
}

static void test_large_examples(void **state)
{
    (void)state;
    char path[4096];
    atom_spec s;
    atom_diags d = {0};
    snprintf(path, sizeof path, "%s/configs/examples/gpt2-124m-64gpu.yaml", source_dir());
    assert_int_equal(atom_spec_load(path, &s, &d), 0);
    assert_int_equal(s.resources.gpus, 64);
    assert_int_equal(s.resources.gpus_per_node, 8);
    assert_int_equal(s.model.vocab, 50257);
    assert_int_equal(atom_model_params(&s.model), 124475904);
    snprintf(path, sizeof path, "%s/configs/examples/gpt2-1.5b-1024gpu.yaml", source_dir());
    assert_int_equal(atom_spec_load(path, &s, &d), 0);
    assert_int_equal(s.resources.gpus, 1024);
    assert_int_equal(s.parallelism.tensor, 8);
    assert_int_equal(s.parallelism.data, 128);
    assert_int_equal(s.model.layers, 48);
    assert_int_equal(s.model.channels, 1600);
    assert_int_equal(s.model.heads, 32); /* the override wins over the preset's 25 */
    assert_string_equal(s.model_preset, "gpt2-1558m");
    assert_int_equal(d.count, 0);
    atom_diags_free(&d);
}

/* One malformed input: the diagnostic it must produce. */
typedef struct bad_case {
    const char *what;
    const char *yaml;
    size_t len; /* 0: strlen */
    int line, column;
    const char *key;
    const char *msg_part;
} bad_case;

#define NEST40 "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["

static const bad_case bad_cases[] = {
    {"unknown key", DATA_LINE "training: {micro_bach: 4}\n", 0, 2, 12, "training.micro_bach",
     "did you mean 'micro_batch'?"},
    {"string for an integer", DATA_LINE "training: {steps: \"50\"}\n", 0, 2, 19, "training.steps",
     "expected an integer, got the string \"50\""},
    {"float for an integer", DATA_LINE "training: {steps: 5.5}\n", 0, 2, 19, "training.steps",
     "expected an integer (digits only), got the number 5.5"},
    {"boolean for an integer", DATA_LINE "priority: true\n", 0, 2, 11, "priority", "boolean"},
    {"word for an integer", DATA_LINE "priority: high\n", 0, 2, 11, "priority",
     "expected an integer, got 'high'"},
    {"negative count", DATA_LINE "training: {micro_batch: -4}\n", 0, 2, 25, "training.micro_batch",
     "must be a count: 1 or more, got -4"},
    {"out of range", DATA_LINE "priority: 5000\n", 0, 2, 11, "priority",
     "out of range: must be between 0 and 1000"},
    {"int64 overflow", DATA_LINE "training: {seed: 99999999999999999999}\n", 0, 2, 18,
     "training.seed", "out of range"},
    {"int overflow", DATA_LINE "resources: {gpus: 4294967297}\n", 0, 2, 19, "resources.gpus",
     "out of range"},
    {"string for a number", DATA_LINE "training: {lr: fast}\n", 0, 2, 16, "training.lr",
     "expected a number"},
    {"nan", DATA_LINE "training: {lr: .nan}\n", 0, 2, 16, "training.lr", "expected a number"},
    {"zero lr", DATA_LINE "training: {lr: 0}\n", 0, 2, 16, "training.lr", "more than 0"},
    {"bad boolean", DATA_LINE "checkpoint: {async: maybe}\n", 0, 2, 21, "checkpoint.async",
     "expected true or false"},
    {"bad duration", DATA_LINE "restart: {heartbeat_timeout: 10x}\n", 0, 2, 30,
     "restart.heartbeat_timeout", "expected a duration"},
    {"unknown enum", DATA_LINE "resources: {device: gpu}\n", 0, 2, 21, "resources.device",
     "expected one of: auto, cpu, cuda"},
    {"unknown precision", DATA_LINE "training: {precision: fp16}\n", 0, 2, 23,
     "training.precision",
     "unknown value 'fp16' (did you mean 'fp32'?); expected one of: fp32, bf16"},
    {"unknown preset", DATA_LINE "model: {preset: gpt2-124n}\n", 0, 2, 17, "model.preset",
     "did you mean 'gpt2-124m'?"},
    {"bad name", DATA_LINE "name: my job!\n", 0, 2, 7, "name", "not a valid name"},
    {"no value", DATA_LINE "name:\n", 0, 2, 6, "name", "has no value"},
    {"mapping for a scalar", DATA_LINE "name: {a: 1}\n", 0, 2, 7, "name", "got a mapping"},
    {"duplicate key", DATA_LINE "name: a\nname: b\n", 0, 3, 1, "name",
     "duplicate key 'name' (first given on line 2)"},
    {"duplicate nested key", DATA_LINE "training: {steps: 5, steps: 6}\n", 0, 2, 22,
     "training.steps", "duplicate key"},
    {"duplicate section", DATA_LINE "model: {}\nmodel: {}\n", 0, 3, 1, "model",
     "duplicate section"},
    {"sequence for a mapping", DATA_LINE "training: [1, 2]\n", 0, 2, 11, "training",
     "expected a mapping of keys"},
    {"scalar for a mapping", DATA_LINE "training: fast\n", 0, 2, 11, "training", "got 'fast'"},
    {"sequence at the top", "- a\n- b\n", 0, 1, 1, "", "at the top level, got a sequence"},
    {"scalar at the top", "hello\n", 0, 1, 1, "", "at the top level"},
    {"anchor", DATA_LINE "name: &n a\n", 0, 2, 7, "name", "anchor '&n' is not allowed"},
    {"alias", DATA_LINE "name: &n a\nproject: *n\n", 0, 3, 10, "project",
     "alias '*n' is not allowed"},
    {"tag", DATA_LINE "priority: !!int 5\n", 0, 2, 11, "priority", "tag"},
    {"custom tag", DATA_LINE "training: !python/object {}\n", 0, 2, 11, "training", "tag"},
    {"complex key", DATA_LINE "? [a]\n: b\n", 0, 2, 3, "", "a key must be a plain word"},
    {"alias in a sequence", DATA_LINE "name: &n a\nx: [1, *n]\n", 0, 3, 8, "x[1]", "alias"},
    {"deep nesting", DATA_LINE "x: " NEST40 "\n", 0, 2, 35,
     "x[0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0]["
     "0]",
     "nesting deeper than 32"},
    {"two documents", DATA_LINE "---\nname: b\n", 0, 2, 1, "", "one YAML document"},
    {"empty file", "", 0, 0, 0, "", "empty"},
    {"only a comment", "# nothing\n", 0, 0, 0, "", "the spec is empty"},
    {"syntax error", DATA_LINE "training: {steps: 5\n", 0, 3, 1, "training", "YAML syntax error"},
    {"bad indentation", DATA_LINE "training:\n  steps: 5\n bad: 1\n", 0, 4, 2, "",
     "YAML syntax error"},
    {"non-UTF-8 (Latin-1)", DATA_LINE "name: caf\xe9\n", 0, 2, 10, "", "unreadable text"},
    {"binary garbage",
     "\x7f"
     "ELF\x02\x01\x01\x00\x00\x00\x00",
     11, 1, 1, "", "unreadable text"},
    {"NUL byte", DATA_LINE "name: a\0b\n", sizeof(DATA_LINE "name: a\0b\n") - 1, 2, 8, "",
     "unreadable text"},
    {"lr in the wrong section", DATA_LINE "model: {lr: 3e-4}\n", 0, 2, 9, "model.lr",
     "did you mean 'training.lr' (it belongs under training)?"},
    {"another tool's name", DATA_LINE "training: {learning_rate: 3e-4}\n", 0, 2, 12,
     "training.learning_rate", "did you mean 'training.lr'?"},
    {"nanoGPT's batch_size (per GPU)", DATA_LINE "training: {batch_size: 12}\n", 0, 2, 12,
     "training.batch_size", "did you mean 'training.micro_batch'?"},
    {"misspelt section", DATA_LINE "trainig: {steps: 5}\n", 0, 2, 1, "trainig",
     "did you mean 'training'?"},
    {"exponent for an integer", DATA_LINE "training: {steps: 1e3}\n", 0, 2, 19, "training.steps",
     "got the number 1e3"},
    {"typo in the wrong section", DATA_LINE "micro_bach: 4\n", 0, 2, 1, "micro_bach",
     "did you mean 'training.micro_batch'?"},
    {"empty path", "data: {path: \"\"}\n", 0, 1, 14, "data.path", "the path is empty"},
    {"NUL through an escape", DATA_LINE "name: \"a\\0b\"\n", 0, 2, 7, "name", "holds a NUL byte"},
    {"duration too long", DATA_LINE "restart: {heartbeat_timeout: 8d}\n", 0, 2, 30,
     "restart.heartbeat_timeout", "out of range: must be between 1s and 604800s"},
    {"zero heartbeat", DATA_LINE "restart: {heartbeat_timeout: 0}\n", 0, 2, 30,
     "restart.heartbeat_timeout", "out of range"},
    {"long value cut short",
     DATA_LINE "resources: {device: "
               "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx}\n",
     0, 2, 21, "resources.device", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...'"},
    {"non-ASCII value escaped", DATA_LINE "resources: {device: gp\xc3\xbc}\n", 0, 2, 21,
     "resources.device", "unknown value 'gp\\xc3\\xbc'"},
    {"far from any key", DATA_LINE "zzzzzzzz: 1\n", 0, 2, 1, "zzzzzzzz",
     "valid keys at the top level"},
};

static void test_malformed(void **state)
{
    (void)state;
    int failed = 0;
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *c = &bad_cases[i];
        atom_spec s;
        atom_diags d = {0};
        size_t len = c->len ? c->len : strlen(c->yaml);
        int rc = atom_spec_parse(c->yaml, len, "t.yaml", "/base", &s, &d);
        failed += !diag_as_expected(c->what, rc, &d, c->line, c->column, c->key, c->msg_part);
        atom_diags_free(&d);
    }
    assert_int_equal(failed, 0);
}

static void test_huge_file(void **state)
{
    (void)state;
    size_t len = ATOM_SPEC_MAX_BYTES + 1;
    char *big = malloc(len);
    assert_non_null(big);
    memset(big, '#', len);
    atom_spec s;
    atom_diags d = {0};
    assert_int_equal(atom_spec_parse(big, len, "t.yaml", NULL, &s, &d), -1);
    assert_non_null(find_diag(&d, 0, 0, "", "more than the limit"));
    atom_diags_free(&d);

    /* Through atom_spec_load: refused before parsing. */
    char path[] = "/tmp/atom-test-huge-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, big, len), (ssize_t)len);
    close(fd);
    assert_int_equal(atom_spec_load(path, &s, &d), -1);
    assert_int_equal(d.count, 1);
    assert_non_null(strstr(d.items[0].msg, "limit"));
    unlink(path);
    atom_diags_free(&d);
    free(big);
}

/* The "billion laughs": nine levels of ten aliases would expand to 10^9 strings. Refused at the
 * first alias, each reported, nothing expanded. */
static void test_billion_laughs(void **state)
{
    (void)state;
    char text[4096];
    char *p = text + sprintf(text, DATA_LINE "a0: &a0 lol\n");
    for (int i = 1; i <= 9; i++) {
        p += sprintf(p, "a%d: &a%d [", i, i);
        for (int j = 0; j < 10; j++)
            p += sprintf(p, "%s*a%d", j ? "," : "", i - 1);
        p += sprintf(p, "]\n");
    }
    atom_spec s;
    atom_diags d = {0};
    assert_int_equal(atom_spec_parse(text, (size_t)(p - text), "t.yaml", NULL, &s, &d), -1);
    assert_non_null(find_diag(&d, 3, 10, "a1[0]", "alias '*a0' is not allowed"));
    assert_non_null(find_diag(&d, 2, 5, "a0", "anchor '&a0' is not allowed"));
    assert_true(d.count <= 101);
    atom_diags_free(&d);

    /* A file of nothing but aliases: the list of errors is capped too. */
    p = text + sprintf(text, "a: &a 1\nb:\n");
    for (int i = 0; i < 300; i++)
        p += sprintf(p, "- *a\n");
    assert_int_equal(atom_spec_parse(text, (size_t)(p - text), "t.yaml", NULL, &s, &d), -1);
    assert_int_equal(d.count, 101);
    assert_non_null(find_diag(&d, 0, 0, "", "more than 100 errors"));
    atom_diags_free(&d);
}

/* Many nodes within the size cap: refused, not walked. */
static void test_many_nodes(void **state)
{
    (void)state;
    size_t n = 30000;
    char *text = malloc(n * 4 + 16);
    char *p = text;
    p += sprintf(p, "x: [");
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, "1,");
    p += sprintf(p, "1]\n");
    atom_spec s;
    atom_diags d = {0};
    assert_int_equal(atom_spec_parse(text, (size_t)(p - text), "t.yaml", NULL, &s, &d), -1);
    int found = 0;
    for (int i = 0; i < d.count; i++)
        found += strstr(d.items[i].msg, "YAML nodes") != NULL;
    assert_int_equal(found, 1);
    atom_diags_free(&d);
    free(text);
}

/* A file with many mistakes reports each one, in file order, in one run. */
static void test_all_errors_at_once(void **state)
{
    (void)state;
    const char *yaml = "name: bad name\n"                      /* 1 */
                       "priority: -1\n"                        /* 2 */
                       "resources: {gpus: four}\n"             /* 3 */
                       "model: {preset: gpt-tiny, hedas: 4}\n" /* 4 */
                       "data: {path: d.txt, format: int8}\n"   /* 5 */
                       "training:\n"                           /* 6 */
                       "  steps: 10\n"                         /* 7 */
                       "  micro_batch: 2.5\n"                  /* 8 */
                       "  warmup: 20\n"                        /* 9 */
                       "checkpoint: {every: 0, dir: ck}\n";    /* 10 */
    atom_spec s;
    atom_diags d = {0};
    assert_int_equal(parse_str(yaml, &s, &d), -1);
    dump_diags(&d);
    assert_non_null(find_diag(&d, 1, 7, "name", "not a valid name"));
    assert_non_null(find_diag(&d, 2, 11, "priority", "0 or more"));
    assert_non_null(find_diag(&d, 3, 19, "resources.gpus", "expected an integer"));
    assert_non_null(find_diag(&d, 4, 27, "model.hedas", "did you mean 'heads'?"));
    assert_non_null(find_diag(&d, 5, 29, "data.format", "expected one of: bytes, uint16"));
    assert_non_null(find_diag(&d, 8, 16, "training.micro_batch", "digits only"));
    assert_non_null(find_diag(&d, 9, 11, "training.warmup", "longer than training.steps"));
    assert_non_null(find_diag(&d, 10, 21, "checkpoint.every", "at least 1"));
    assert_int_equal(d.count, 8);
    for (int i = 1; i < d.count; i++)
        assert_true(d.items[i - 1].line <= d.items[i].line);
    atom_diags_free(&d);
}

/* A file of nothing but mistakes: the first hundred are listed, then one line says so. */
static void test_error_cap(void **state)
{
    (void)state;
    char *text = malloc(150 * 16 + 64);
    char *p = text + sprintf(text, DATA_LINE);
    for (int i = 0; i < 150; i++)
        p += sprintf(p, "zzzz%03d: 1\n", i);
    atom_spec s;
    atom_diags d = {0};
    assert_int_equal(atom_spec_parse(text, (size_t)(p - text), "t.yaml", NULL, &s, &d), -1);
    assert_int_equal(d.count, 101);
    assert_non_null(find_diag(&d, 2, 1, "zzzz000", "unknown key"));
    assert_non_null(find_diag(&d, 101, 1, "zzzz099", "unknown key"));
    assert_non_null(find_diag(&d, 0, 0, "", "more than 100 errors"));
    atom_diags_free(&d);
    free(text);
}

static void test_nearest(void **state)
{
    (void)state;
    const char *keys[] = {"steps", "global_batch", "micro_batch", "lr", "warmup", "seed"};
    assert_string_equal(atom_spec_nearest("micro_bach", keys, 6), "micro_batch");
    assert_string_equal(atom_spec_nearest("microbatch", keys, 6), "micro_batch");
    assert_string_equal(atom_spec_nearest("MICRO_BATCH", keys, 6), "micro_batch");
    assert_string_equal(atom_spec_nearest("step", keys, 6), "steps");
    assert_string_equal(atom_spec_nearest("warmpu", keys, 6), "warmup");
    assert_string_equal(atom_spec_nearest("global-batch", keys, 6), "global_batch");
    assert_null(atom_spec_nearest("tokenizer", keys, 6));
    assert_null(atom_spec_nearest("x", keys, 6));
}

static void test_preset_and_overrides(void **state)
{
    (void)state;
    atom_spec s;
    atom_diags d = {0};
    /* The override is written before the preset: it still wins. */
    assert_int_equal(parse_str(DATA_LINE "model: {layers: 2, preset: gpt2-124m, context: 256}\n"
                               "data2: 1\n", &s, &d), -1);
    assert_int_equal(d.count, 1); /* only data2 */
    assert_int_equal(s.model.layers, 2);
    assert_int_equal(s.model.context, 256);
    assert_int_equal(s.model.channels, 768);
    assert_string_equal(s.model_preset, "gpt2-124m");
    atom_diags_free(&d);
}

static void test_derived_defaults(void **state)
{
    (void)state;
    atom_spec s;
    atom_diags d = {0};
    /* gpus from tensor x data, global_batch from micro_batch x data, min_lr from lr */
    assert_int_equal(parse_str(DATA_LINE "parallelism: {tensor: 2, data: 3}\n"
                               "training: {micro_batch: 5, lr: 1e-3}\n", &s, &d), 0);
    assert_int_equal(s.resources.gpus, 6);
    assert_int_equal(s.training.global_batch, 15);
    assert_true(s.training.min_lr == 1e-4);
    /* data from gpus / tensor */
    assert_int_equal(
        parse_str(DATA_LINE "resources: {gpus: 8}\nparallelism: {tensor: 2}\n", &s, &d), 0);
    assert_int_equal(s.parallelism.data, 4);
    assert_int_equal(d.count, 0);
    atom_diags_free(&d);
}

static void test_relative_paths(void **state)
{
    (void)state;
    atom_spec s;
    atom_diags d = {0};
    assert_int_equal(
        parse_str("data: {path: corpus/tokens.bin}\ncheckpoint: {dir: ./ckpt}\n", &s, &d), 0);
    assert_string_equal(s.data.path, "/base/corpus/tokens.bin");
    assert_string_equal(s.checkpoint.dir, "/base/ckpt");
    assert_int_equal(parse_str("data: {path: /abs/t.bin}\n", &s, &d), 0);
    assert_string_equal(s.data.path, "/abs/t.bin");
    /* Longer than a path can be once resolved. */
    char long_spec[1200];
    snprintf(long_spec, sizeof long_spec, "data: {path: %01100d}\n", 7);
    assert_int_equal(parse_str(long_spec, &s, &d), -1);
    assert_non_null(find_diag(&d, 1, 14, "data.path", "longer than 1023 bytes"));
    atom_diags_free(&d);
    /* No base: left as written. */
    assert_int_equal(atom_spec_parse("data: {path: t.bin}\n", 20, "t.yaml", NULL, &s, &d), 0);
    assert_string_equal(s.data.path, "t.bin");

    /* atom_spec_load resolves against the spec file's own folder, as an absolute path. */
    char dir[] = "/tmp/atom-test-rel-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], expect[512];
    snprintf(path, sizeof path, "%s/job.yaml", dir);
    FILE *f = fopen(path, "w");
    fputs("data: {path: tokens.bin}\ncheckpoint: {dir: ck}\n", f);
    fclose(f);
    assert_int_equal(atom_spec_load(path, &s, &d), 0);
    snprintf(expect, sizeof expect, "%s/tokens.bin", dir);
    assert_string_equal(s.data.path, expect);
    assert_string_equal(s.name, "job");
    unlink(path);
    rmdir(dir);
    atom_diags_free(&d);
}

/* "~/..." is the loading user's home (the README example keeps its checkpoints there); "~user"
 * is refused, not resolved as a folder named "~user" next to the spec. */
static void test_home_paths(void **state)
{
    (void)state;
    atom_spec s;
    atom_diags d = {0};
    char *home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
    setenv("HOME", "/home/alice", 1);
    assert_int_equal(parse_str("data: {path: ~/corpus.bin}\n"
                               "checkpoint: {dir: ~/.local/state/atom/checkpoints/x}\n",
                               &s, &d),
                     0);
    assert_string_equal(s.data.path, "/home/alice/corpus.bin");
    assert_string_equal(s.checkpoint.dir, "/home/alice/.local/state/atom/checkpoints/x");
    assert_int_equal(parse_str("checkpoint: {dir: ~bob/ckpt}\n", &s, &d), -1);
    assert_non_null(find_diag(&d, 1, 19, "checkpoint.dir", "only ~/"));
    atom_diags_free(&d);
    if (home)
        setenv("HOME", home, 1);
    else
        unsetenv("HOME");
    free(home);
}

static void test_load_missing_file(void **state)
{
    (void)state;
    atom_spec s;
    atom_diags d = {0};
    assert_int_equal(atom_spec_load("/nonexistent/job.yaml", &s, &d), -1);
    assert_int_equal(d.count, 1);
    assert_non_null(strstr(d.items[0].msg, "No such file"));
    atom_diags_free(&d);
}

static void test_json_round_trip(void **state)
{
    (void)state;
    atom_spec s, back;
    atom_diags d = {0};
    assert_int_equal(parse_str("data: {path: /x, format: uint16}\nname: rt\n"
                               "resources: {device: cuda, time_limit: 1h30m}\n"
                               "training: {lr: 0.1, min_lr: 0.030000000000000002, "
                               "seed: 9223372036854775807, lr_schedule: linear, precision: bf16}\n"
                               "model: {vocab: 50257}\ncheckpoint: {async: false, dir: c}\n",
                               &s, &d),
                     0);
    char *json = atom_spec_to_json(&s);
    assert_non_null(json);
    assert_non_null(strstr(json, "\"device\":\"cuda\""));
    assert_non_null(strstr(json, "\"time_limit\":5400"));
    assert_non_null(strstr(json, "\"precision\":\"bf16\""));
    /* min_lr 0.030000000000000002 needs 17 digits: the whole spec is written with 17. */
    assert_non_null(strstr(json, "\"min_lr\":0.030000000000000002"));
    atom_err err = {{0}};
    assert_int_equal(atom_spec_from_json(json, &back, &err), 0);
    assert_memory_equal(&s, &back, sizeof s);
    char *again = atom_spec_to_json(&back);
    assert_string_equal(json, again);
    free(json);
    free(again);

    /* Short values written over longer defaults ("job", "gpt-tiny") and the name taken from the
     * file: the round trip must still be exact, byte for byte. */
    static const char *const short_specs[] = {"data: {path: /x}\nname: a\n", "data: {path: x}\n",
                                              "data: {path: /x}\nmodel: {preset: gpt-tiny}\n"};
    for (size_t i = 0; i < sizeof short_specs / sizeof short_specs[0]; i++) {
        assert_int_equal(parse_str(short_specs[i], &s, &d), 0);
        json = atom_spec_to_json(&s);
        assert_non_null(strstr(json, "\"lr\":0.0003,")); /* readable where that is exact */
        assert_int_equal(atom_spec_from_json(json, &back, &err), 0);
        assert_memory_equal(&s, &back, sizeof s);
        free(json);
    }

    /* Strict reading: atom wrote it, so anything unexpected is a version mismatch. */
    assert_int_equal(atom_spec_from_json("{\"training\": {\"stepz\": 1}}", &back, &err), -1);
    assert_non_null(strstr(err.msg, "training.stepz"));
    assert_int_equal(atom_spec_from_json("{\"training\": {\"steps\": \"1\"}}", &back, &err), -1);
    assert_non_null(strstr(err.msg, "expected an integer"));
    assert_int_equal(atom_spec_from_json("{\"resources\": {\"device\": \"tpu\"}}", &back, &err),
                     -1);
    assert_int_equal(atom_spec_from_json("{\"training\": {\"lr\": \"x\"}}", &back, &err), -1);
    assert_non_null(strstr(err.msg, "training.lr: expected a number"));
    assert_int_equal(atom_spec_from_json("{\"checkpoint\": {\"async\": 1}}", &back, &err), -1);
    assert_int_equal(atom_spec_from_json("{\"name\": 5}", &back, &err), -1);
    assert_int_equal(atom_spec_from_json("{\"priority\": 5000}", &back, &err), -1);
    assert_non_null(strstr(err.msg, "out of range"));
    assert_int_equal(atom_spec_from_json("[1]", &back, &err), -1);
    assert_int_equal(atom_spec_from_json("{\"name\": \"a\", \"name\": \"b\"}", &back, &err), -1);
    assert_int_equal(atom_spec_from_json("{\"bogus\": {}}", &back, &err), -1);
    assert_int_equal(atom_spec_from_json("not json", &back, &err), -1);
    atom_diags_free(&d);
}

/* configs/spec-reference.md has a row for every key, under its section's heading. */
static void test_reference_lists_every_key(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/configs/spec-reference.md", source_dir());
    atom_err err;
    size_t len;
    char *doc = atom_read_file(path, 1 << 20, &len, &err);
    assert_non_null(doc);
    int missing = 0;
    for (int i = 0; i < atom_spec_nkeys; i++) {
        const spec_key *k = &atom_spec_keys[i];
        char heading[64], row[96];
        snprintf(heading, sizeof heading, "\n## %s", *k->section ? k->section : "top level");
        const char *sec = strstr(doc, heading);
        const char *end = sec ? strstr(sec + 1, "\n## ") : NULL;
        snprintf(row, sizeof row, "\n| `%s` |", k->key);
        const char *at = sec ? strstr(sec, row) : NULL;
        if (!at || (end && at > end)) {
            fprintf(stderr, "%s: no row for %s under '%s'\n", path, k->dotted, heading + 1);
            missing++;
        }
    }
    free(doc);
    assert_int_equal(missing, 0);
}

/* The n-th cell (0-based, after the leading '|') of the table row starting at row; "\|" inside a
 * cell is an escaped pipe, not a border. */
static int row_cell(const char *row, int n, char *out, size_t size)
{
    const char *p = strchr(row, '|');
    for (int i = 0; p && i < n; i++) {
        for (p++; *p && *p != '\n' && !(*p == '|' && p[-1] != '\\'); p++)
            ;
        if (*p != '|')
            return -1;
    }
    if (!p)
        return -1;
    p++;
    const char *end = p;
    while (*end && *end != '\n' && !(*end == '|' && end[-1] != '\\'))
        end++;
    while (p < end && *p == ' ')
        p++;
    size_t len = (size_t)(end - p);
    while (len > 0 && p[len - 1] == ' ')
        len--;
    if (len >= size)
        return -1;
    memcpy(out, p, len);
    out[len] = '\0';
    return 0;
}

/* Where the reference gives a default as one literal (`100`, `cosine`, `5m`), it is the default
 * the code fills in; derived defaults ("`lr / 10`", prose) are left to the tests above. */
static void test_reference_defaults_match(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/configs/spec-reference.md", source_dir());
    atom_err err;
    size_t len;
    char *doc = atom_read_file(path, 1 << 20, &len, &err);
    assert_non_null(doc);
    atom_spec def;
    atom_spec_defaults(&def);
    int checked = 0, wrong = 0;
    for (int i = 0; i < atom_spec_nkeys; i++) {
        const spec_key *k = &atom_spec_keys[i];
        char heading[64], rowkey[96], cell[256], lit[128];
        snprintf(heading, sizeof heading, "\n## %s", *k->section ? k->section : "top level");
        snprintf(rowkey, sizeof rowkey, "\n| `%s` |", k->key);
        const char *sec = strstr(doc, heading);
        const char *row = sec ? strstr(sec, rowkey) : NULL;
        assert_non_null(row);
        assert_int_equal(row_cell(row + 1, 2, cell, sizeof cell), 0);
        const char *close = cell[0] == '`' ? strchr(cell + 1, '`') : NULL;
        if (!close || (size_t)(close - cell - 1) >= sizeof lit)
            continue;
        memcpy(lit, cell + 1, (size_t)(close - cell - 1));
        lit[close - cell - 1] = '\0';
        if (strchr(lit, ' '))
            continue;
        const char *field = (const char *)&def + k->offset;
        bool same = false;
        int64_t secs;
        switch (k->kind) {
        case SPEC_INT: same = strtoll(lit, NULL, 10) == *(const int *)(const void *)field; break;
        case SPEC_I64:
            same = strtoll(lit, NULL, 10) == *(const int64_t *)(const void *)field;
            break;
        case SPEC_U64:
            same = strtoull(lit, NULL, 10) == *(const uint64_t *)(const void *)field;
            break;
        case SPEC_F64: same = strtod(lit, NULL) == *(const double *)(const void *)field; break;
        case SPEC_BOOL:
            same = (strcmp(lit, "true") == 0) == *(const bool *)(const void *)field;
            break;
        case SPEC_DURATION:
            same = atom_parse_duration(lit, &secs) == 0 &&
                   secs == *(const int64_t *)(const void *)field;
            break;
        case SPEC_DEVICE:
        case SPEC_FORMAT:
        case SPEC_SCHEDULE:
        case SPEC_COOLDOWN:
        case SPEC_INIT_LOAD:
        case SPEC_PRECISION:
            same =
                strcmp(lit, atom_spec_enum_name(k->kind, *(const int *)(const void *)field)) == 0;
            break;
        case SPEC_NAME:
        case SPEC_PATH:
        case SPEC_PRESET: same = strcmp(lit, field) == 0; break;
        }
        if (!same) {
            fprintf(stderr, "%s: the reference says the default is `%s`; the code disagrees\n",
                    k->dotted, lit);
            wrong++;
        }
        checked++;
    }
    free(doc);
    assert_int_equal(wrong, 0);
    assert_true(checked >= 20); /* most defaults are literals */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_tiny_cpu_example),
        cmocka_unit_test(test_every_example_validates),
        cmocka_unit_test(test_large_examples),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_huge_file),
        cmocka_unit_test(test_billion_laughs),
        cmocka_unit_test(test_many_nodes),
        cmocka_unit_test(test_all_errors_at_once),
        cmocka_unit_test(test_error_cap),
        cmocka_unit_test(test_nearest),
        cmocka_unit_test(test_preset_and_overrides),
        cmocka_unit_test(test_derived_defaults),
        cmocka_unit_test(test_relative_paths),
        cmocka_unit_test(test_home_paths),
        cmocka_unit_test(test_load_missing_file),
        cmocka_unit_test(test_json_round_trip),
        cmocka_unit_test(test_reference_lists_every_key),
        cmocka_unit_test(test_reference_defaults_match),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
