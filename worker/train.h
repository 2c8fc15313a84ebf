/* worker/train.h: the training loop of one rank, and the learning-rate schedule it follows.
 *
 * atom_train_run trains the job of a plan from its newest committed checkpoint (or from the
 * seeded initial weights) to its last step or to a requested stop:
 *   per step: accumulate global_batch / (micro_batch * data) micro-batches, the data-parallel
 *   average of the gradients (the model's bucket manager, overlapped with the backward pass),
 *   clipping by the global norm, AdamW at the scheduled learning rate;
 *   rank 0 prints a progress line and appends one JSON object per step to RUN_DIR/train.jsonl;
 *   every rank appends its heartbeat to RUN_DIR/heartbeat.rank-N.jsonl and, when the plan names
 *   atomd's socket, sends it there without ever blocking;
 *   every checkpoint.every steps a checkpoint (synchronous or asynchronous per the spec);
 *   once per step the stop flag is all-reduced, so every rank stops after the same step, writes
 *   a checkpoint and returns with result.stopped set (atom-worker exits ATOM_EXIT_RESUMABLE).
 *
 * MPI must be initialised (MPI_THREAD_MULTIPLE) on MPI_COMM_WORLD with plan.world ranks.
 */
#ifndef ATOM_WORKER_TRAIN_H
#define ATOM_WORKER_TRAIN_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "common/common.h"
#include "worker/backend.h"

/* The learning-rate schedule of training.* (configs/spec-reference.md), laid over `horizon`
 * steps (training.lr_decay_steps, else training.steps): linear warm-up from lr/warmup (step 0)
 * to lr (step warmup-1); then
 *   cosine, linear: decay from lr (step warmup-1 or 0) to min_lr at step horizon-1;
 *   constant: lr;
 *   wsd (warmup-stable-decay): lr until step horizon-cooldown-1, then the cooldown down to
 *     min_lr at step horizon-1, 1 - sqrt(p) or 1 - p of its progress p = (step - (horizon -
 *     cooldown - 1)) / cooldown;
 * past the horizon every schedule stays at its last value (so a run extended past it does not
 * re-stretch the decay). Pure, so every rank and a resumed run agree on it. */
typedef struct atom_lr_cfg {
    atom_lr_schedule schedule;
    double lr, min_lr;
    int64_t warmup;
    int64_t horizon;
    int64_t cooldown;                   /* wsd only */
    atom_cooldown_shape cooldown_shape; /* wsd only */
} atom_lr_cfg;

/* The schedule of a spec, its defaults resolved (horizon = steps, cooldown = horizon / 5). */
atom_lr_cfg atom_lr_cfg_of(const atom_spec *spec);
double atom_lr_at(const atom_lr_cfg *cfg, int64_t step);

typedef struct atom_train_opts {
    const atom_plan *plan;
    const atom_backend *backend;         /* atom_backend_cpu() or the CUDA one */
    volatile sig_atomic_t *stop_request; /* set (non-zero) by a signal handler; may be NULL */
    int64_t stop_after;      /* > 0: stop as if signalled once this many steps are done (tests,
                                `atom-worker --stop-after`); 0: never */
    FILE *progress;          /* rank 0's line per step (stdout); NULL: none */
    /* Called on every rank after each step, once the step's all-reduce is done (so all ranks
     * are at the same point): the benchmark's timer marks. NULL: none. */
    void (*on_step)(void *arg, int64_t steps_done);
    void *on_step_arg;
} atom_train_opts;

typedef struct atom_train_result {
    int64_t start_step;           /* steps already done when this run began (restored) */
    int64_t steps_done;           /* steps done when it returned */
    bool stopped;                 /* a stop was requested: resumable, not finished */
    double first_loss, last_loss; /* mean loss of the first and last step run here */
    int64_t last_checkpoint_step; /* -1: none written or restored */
} atom_train_result;

/* Trains on this rank; collective over MPI_COMM_WORLD. Returns 0 when the run finished or
 * stopped on request, -1 with a message on error (the caller aborts the job: other ranks may be
 * waiting in a collective). */
int atom_train_run(const atom_train_opts *opts, atom_train_result *result, atom_err *err);

#endif
