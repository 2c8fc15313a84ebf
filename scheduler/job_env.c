/* scheduler/job_env.c: the environment a job's launcher starts with (job_env.h). */
#include "scheduler/job_env.h"

#include <fnmatch.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

/* What a site sets for its MPI, GPUs, threads and locale in atomd's environment, and what the
 * test builds need (sanitizer options): names or patterns, as fnmatch takes them. Nothing else
 * of atomd's environment (its secrets, its SUDO_*, its own settings) reaches a job. */
static const char *const allowed[] = {
    "PATH", "LANG", "LANGUAGE", "LC_*", "TZ", "TMPDIR", "LD_LIBRARY_PATH",
    "OMPI_MCA_*", "PMIX_MCA_*", "PRTE_MCA_*", "HWLOC_*", "UCX_*", "NCCL_*", "CUDA_*",
    "OPENBLAS_*", "OMP_*", "MKL_*", "DNNL_*", "ONEDNN_*",
    "ATOM_CKPT_*", "ATOM_PEAK_FLOPS_PER_RANK", "ATOM_MPIRUN", "ATOM_SRUN", "ATOM_SBATCH_TEMPLATE", "SLURM_CONF",
    "ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS",
};

static bool name_matches(const char *name, const char *patterns)
{
    for (size_t i = 0; i < sizeof allowed / sizeof *allowed; i++)
        if (fnmatch(allowed[i], name, 0) == 0)
            return true;
    /* The site's own additions: job_env = NAME,PREFIX_*,... in atomd.conf. */
    char list[1024];
    snprintf(list, sizeof list, "%s", patterns ? patterns : "");
    char *save = NULL;
    for (char *p = strtok_r(list, ", ", &save); p; p = strtok_r(NULL, ", ", &save))
        if (fnmatch(p, name, 0) == 0)
            return true;
    return false;
}

/* Appends "name=value" (a copy) to env. */
static int add(char **env, int *n, const char *name, const char *value)
{
    size_t len = strlen(name) + strlen(value) + 2;
    char *entry = malloc(len);
    if (!entry)
        return -1;
    snprintf(entry, len, "%s=%s", name, value);
    env[(*n)++] = entry;
    return 0;
}

char **atomd_job_environ(const char *extra, const atomd_job_identity *who)
{
    int total = 0;
    for (char **e = environ; *e; e++)
        total++;
    char **env = calloc((size_t)total + 8, sizeof *env);
    if (!env)
        return NULL;
    int n = 0;
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq || eq == *e || (size_t)(eq - *e) >= 256)
            continue;
        char name[256];
        memcpy(name, *e, (size_t)(eq - *e));
        name[eq - *e] = 0;
        if (who && (strcmp(name, "HOME") == 0 || strcmp(name, "USER") == 0 ||
                    strcmp(name, "LOGNAME") == 0 || strcmp(name, "SHELL") == 0))
            continue; /* the owner's, below */
        bool identity = strcmp(name, "HOME") == 0 || strcmp(name, "USER") == 0 ||
                        strcmp(name, "LOGNAME") == 0 || strcmp(name, "SHELL") == 0;
        if (!(identity && !who) && !name_matches(name, extra)) /* atomd's user is the owner */
            continue;
        if (!(env[n++] = strdup(*e))) {
            atomd_job_environ_free(env);
            return NULL;
        }
    }
    if (who) {
        if (add(env, &n, "HOME", who->home) || add(env, &n, "USER", who->name) ||
            add(env, &n, "LOGNAME", who->name) ||
            add(env, &n, "SHELL", who->shell[0] ? who->shell : "/bin/sh")) {
            atomd_job_environ_free(env);
            return NULL;
        }
    }
    env[n] = NULL;
    return env;
}

void atomd_job_environ_free(char **env)
{
    if (!env)
        return;
    for (char **e = env; *e; e++)
        free(*e);
    free(env);
}
