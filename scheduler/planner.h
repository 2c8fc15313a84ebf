/* scheduler/planner.h: maps a job's ranks onto free GPUs of the cluster (private to scheduler/).
 *
 * The planner keeps the cluster's free GPUs as long-lived state (atom_planner) so that atomd's
 * scheduling pass can place, release and retry thousands of jobs without rebuilding anything:
 *
 *   atom_planner_init(&pl, &inventory)             once per inventory
 *   atom_planner_set_busy / set_node_up            GPUs used by running jobs, drained/down nodes
 *   atom_planner_place(&pl, &spec, exclude, &placement, why)   gang: all ranks or none
 *   atom_planner_release(&pl, &placement)          when the job ends
 *
 * Rules (docs/architecture.md):
 *   - rank = dp * tensor + tp: the ranks of one tensor-parallel group are adjacent (Megatron's
 *     order), and a tensor-parallel group never crosses a node;
 *   - gang: every rank gets a distinct free (node, GPU) at once, or the job is refused with a
 *     sentence saying why;
 *   - the fewest leaf switches that can hold the job; within them whole free nodes first, and the
 *     last partial piece of the job on the tightest node that holds it, so whole nodes stay whole;
 *   - resources.gpus_per_node, when set, puts exactly that many ranks on every node used;
 *   - nodes that are down or drained (set_node_up) and nodes excluded for one job (a node that
 *     failed this job before) are never used;
 *   - an inventory is all GPU nodes or all CPU-only nodes (atom_planner_init refuses a mix), and a
 *     job whose device is cuda never fits on CPU-only nodes.
 *
 * Per switch the planner keeps a histogram of its nodes' free GPU counts, so a job that cannot fit
 * is refused in O(switches x GPUs per node) without looking at a node.
 */
#ifndef ATOM_SCHEDULER_PLANNER_H
#define ATOM_SCHEDULER_PLANNER_H

#include "common/common.h"

/* Where one job's ranks run: inventory node and GPU indices, by rank. */
typedef struct atom_placement {
    int world, tensor, data;
    int *node;  /* world entries: index into the inventory's nodes */
    int *gpu;   /* world entries: GPU index on that node */
} atom_placement;

void atom_placement_free(atom_placement *pl);

/* Per leaf switch: what is free under it, kept up to date by every place and release. */
typedef struct atom_planner_switch {
    int *free_hist;   /* [max_gpus + 1]: up nodes by their number of free GPUs */
    int *whole_hist;  /* [max_gpus + 1]: up nodes with every GPU free, by their GPU count */
    int *nodes;       /* the inventory indices of the switch's nodes */
    int n_nodes;
} atom_planner_switch;

/* Scratch space reused by every placement, so a scheduling pass does not allocate. */
typedef struct atom_planner_scratch {
    long *cap;        /* [n_switches] groups each switch can host for the job at hand */
    long *whole_cap;  /* [n_switches] the part of cap on whole free nodes */
    int *order;       /* [n_switches] */
    int *take;        /* [n_switches] groups taken from each switch */
    int *node_order;  /* [n_nodes] */
    int *node_take;   /* [n_nodes] groups taken from each node of the placement */
    int *bucket;      /* [max_gpus + 2] counting sort by free GPUs */
} atom_planner_scratch;

typedef struct atom_planner {
    const atom_inventory *inv;  /* not owned; must outlive the planner */
    int max_gpus;               /* the most GPUs of any node */
    int *gpu_base;              /* [n_nodes] offset of the node's GPUs in busy[] */
    unsigned char *busy;        /* [total GPUs] 1 = in use */
    int *free_gpus;             /* [n_nodes] free GPUs per node */
    bool *up;                   /* [n_nodes] false: down or drained */
    int *size_hist;             /* [max_gpus + 1] nodes by GPU count (for "never fits") */
    atom_planner_switch *switches;
    long free_total;            /* free GPUs on up nodes */
    atom_planner_scratch scratch;
} atom_planner;

int atom_planner_init(atom_planner *pl, const atom_inventory *inv, atom_err *err);
void atom_planner_free(atom_planner *pl);

/* Marks one GPU in use (or free) outside any placement, e.g. when atomd restarts and reloads its
 * running jobs. Returns -1 for indices out of range. */
int atom_planner_set_busy(atom_planner *pl, int node, int gpu, bool busy, atom_err *err);
/* Takes a node out of (or back into) service: down or drained nodes get no new ranks. Ranks
 * already there are released as usual. */
int atom_planner_set_node_up(atom_planner *pl, int node, bool up, atom_err *err);

/* The outcome of a placement attempt. */
typedef enum {
    ATOM_PLACE_ERROR = -1,   /* a bad request (err says what); the state is unchanged */
    ATOM_PLACE_OK = 0,       /* placed; the GPUs are now busy */
    ATOM_PLACE_NO_FIT = 1,   /* not enough free GPUs in the right shape now; why says so */
} atom_place_result;

/* Places spec's job: world = tensor x data ranks. exclude (n_nodes entries, or NULL) names nodes
 * this job must not use. On ATOM_PLACE_NO_FIT, why (may be NULL) gets one sentence. out is
 * filled on ATOM_PLACE_OK only and is freed with atom_placement_free. */
atom_place_result atom_planner_place(atom_planner *pl, const atom_spec *spec, const bool *exclude,
                                     atom_placement *out, char *why, size_t why_len,
                                     atom_err *err);
/* Whether the job would fit now, without placing it (O(switches), never looks at a node unless
 * exclude is given). Same results and sentences as atom_planner_place. */
atom_place_result atom_planner_fits(atom_planner *pl, const atom_spec *spec, const bool *exclude,
                                    char *why, size_t why_len, atom_err *err);
/* Frees the GPUs of a placement made by atom_planner_place. */
void atom_planner_release(atom_planner *pl, const atom_placement *placement);

/* The plan of a placement: the nodes used in order of first rank, their ranks, the number of
 * switches. job_id, run_dir and heartbeat_addr are left empty for the caller. */
int atom_plan_from_placement(const atom_inventory *inv, const atom_spec *spec,
                             const atom_placement *placement, atom_plan *plan, atom_err *err);

#endif
