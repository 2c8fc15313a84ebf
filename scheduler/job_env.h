/* scheduler/job_env.h: the environment a job's launcher gets (private to atomd).
 *
 * A job runs as its owner, so nothing of root's environment may reach it but what a site sets
 * for MPI, GPUs, threads and the locale: an allow-list of names and patterns (job_env.c), plus
 * the site's own (atomd.conf's job_env = NAME,PREFIX_*), plus the owner's identity (HOME, USER,
 * LOGNAME, SHELL from the password database). A root-only variable in atomd's environment
 * (a token, a key) never reaches a worker.
 */
#ifndef ATOM_SCHEDULER_JOB_ENV_H
#define ATOM_SCHEDULER_JOB_ENV_H

/* Who the job runs as; NULL in atomd_job_environ keeps atomd's own identity variables (a private
 * atomd, whose user is the job's owner). */
typedef struct atomd_job_identity {
    const char *name, *home, *shell;
} atomd_job_identity;

/* A NULL-terminated malloc'd environment (free with atomd_job_environ_free), NULL when out of
 * memory. extra: the site's added names and patterns, comma separated ("" or NULL: none). */
char **atomd_job_environ(const char *extra, const atomd_job_identity *who);
void atomd_job_environ_free(char **env);

#endif
