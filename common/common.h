/* common/common.h: what every atom program shares, and nothing else.
 *
 *   - errors: a status plus a message buffer (library code never exits);
 *   - diagnostics: a list of file:line:column errors, so a spec reports all its mistakes at once;
 *   - the job spec (parsed from YAML with libyaml) and its validation;
 *   - the cluster inventory (nodes, GPUs, leaf switches);
 *   - the plan: a job's ranks mapped to (node, GPU), and the plan file every worker reads (JSON);
 *   - the model shape shared by the spec and the worker;
 *   - the heartbeat message every rank sends atomd (JSON);
 *   - atomd's TCP transport: host:port, MUNGE credentials, the heartbeat sender over TCP;
 *   - logging;
 *   - private paths: folders and files that must be the caller's alone (private_path.c).
 *   - the sidecar of a token file (what atom-data prepare recorded about it).
 *
 * May use: libyaml, jansson, libmunge. Nothing here knows MPI, HDF5 or the scheduler.
 */
#ifndef ATOM_COMMON_H
#define ATOM_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ------------------------------------------------------------------------------------------ */
/* Errors: library functions return 0 on success, -1 on failure with a message in err.        */

typedef struct atom_err {
    char msg[1024];
} atom_err;

/* printf-style; always returns -1 so that `return atom_errf(err, ...)` reads naturally.
 * err may be NULL. */
int atom_errf(atom_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* atom-worker's exit status after a requested stop (SIGUSR1, SIGTERM) that finished the step and
 * wrote a checkpoint: "stopped, resumable" (sysexits.h's EX_TEMPFAIL). */
#define ATOM_EXIT_RESUMABLE 75

/* ------------------------------------------------------------------------------------------ */
/* Diagnostics: every error of a file, each with its position.                                 */

typedef struct atom_diag {
    char file[256];
    int line, column;  /* 1-based; 0 when the error belongs to the whole file */
    char key[128];     /* dotted path of the key, e.g. "training.lr"; "" when none */
    char msg[384];
} atom_diag;

typedef struct atom_diags {
    atom_diag *items;
    int count, cap;
} atom_diags;

void atom_diags_add(atom_diags *d, const char *file, int line, int column, const char *key,
                    const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* "file:line:column: key: msg", one line per diagnostic. */
void atom_diags_print(const atom_diags *d, void *stream /* FILE* */);
void atom_diags_free(atom_diags *d);

/* ------------------------------------------------------------------------------------------ */
/* Model shape (docs/model.md)                                                                */

typedef struct atom_model_cfg {
    int layers;    /* L */
    int channels;  /* C */
    int heads;     /* NH */
    int vocab;     /* V */
    int context;   /* T */
} atom_model_cfg;

/* Vp: V rounded up to a multiple of 128. */
static inline int atom_padded_vocab(int vocab) { return (vocab + 127) / 128 * 128; }

/* Fills cfg from a named preset ("gpt-tiny", "gpt2-124m", "gpt2-350m", "gpt2-774m",
 * "gpt2-1558m"); returns -1 for an unknown name. */
int atom_model_preset(const char *name, atom_model_cfg *cfg);
/* The i-th preset's name (0, 1, ...), NULL past the last: for listing them in messages. */
const char *atom_model_preset_name(int i);
/* Number of parameters of the unsplit model (with the padded vocabulary). */
int64_t atom_model_params(const atom_model_cfg *cfg);

/* ------------------------------------------------------------------------------------------ */
/* safetensors files (safetensors.c): the tensors a GPT-2 export or a Hugging Face checkpoint
 * holds, read element ranges at a time as floats (init.safetensors).                         */

#define ATOM_ST_MAX_DIMS 4
enum { ATOM_ST_F32 = 0, ATOM_ST_BF16 = 1, ATOM_ST_F16 = 2 }; /* -1: a dtype atom does not read */

typedef struct atom_st_tensor {
    char name[128];
    char dtype_name[16];              /* as the header says ("F32", "I64", ...) */
    int dtype;                        /* ATOM_ST_*, or -1 */
    int ndim;
    int64_t shape[ATOM_ST_MAX_DIMS];
    int64_t numel;
    uint64_t begin, end;              /* byte range in the data */
} atom_st_tensor;

typedef struct atom_safetensors {
    int fd;
    uint64_t data_start;              /* 8 + the header's length */
    atom_st_tensor *tensors;
    int count;
} atom_safetensors;

/* Opens path and checks its header: every entry's dtype, shape and data_offsets, inside the
 * file and of the size its shape needs. Errors name the file and the tensor. */
int atom_safetensors_open(const char *path, atom_safetensors *st, atom_err *err);
/* The tensor of that name, or NULL. */
const atom_st_tensor *atom_safetensors_find(const atom_safetensors *st, const char *name);
/* Elements [first, first + count) of t (row-major) as floats: F32 exactly, BF16 and F16
 * widened exactly. out holds count floats. */
int atom_safetensors_read(const atom_safetensors *st, const atom_st_tensor *t, int64_t first,
                          int64_t count, float *out, atom_err *err);
void atom_safetensors_close(atom_safetensors *st);

/* ------------------------------------------------------------------------------------------ */
/* Job spec                                                                                     */

typedef enum { ATOM_DATA_BYTES = 0, ATOM_DATA_UINT16 = 1 } atom_data_format;
typedef enum {
    ATOM_LR_COSINE = 0,
    ATOM_LR_LINEAR = 1,
    ATOM_LR_CONSTANT = 2,
    ATOM_LR_WSD = 3, /* warmup-stable-decay: lr until the cooldown, then down to min_lr */
} atom_lr_schedule;
/* training.cooldown_shape: how wsd's cooldown falls, 1 - p or 1 - sqrt(p) of its progress p. */
typedef enum { ATOM_COOLDOWN_1_SQRT = 0, ATOM_COOLDOWN_LINEAR = 1 } atom_cooldown_shape;
/* init.load: what init.checkpoint contributes (init.safetensors holds weights only). */
typedef enum { ATOM_INIT_WEIGHTS = 0, ATOM_INIT_WEIGHTS_OPTIMIZER = 1 } atom_init_load;
typedef enum { ATOM_DEVICE_AUTO = 0, ATOM_DEVICE_CPU = 1, ATOM_DEVICE_CUDA = 2 } atom_device;
/* training.precision: fp32 throughout, or bf16 autocast of the matmuls' operands (weights,
 * gradients, optimizer state and activations stay fp32: master weights). */
typedef enum { ATOM_PRECISION_FP32 = 0, ATOM_PRECISION_BF16 = 1 } atom_precision;

#define ATOM_NAME_MAX 64
#define ATOM_PATH_MAX 1024

typedef struct atom_spec {
    char name[ATOM_NAME_MAX];     /* job name: [A-Za-z0-9._-]+ */
    char project[ATOM_NAME_MAX];  /* fair-share account */
    int priority;                 /* higher runs first; 0..1000, default 100 */

    struct {
        int gpus;            /* ranks in all = tensor x data */
        int gpus_per_node;   /* ranks per node the job asks for (0: as the cluster has) */
        int64_t time_limit;  /* seconds; 0: no limit */
        atom_device device;  /* auto: CUDA where the node has GPUs, else CPU */
    } resources;

    struct {
        int tensor;  /* tensor-parallel size (a group never crosses a node) */
        int data;    /* data-parallel replicas */
    } parallelism;

    atom_model_cfg model;
    char model_preset[ATOM_NAME_MAX];  /* "" when given key by key */

    struct {
        char path[ATOM_PATH_MAX];  /* resolved against the spec file's folder */
        atom_data_format format;
    } data;

    struct {
        int64_t steps;
        int global_batch;   /* samples per optimizer step, all replicas */
        int micro_batch;    /* samples per forward/backward on one rank */
        double lr;
        int64_t warmup;     /* steps of linear warm-up */
        atom_lr_schedule lr_schedule;
        double min_lr;      /* default lr / 10 */
        int64_t lr_decay_steps;  /* the schedule's horizon; 0: training.steps */
        int64_t cooldown_steps;  /* wsd: steps of the final decay; 0: a fifth of the horizon */
        atom_cooldown_shape cooldown_shape;
        double weight_decay;
        double grad_clip;   /* 0: no clipping */
        uint64_t seed;
        atom_precision precision;
    } training;

    struct {
        char dir[ATOM_PATH_MAX];  /* "" : no checkpoints */
        int64_t every;            /* steps between checkpoints */
        int keep;                 /* committed checkpoints kept (0: all) */
        bool async;
    } checkpoint;

    /* Where the weights come from when checkpoint.dir holds no checkpoint yet (a job's own
     * checkpoint always wins, so a restart resumes the run, not the init). */
    struct {
        char checkpoint[ATOM_PATH_MAX];  /* a checkpoint file or a folder (its latest); "" */
        char safetensors[ATOM_PATH_MAX]; /* GPT-2 names (ckpt export's or Hugging Face's); "" */
        atom_init_load load;
        bool resume_step;                /* continue the step counter, schedule and data order */
    } init;

    struct {
        int max_restarts;
        int64_t heartbeat_timeout;  /* seconds without progress before a job counts as hung */
    } restart;
} atom_spec;

/* The spec with every default filled in (documented in configs/spec-reference.md). */
void atom_spec_defaults(atom_spec *spec);

/* Parses YAML text (name is used in diagnostics, base_dir resolves relative paths; either may be
 * NULL). Every error found goes into diags; returns 0 when there are none. The result is
 * validated (atom_spec_check) as part of parsing. */
int atom_spec_parse(const char *text, size_t len, const char *name, const char *base_dir,
                    atom_spec *spec, atom_diags *diags);
int atom_spec_load(const char *path, atom_spec *spec, atom_diags *diags);
/* The largest spec file atom_spec_load and atom_spec_parse accept. */
#define ATOM_SPEC_MAX_BYTES (1 << 20)
/* Cross-field checks (gpus = tensor x data, divisibility, ...); positions are 0 here. */
int atom_spec_check(const atom_spec *spec, const char *file, atom_diags *diags);
/* The file-system checks, kept out of parsing so the parser stays pure: data.path is a readable
 * regular file holding more than context + 1 tokens of data.format (uint16: ids below vocab in
 * its first MiB); checkpoint.dir, when it exists, is a folder. For atomctl before submitting and
 * the worker before training. */
int atom_spec_check_data(const atom_spec *spec, const char *file, atom_diags *diags);
/* atom_spec_load, then atom_spec_check_data: what atomctl checks before a job is queued or run. */
int atom_spec_load_runnable(const char *path, atom_spec *spec, atom_diags *diags);
/* The normalised spec as JSON text (malloc'd) and back. */
char *atom_spec_to_json(const atom_spec *spec);
int atom_spec_from_json(const char *json, atom_spec *spec, atom_err *err);

/* Derived numbers every program agrees on. */
static inline int atom_spec_accum_steps(const atom_spec *s)
{
    return s->training.global_batch / (s->training.micro_batch * s->parallelism.data);
}

/* ------------------------------------------------------------------------------------------ */
/* Cluster inventory                                                                             */

typedef struct atom_node {
    char name[ATOM_NAME_MAX];
    char addr[ATOM_NAME_MAX];  /* host name or address mpirun reaches it by ("" = name) */
    int gpus;                  /* GPUs, or CPU slots on a machine without GPUs */
    int switch_id;             /* index into inventory.switches */
    bool has_gpus;             /* false: the "GPUs" are CPU slots */
} atom_node;

typedef struct atom_inventory {
    char name[ATOM_NAME_MAX];
    atom_node *nodes;
    int n_nodes;
    char (*switches)[ATOM_NAME_MAX];
    int n_switches;
} atom_inventory;

int atom_inventory_load(const char *path, atom_inventory *inv, atom_diags *diags);
int atom_inventory_parse(const char *text, size_t len, const char *name, atom_inventory *inv,
                         atom_diags *diags);
/* The embedded default: this machine as one node whose GPUs are its CPU slots (at least 4, so
 * the example jobs fit; slots beyond the cores are oversubscribed). */
void atom_inventory_local(atom_inventory *inv, int slots);
void atom_inventory_free(atom_inventory *inv);

/* ------------------------------------------------------------------------------------------ */
/* The plan: where every rank of one job runs                                                   */

typedef struct atom_rank_place {
    int rank;  /* = dp * tensor + tp */
    int dp, tp;
    int node;  /* index into plan.nodes */
    int gpu;   /* GPU index on that node (CUDA_VISIBLE_DEVICES is narrowed to it) */
} atom_rank_place;

typedef struct atom_plan {
    char job_id[ATOM_NAME_MAX];  /* "" outside atomd */
    int attempt;
    atom_spec spec;              /* the normalised spec */
    int world;                   /* tensor x data */
    atom_rank_place *ranks;      /* world entries, by rank */
    int n_nodes;
    atom_node *nodes;            /* the nodes used, in order of first rank */
    int n_switches_used;
    char run_dir[ATOM_PATH_MAX]; /* the attempt's folder: logs, heartbeats ("" = none) */
    char heartbeat_addr[ATOM_PATH_MAX]; /* atomd's socket ("" = none) */
    /* Ranks on other nodes than atomd's send heartbeats over TCP with a MUNGE credential. */
    char atomd_host[ATOM_NAME_MAX];     /* atomd's node (inventory name = host name; "" = none) */
    char heartbeat_tcp[300];            /* atomd's TCP port, host:port ("" = none) */
    char munge_socket[ATOM_PATH_MAX];   /* munged's socket on every node ("" = its default) */
} atom_plan;

void atom_plan_free(atom_plan *plan);
/* The plan file (JSON): written by the launcher, read by every worker. Writing is atomic
 * (temporary name, fsync, rename). */
int atom_plan_write(const atom_plan *plan, const char *path, atom_err *err);
int atom_plan_read(const char *path, atom_plan *plan, atom_err *err);
char *atom_plan_to_json(const atom_plan *plan);
int atom_plan_from_json(const char *json, atom_plan *plan, atom_err *err);

/* ------------------------------------------------------------------------------------------ */
/* The plan under Slurm (common/plan_slurm.c): Slurm owns placement, so every task builds the same
 * plan from its allocation instead of reading a file. Ranks follow Slurm's block distribution
 * (task r on the node holding tasks first..first+count-1), each node's task count must be a
 * multiple of the tensor-parallel size, and each task must see at most one GPU. */

typedef struct atom_slurm_env {
    const char *job_id;         /* SLURM_JOB_ID */
    const char *nodelist;       /* SLURM_STEP_NODELIST, else SLURM_JOB_NODELIST ("n[1-4]") */
    const char *tasks_per_node; /* SLURM_STEP_TASKS_PER_NODE, else SLURM_TASKS_PER_NODE ("4(x2),2") */
    const char *ntasks;         /* SLURM_STEP_NUM_TASKS, else SLURM_NTASKS */
    const char *procid;         /* SLURM_PROCID: this task's rank */
    const char *localid;        /* SLURM_LOCALID: its index on its node */
    const char *nodeid;         /* SLURM_NODEID: its node's index in nodelist */
    const char *gpus;           /* CUDA_VISIBLE_DEVICES, else SLURM_STEP_GPUS (NULL or "": none) */
    const char *restart_count;  /* SLURM_RESTART_COUNT (NULL: first run) */
    const char *atom_job_id;    /* ATOM_JOB_ID: atomd's id for the job, set by its Slurm launcher */
    const char *atom_attempt;   /* ATOM_ATTEMPT: atomd's attempt number (added to the restarts) */
} atom_slurm_env;

/* Fills env from this process's environment (pointers into it). */
void atom_slurm_env_get(atom_slurm_env *env);
/* Expands a Slurm host list as `scontrol show hostnames` does ("gpu[01-03,7],login1" -> gpu01
 * gpu02 gpu03 gpu7 login1; several brackets multiply). *names is malloc'd. */
int atom_slurm_hostnames(const char *list, char (**names)[ATOM_NAME_MAX], int *n, atom_err *err);
/* Expands a tasks-per-node list ("4(x2),2" -> 4 4 2). *counts is malloc'd. */
int atom_slurm_tasks_per_node(const char *list, int **counts, int *n, atom_err *err);
/* The plan of spec on the allocation env describes, checked against this task's own ids. The
 * plan's job_id is ATOM_JOB_ID when atomd launched the job, else "slurm-JOBID"; its attempt is
 * ATOM_ATTEMPT (0 when unset) plus SLURM_RESTART_COUNT. */
int atom_plan_from_slurm(const atom_spec *spec, const atom_slurm_env *env, atom_plan *plan,
                         atom_err *err);

/* ------------------------------------------------------------------------------------------ */
/* Heartbeat: one JSON object per message, sent by every rank.                                 */

#define ATOM_HB_GROUPS 3 /* world, tensor, data */
#define ATOM_HB_WHY_MAX 512 /* a skipped checkpoint's reason, with its NUL */

typedef struct atom_heartbeat {
    char job_id[ATOM_NAME_MAX];
    int attempt;
    int rank;
    char host[ATOM_NAME_MAX];
    int pid;
    int64_t step;
    int64_t collectives[ATOM_HB_GROUPS]; /* collectives entered per group */
    double time;                        /* seconds since the epoch when sent */
    /* rank 0 only (has_progress) */
    bool has_progress;
    double loss, tokens_per_s;
    int64_t last_checkpoint_step;       /* -1: none yet */
    /* rank 0 only, when its restore fell back past newer checkpoints that failed to load:
     * how many, the newest one's step and why it failed (printable ASCII). 0: none skipped. */
    int ckpt_skipped;
    int64_t ckpt_skipped_step;
    char ckpt_skipped_why[ATOM_HB_WHY_MAX];
} atom_heartbeat;

char *atom_heartbeat_to_json(const atom_heartbeat *hb);
int atom_heartbeat_from_json(const char *json, atom_heartbeat *hb, atom_err *err);

/* ------------------------------------------------------------------------------------------ */
/* atomd's TCP port (common/munge_tcp.c): every message is one line holding a MUNGE credential
 * whose payload is the JSON message, so the sender's uid and gid come from munged and the message
 * cannot be altered on the way. munge_socket "" or NULL: munged's default socket.              */

/* "host:port" or "[IPv6]:port" into host (host_len bytes with the NUL) and port (1..65535);
 * the error names what is wrong with text. */
int atom_hostport_parse(const char *text, char *host, size_t host_len, int *port, atom_err *err);
/* A connected, blocking TCP socket to host:port, or -1 with err (also when the connection is not
 * made within timeout seconds). */
int atom_tcp_connect(const char *host, int port, double timeout, atom_err *err);
/* *cred (malloc'd, no newline): a fresh credential carrying payload. */
int atom_munge_encode(const char *munge_socket, const char *payload, size_t len, char **cred,
                      atom_err *err);
/* The payload (malloc'd, NUL-terminated) and its signer; err says why a credential is refused
 * (libmunge's words: "Expired credential", "Replayed credential", "Invalid credential format"...). */
int atom_munge_decode(const char *munge_socket, const char *cred, char **payload, size_t *len,
                      uid_t *uid, gid_t *gid, atom_err *err);
/* Whether munged answers: encodes and decodes one credential. */
int atom_munge_check(const char *munge_socket, atom_err *err);

/* A worker's heartbeats to atomd's TCP port. Sending never blocks training: a thread of the
 * sender connects, has munged sign and sends, and the caller only hands it the newest heartbeat
 * (one not sent yet is replaced). A heartbeat that cannot go is dropped; a broken connection is
 * made again with the next one. Closing sends the last heartbeat handed over unless the one
 * before failed; it waits for a delivery under way (seconds when atomd or munged is gone). */
typedef struct atom_hb_tcp atom_hb_tcp;

/* NULL (with a warning logged) when the address does not resolve: nothing will be sent. */
atom_hb_tcp *atom_hb_tcp_open(const char *hostport, const char *munge_socket);
/* json: one heartbeat (atom_heartbeat_to_json), without a newline. s may be NULL. */
void atom_hb_tcp_send(atom_hb_tcp *s, const char *json);
void atom_hb_tcp_close(atom_hb_tcp *s);

/* ------------------------------------------------------------------------------------------ */
/* Logging: "2026-11-23T14:00:00Z atomd[pid] LEVEL msg" to stderr.                             */

typedef enum { ATOM_LOG_DEBUG, ATOM_LOG_INFO, ATOM_LOG_WARN, ATOM_LOG_ERROR } atom_log_level;
void atom_log_init(const char *program, atom_log_level min_level);
void atom_log(atom_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ------------------------------------------------------------------------------------------ */
/* Small shared helpers                                                                        */

/* Reads a whole file (NUL-terminated; *len excludes the NUL). Refuses files over max_bytes. */
char *atom_read_file(const char *path, size_t max_bytes, size_t *len, atom_err *err);
/* Writes a file atomically: temporary name in the same folder, fsync, rename, fsync folder. */
/* mkdir -p: path and its missing parents, each created with mode (existing ones are left as
 * they are). Returns 0 or the errno of the first mkdir that failed (ENAMETOOLONG). */
int atom_make_dirs(const char *path, mode_t mode);
int atom_write_file_atomic(const char *path, const void *data, size_t len, atom_err *err);
/* The folder part of path into dir: "." when path names no folder, "/" for a file in the root. */
void atom_path_dir(const char *path, char *dir, size_t len);
/* The program `name` in the running program's folder (atom's programs are installed side by side),
 * or the path the environment variable env_name holds when it is set. Does not check the file. */
int atom_program_path(const char *env_name, const char *name, char *path, size_t len, atom_err *err);

/* Private paths (private_path.c). A folder someone else created first (a predictable name under
 * /tmp, a shared scratch space) lets them swap what is inside, so atom never takes one. */
/* Creates path (mode, and its missing parents mode | 0700) or, when it exists, checks with
 * lstat that it is a real folder (not a symlink) owned by the caller's effective uid and
 * writable by no one else; a folder whose mode has no group or other bits (0700) must have
 * none. Refused with a sentence naming the path, its owner and what to do. */
int atom_private_dir(const char *path, mode_t mode, atom_err *err);
/* The check alone, for a folder that exists. */
int atom_private_dir_check(const char *path, mode_t mode, atom_err *err);
/* open(path, flags | O_NOFOLLOW | O_CLOEXEC, mode) that takes only a regular file owned by the
 * caller's effective uid (never a symlink, a FIFO or another user's file). A descriptor or -1. */
int atom_private_open(const char *path, int flags, mode_t mode, atom_err *err);
/* The caller's home: $HOME when it is an absolute path, else the account database's. */
int atom_user_home(char *out, size_t len, atom_err *err);
/* The caller's state folder: $XDG_STATE_HOME/atom, else HOME/.local/state/atom. */
int atom_user_state_dir(char *out, size_t len, atom_err *err);
/* Parses "90s", "30m", "2h", "1d", "1h30m", "01:30:00" or a plain number of seconds. */
int atom_parse_duration(const char *s, int64_t *seconds);
/* Seconds since the epoch, and a monotonic clock. */
double atom_now(void);
double atom_monotonic(void);

/* ------------------------------------------------------------------------------------------ */
/* A token file's sidecar, FILE.json, written by atom-data prepare (data/): what made the file. */

typedef struct atom_token_sidecar {
    char tokenizer[32]; /* "gpt2", "bytes" */
    char format[16];    /* data.format: "uint16", "bytes" */
    int vocab;          /* the tokenizer's vocabulary size */
    int64_t tokens;     /* the file's token count */
    int max_id;         /* its largest id; -1 for an empty file */
} atom_token_sidecar;

/* Reads token_path + ".json": 0 when read, 1 when there is none, -1 with err when it is bad. */
int atom_token_sidecar_read(const char *token_path, atom_token_sidecar *out, atom_err *err);

#endif
