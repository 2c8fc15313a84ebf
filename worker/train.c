/* worker/train.c: the training loop of one rank: gradient accumulation over micro-batches,
 * data-parallel gradient averaging, clipping, AdamW, the learning-rate schedule, progress lines
 * and the JSON-lines log, heartbeats, checkpoints and the SIGUSR1/SIGTERM stop. */
#include "worker/train.h"

#include <math.h>

double atom_lr_at(atom_lr_schedule schedule, double lr, double min_lr, int64_t warmup,
                  int64_t steps, int64_t step)
{
    if (step < warmup)
        return lr * (double)(step + 1) / (double)warmup;
    if (schedule == ATOM_LR_CONSTANT)
        return lr;
    int64_t decay_steps = steps - 1 - warmup;
    /* A run with no step after warm-up but the last has nothing to decay over. */
    double progress = decay_steps > 0 ? (double)(step - warmup) / (double)decay_steps : 0.0;
    if (progress > 1.0)
        progress = 1.0;
    double factor = schedule == ATOM_LR_LINEAR ? 1.0 - progress : 0.5 * (1.0 + cos(M_PI * progress));
    return min_lr + factor * (lr - min_lr);
}
