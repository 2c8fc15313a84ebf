/* tests/worker_run/test_lr_schedule.c: the learning-rate schedule users set in job.yaml
 * (training.lr, warmup, lr_schedule, min_lr): warm-up, then cosine, linear or constant. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "worker/train.h"

static void warmup_rises_linearly_from_lr_over_warmup(void **state)
{
    (void)state;
    /* lr 1e-3, 10 warm-up steps of 100: step 0 gets lr/10, step 9 the full lr. */
    for (int s = 0; s < 10; s++)
        assert_float_equal(atom_lr_at(ATOM_LR_COSINE, 1e-3, 1e-4, 10, 100, s), 1e-3 * (s + 1) / 10,
                           1e-12);
}

static void cosine_decays_to_min_lr_at_the_last_step(void **state)
{
    (void)state;
    double lr = 1e-3, min_lr = 1e-4;
    /* The first step after warm-up is at the peak, the last at min_lr, the middle halfway. */
    assert_float_equal(atom_lr_at(ATOM_LR_COSINE, lr, min_lr, 10, 101, 10), lr, 1e-12);
    assert_float_equal(atom_lr_at(ATOM_LR_COSINE, lr, min_lr, 10, 101, 100), min_lr, 1e-12);
    assert_float_equal(atom_lr_at(ATOM_LR_COSINE, lr, min_lr, 10, 101, 55), (lr + min_lr) / 2,
                       1e-12);
    /* 22 of the 90 decay steps in, the cosine factor is 0.5 (1 + cos(pi 22/90)). */
    assert_float_equal(atom_lr_at(ATOM_LR_COSINE, lr, min_lr, 10, 101, 32),
                       min_lr + 0.5 * (1 + cos(M_PI * 22 / 90)) * (lr - min_lr), 1e-12);
    /* Monotone non-increasing after warm-up. */
    double prev = INFINITY;
    for (int s = 10; s < 101; s++) {
        double v = atom_lr_at(ATOM_LR_COSINE, lr, min_lr, 10, 101, s);
        assert_true(v <= prev);
        assert_true(v >= min_lr - 1e-15);
        prev = v;
    }
}

static void linear_and_constant_schedules(void **state)
{
    (void)state;
    double lr = 2e-3, min_lr = 2e-4;
    assert_float_equal(atom_lr_at(ATOM_LR_LINEAR, lr, min_lr, 0, 11, 0), lr, 1e-12);
    assert_float_equal(atom_lr_at(ATOM_LR_LINEAR, lr, min_lr, 0, 11, 5), (lr + min_lr) / 2, 1e-12);
    assert_float_equal(atom_lr_at(ATOM_LR_LINEAR, lr, min_lr, 0, 11, 10), min_lr, 1e-12);
    assert_float_equal(atom_lr_at(ATOM_LR_CONSTANT, lr, min_lr, 4, 11, 1), lr * 2 / 4, 1e-12);
    for (int s = 4; s < 11; s++)
        assert_float_equal(atom_lr_at(ATOM_LR_CONSTANT, lr, min_lr, 4, 11, s), lr, 1e-12);
}

static void degenerate_runs_stay_finite(void **state)
{
    (void)state;
    /* One step, or warm-up as long as the run: never a division by zero. */
    double v = atom_lr_at(ATOM_LR_COSINE, 1e-3, 1e-4, 0, 1, 0);
    assert_true(isfinite(v) && v > 0);
    for (int s = 0; s < 5; s++) {
        v = atom_lr_at(ATOM_LR_COSINE, 1e-3, 1e-4, 5, 5, s);
        assert_float_equal(v, 1e-3 * (s + 1) / 5, 1e-12);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(warmup_rises_linearly_from_lr_over_warmup),
        cmocka_unit_test(cosine_decays_to_min_lr_at_the_last_step),
        cmocka_unit_test(linear_and_constant_schedules),
        cmocka_unit_test(degenerate_runs_stay_finite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
