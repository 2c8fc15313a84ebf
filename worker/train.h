/* worker/train.h: the training loop of one rank, and the learning-rate schedule it follows. */
#ifndef ATOM_WORKER_TRAIN_H
#define ATOM_WORKER_TRAIN_H

#include <stdint.h>

#include "common/common.h"

/* The learning rate of 0-based `step` of a run of `steps`: linear warm-up from lr/warmup (step 0)
 * to lr (step warmup-1), then, for the cosine and linear schedules, decay from lr to min_lr at
 * the last step (steps-1); the constant schedule stays at lr. Pure, so every rank and a resumed
 * run agree on it. */
double atom_lr_at(atom_lr_schedule schedule, double lr, double min_lr, int64_t warmup,
                  int64_t steps, int64_t step);

#endif
