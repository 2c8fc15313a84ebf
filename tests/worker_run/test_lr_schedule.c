/* tests/worker_run/test_lr_schedule.c: the learning-rate schedule users set in job.yaml
 * (training.lr, warmup, lr_schedule, min_lr, lr_decay_steps, cooldown_steps, cooldown_shape):
 * warm-up, then cosine, linear, constant or warmup-stable-decay, over a horizon of its own. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "worker/train.h"

/* The schedule of a run of `steps` with the horizon left at its default (lr_decay_steps 0). */
static double lr_at(atom_lr_schedule schedule, double lr, double min_lr, int64_t warmup,
                    int64_t steps, int64_t step)
{
    atom_spec spec;
    atom_spec_defaults(&spec);
    spec.training.lr_schedule = schedule;
    spec.training.lr = lr;
    spec.training.min_lr = min_lr;
    spec.training.warmup = warmup;
    spec.training.steps = steps;
    atom_lr_cfg cfg = atom_lr_cfg_of(&spec);
    return atom_lr_at(&cfg, step);
}

static void warmup_rises_linearly_from_lr_over_warmup(void **state)
{
    (void)state;
    /* lr 1e-3, 10 warm-up steps of 100: step 0 gets lr/10, step 9 the full lr. */
    for (int s = 0; s < 10; s++)
        assert_float_equal(lr_at(ATOM_LR_COSINE, 1e-3, 1e-4, 10, 100, s), 1e-3 * (s + 1) / 10,
                           1e-12);
}

static void cosine_decays_to_min_lr_at_the_last_step(void **state)
{
    (void)state;
    double lr = 1e-3, min_lr = 1e-4;
    /* The first step after warm-up is at the peak, the last at min_lr, the middle halfway. */
    assert_float_equal(lr_at(ATOM_LR_COSINE, lr, min_lr, 10, 101, 10), lr, 1e-12);
    assert_float_equal(lr_at(ATOM_LR_COSINE, lr, min_lr, 10, 101, 100), min_lr, 1e-12);
    assert_float_equal(lr_at(ATOM_LR_COSINE, lr, min_lr, 10, 101, 55), (lr + min_lr) / 2,
                       1e-12);
    /* 22 of the 90 decay steps in, the cosine factor is 0.5 (1 + cos(pi 22/90)). */
    assert_float_equal(lr_at(ATOM_LR_COSINE, lr, min_lr, 10, 101, 32),
                       min_lr + 0.5 * (1 + cos(M_PI * 22 / 90)) * (lr - min_lr), 1e-12);
    /* Monotone non-increasing after warm-up. */
    double prev = INFINITY;
    for (int s = 10; s < 101; s++) {
        double v = lr_at(ATOM_LR_COSINE, lr, min_lr, 10, 101, s);
        assert_true(v <= prev);
        assert_true(v >= min_lr - 1e-15);
        prev = v;
    }
}

static void linear_and_constant_schedules(void **state)
{
    (void)state;
    double lr = 2e-3, min_lr = 2e-4;
    assert_float_equal(lr_at(ATOM_LR_LINEAR, lr, min_lr, 0, 11, 0), lr, 1e-12);
    assert_float_equal(lr_at(ATOM_LR_LINEAR, lr, min_lr, 0, 11, 5), (lr + min_lr) / 2, 1e-12);
    assert_float_equal(lr_at(ATOM_LR_LINEAR, lr, min_lr, 0, 11, 10), min_lr, 1e-12);
    assert_float_equal(lr_at(ATOM_LR_CONSTANT, lr, min_lr, 4, 11, 1), lr * 2 / 4, 1e-12);
    for (int s = 4; s < 11; s++)
        assert_float_equal(lr_at(ATOM_LR_CONSTANT, lr, min_lr, 4, 11, s), lr, 1e-12);
}

static void degenerate_runs_stay_finite(void **state)
{
    (void)state;
    /* One step, or warm-up as long as the run: never a division by zero. */
    double v = lr_at(ATOM_LR_COSINE, 1e-3, 1e-4, 0, 1, 0);
    assert_true(isfinite(v) && v > 0);
    for (int s = 0; s < 5; s++) {
        v = lr_at(ATOM_LR_COSINE, 1e-3, 1e-4, 5, 5, s);
        assert_float_equal(v, 1e-3 * (s + 1) / 5, 1e-12);
    }
}

static void wsd_holds_then_cools_down_1_sqrt(void **state)
{
    (void)state;
    /* 100 steps, 10 of warm-up, a 20-step cooldown: lr through step 79, min_lr at step 99. */
    atom_lr_cfg c = {ATOM_LR_WSD, 1e-3, 1e-4, 10, 100, 20, ATOM_COOLDOWN_1_SQRT};
    assert_float_equal(atom_lr_at(&c, 4), 1e-3 * 5 / 10, 1e-15);
    for (int s = 9; s <= 79; s++)
        assert_float_equal(atom_lr_at(&c, s), 1e-3, 1e-15);
    assert_float_equal(atom_lr_at(&c, 80), 1e-4 + (1 - sqrt(1.0 / 20)) * 9e-4, 1e-15);
    assert_float_equal(atom_lr_at(&c, 89), 1e-4 + (1 - sqrt(0.5)) * 9e-4, 1e-15);
    assert_float_equal(atom_lr_at(&c, 99), 1e-4, 1e-15);
    /* a run extended past the horizon stays at min_lr */
    assert_float_equal(atom_lr_at(&c, 150), 1e-4, 1e-15);
}

static void wsd_linear_cooldown_and_default_length(void **state)
{
    (void)state;
    atom_lr_cfg c = {ATOM_LR_WSD, 2e-3, 0, 0, 100, 20, ATOM_COOLDOWN_LINEAR};
    assert_float_equal(atom_lr_at(&c, 79), 2e-3, 1e-15);
    assert_float_equal(atom_lr_at(&c, 89), 1e-3, 1e-15);
    assert_float_equal(atom_lr_at(&c, 94), 2e-3 * 5 / 20, 1e-15);
    assert_float_equal(atom_lr_at(&c, 99), 0, 1e-15);
    /* From a spec: cooldown 0 is a fifth of the horizon; the shape defaults to 1-sqrt. */
    atom_spec spec;
    atom_spec_defaults(&spec);
    spec.training.lr_schedule = ATOM_LR_WSD;
    spec.training.steps = 1000;
    atom_lr_cfg d = atom_lr_cfg_of(&spec);
    assert_int_equal(d.horizon, 1000);
    assert_int_equal(d.cooldown, 200);
    assert_int_equal(d.cooldown_shape, ATOM_COOLDOWN_1_SQRT);
    assert_float_equal(atom_lr_at(&d, 799), spec.training.lr, 1e-15);
    assert_true(atom_lr_at(&d, 800) < spec.training.lr);
}

static void decay_horizon_is_not_stretched_by_steps(void **state)
{
    (void)state;
    /* A cosine run of 101 steps extended to 201 with lr_decay_steps 101: the first 101 steps
     * keep their rates and the extra ones stay at min_lr. */
    atom_spec spec;
    atom_spec_defaults(&spec);
    spec.training.lr = 1e-3;
    spec.training.min_lr = 1e-4;
    spec.training.warmup = 10;
    spec.training.steps = 101;
    atom_lr_cfg short_run = atom_lr_cfg_of(&spec);
    spec.training.steps = 201;
    spec.training.lr_decay_steps = 101;
    atom_lr_cfg extended = atom_lr_cfg_of(&spec);
    for (int s = 0; s < 101; s++)
        assert_true(atom_lr_at(&short_run, s) == atom_lr_at(&extended, s));
    assert_float_equal(atom_lr_at(&extended, 55), 5.5e-4, 1e-15);
    for (int s = 100; s < 201; s++)
        assert_float_equal(atom_lr_at(&extended, s), 1e-4, 1e-15);
    /* without the horizon the same extension re-stretches the decay */
    spec.training.lr_decay_steps = 0;
    atom_lr_cfg stretched = atom_lr_cfg_of(&spec);
    assert_true(atom_lr_at(&stretched, 55) > 8e-4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(warmup_rises_linearly_from_lr_over_warmup),
        cmocka_unit_test(cosine_decays_to_min_lr_at_the_last_step),
        cmocka_unit_test(linear_and_constant_schedules),
        cmocka_unit_test(degenerate_runs_stay_finite),
        cmocka_unit_test(wsd_holds_then_cools_down_1_sqrt),
        cmocka_unit_test(wsd_linear_cooldown_and_default_length),
        cmocka_unit_test(decay_horizon_is_not_stretched_by_steps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
