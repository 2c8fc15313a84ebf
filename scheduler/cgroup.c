/* scheduler/cgroup.c: one cgroup v2 folder per attempt (cgroup.h says why). */
#include "scheduler/cgroup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The mount point of the first cgroup2 file system in /proc/self/mountinfo ("" when none):
 * field 5 is the mount point, the file system type follows the " - " separator. */
static void cgroup2_mount(char *mount, size_t len)
{
    mount[0] = 0;
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        char *sep = strstr(line, " - ");
        if (!sep || strncmp(sep + 3, "cgroup2 ", 8) != 0)
            continue;
        char *field = line, *save = NULL;
        for (int i = 0; i < 5 && field; i++)
            field = strtok_r(i == 0 ? line : NULL, " ", &save);
        if (field && strlen(field) < len) {
            snprintf(mount, len, "%s", field);
            break;
        }
    }
    fclose(f);
}

/* atomd's own path in the cgroup2 hierarchy (the "0::" line of /proc/self/cgroup). */
static void own_path(char *path, size_t len)
{
    snprintf(path, len, "/");
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (!f)
        return;
    char line[4096];
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "0::", 3) == 0) {
            line[strcspn(line, "\n")] = 0;
            if (strlen(line + 3) < len)
                snprintf(path, len, "%s", line + 3);
            break;
        }
    fclose(f);
}

/* A folder that is atomd's: a real folder (not a link) owned by atomd's uid. */
static int own_folder(const char *path, char *why, size_t len)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        snprintf(why, len, "cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid()) {
        snprintf(why, len, "%s is not a folder of uid %u", path, (unsigned)geteuid());
        return -1;
    }
    return 0;
}

void atomd_cgroups_init(atomd_cgroups *cg, const char *state_dir)
{
    memset(cg, 0, sizeof *cg);
    char mount[ATOM_PATH_MAX], self[ATOM_PATH_MAX];
    cgroup2_mount(mount, sizeof mount);
    if (!mount[0]) {
        snprintf(cg->why, sizeof cg->why, "no cgroup2 file system is mounted");
        return;
    }
    own_path(self, sizeof self);
    /* FNV-1a of the state folder: one folder per atomd, the same after a restart. */
    uint32_t tag = 2166136261u;
    for (const char *p = state_dir; *p; p++)
        tag = (tag ^ (uint8_t)*p) * 16777619u;
    if ((size_t)snprintf(cg->root, sizeof cg->root, "%s%s%satom-%08x", mount, self,
                         strcmp(self, "/") == 0 ? "" : "/", tag) >= sizeof cg->root) {
        snprintf(cg->why, sizeof cg->why, "the cgroup path is too long");
        return;
    }
    if (own_folder(cg->root, cg->why, sizeof cg->why) != 0)
        return;
    cg->usable = true;
}

int atomd_cgroup_path(const atomd_cgroups *cg, const char *job_id, int attempt, char *path,
                      size_t len)
{
    if (!cg->usable) {
        path[0] = 0;
        return -1;
    }
    return (size_t)snprintf(path, len, "%s/job-%s-%d", cg->root, job_id, attempt) < len ? 0 : -1;
}

int atomd_cgroup_create(const char *path, atom_err *err)
{
    char why[ATOM_PATH_MAX + 64];
    if (own_folder(path, why, sizeof why) != 0)
        return atom_errf(err, "%s", why);
    return 0;
}

/* Writes text to path/name. */
static int write_control(const char *path, const char *name, const char *text)
{
    char file[ATOM_PATH_MAX + 32];
    if ((size_t)snprintf(file, sizeof file, "%s/%s", path, name) >= sizeof file)
        return -1;
    int fd = open(file, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -1;
    size_t n = strlen(text);
    int rc = write(fd, text, n) == (ssize_t)n ? 0 : -1;
    close(fd);
    return rc;
}

int atomd_cgroup_join(const char *path)
{
    /* No snprintf here: a forked child of a threaded-or-not parent keeps to plain calls. */
    char file[ATOM_PATH_MAX + 32];
    size_t n = strlen(path);
    static const char procs[] = "/cgroup.procs";
    if (n + sizeof procs > sizeof file)
        return -1;
    memcpy(file, path, n);
    memcpy(file + n, procs, sizeof procs);
    int fd = open(file, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -1;
    int rc = write(fd, "0", 1) == 1 ? 0 : -1; /* "0": the writing process */
    close(fd);
    return rc;
}

/* The pids in path/cgroup.procs (malloc'd, *n of them), NULL when it cannot be read. */
static pid_t *read_procs(const char *path, int *n)
{
    *n = 0;
    char file[ATOM_PATH_MAX + 32];
    if ((size_t)snprintf(file, sizeof file, "%s/cgroup.procs", path) >= sizeof file)
        return NULL;
    FILE *f = fopen(file, "re");
    if (!f)
        return NULL;
    int cap = 16;
    pid_t *pids = malloc((size_t)cap * sizeof *pids);
    long pid;
    while (pids && fscanf(f, "%ld", &pid) == 1) {
        if (*n == cap) {
            pid_t *more = realloc(pids, (size_t)(cap *= 2) * sizeof *pids);
            if (!more) {
                free(pids);
                pids = NULL;
                break;
            }
            pids = more;
        }
        pids[(*n)++] = (pid_t)pid;
    }
    fclose(f);
    return pids;
}

int atomd_cgroup_kill(const char *path)
{
    int n = 0;
    pid_t *pids = read_procs(path, &n);
    if (!pids)
        return -1;
    int signalled = 0;
    if (n > 0 && write_control(path, "cgroup.kill", "1") == 0) {
        signalled = 1; /* the kernel kills them all, and any they fork meanwhile */
    } else {
        for (int i = 0; i < n; i++)
            if (kill(pids[i], SIGKILL) == 0)
                signalled++;
    }
    free(pids);
    return signalled;
}

int atomd_cgroup_populated(const char *path)
{
    char file[ATOM_PATH_MAX + 32];
    if ((size_t)snprintf(file, sizeof file, "%s/cgroup.events", path) >= sizeof file)
        return -1;
    FILE *f = fopen(file, "re");
    if (!f)
        return -1;
    char line[128];
    int populated = 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "populated ", 10) == 0)
            populated = atoi(line + 10) != 0;
    fclose(f);
    return populated;
}

/* The parent pid of pid (field 4 of /proc/pid/stat, after the command in parentheses). */
static pid_t parent_of(pid_t pid)
{
    char file[64], text[1024];
    snprintf(file, sizeof file, "/proc/%d/stat", (int)pid);
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0)
        return -1;
    text[n] = 0;
    char *end = strrchr(text, ')');
    long ppid;
    char state;
    if (!end || sscanf(end + 1, " %c %ld", &state, &ppid) != 2)
        return -1;
    return (pid_t)ppid;
}

pid_t atomd_cgroup_leader(const char *path)
{
    int n = 0;
    pid_t *pids = read_procs(path, &n), leader = 0;
    for (int i = 0; pids && i < n && !leader; i++) {
        pid_t parent = parent_of(pids[i]);
        bool inside = false;
        for (int j = 0; j < n && !inside; j++)
            inside = pids[j] == parent;
        if (!inside && parent >= 0)
            leader = pids[i];
    }
    free(pids);
    return leader;
}

void atomd_cgroups_sweep(const atomd_cgroups *cg)
{
    if (!cg->usable)
        return;
    DIR *dir = opendir(cg->root);
    if (!dir)
        return;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL)
        if (strncmp(e->d_name, "job-", 4) == 0)
            (void)unlinkat(dirfd(dir), e->d_name, AT_REMOVEDIR); /* EBUSY while populated */
    closedir(dir);
}
