/* scheduler/proc.c: looking at and signalling local processes through /proc (see proc.h). */
#include "scheduler/proc.h"

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads /proc/<pid>/<name> into buf (NUL-terminated); the byte count, or -1 when the process is gone. */
static long read_proc_file(pid_t pid, const char *name, char *buf, size_t len)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, name);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, len - 1, f);
    fclose(f);
    buf[n] = 0;
    return (long)n;
}

/* The fields of /proc/<pid>/stat after the command name, starting with " <state>", or NULL. The
 * command name may hold spaces and parentheses: the fields restart after the last ')'. */
static const char *stat_fields(pid_t pid, char *buf, size_t len)
{
    if (read_proc_file(pid, "stat", buf, len) < 0)
        return NULL;
    const char *p = strrchr(buf, ')');
    return p && p[1] == ' ' ? p + 1 : NULL;
}

uint64_t atomd_proc_start_time(pid_t pid)
{
    char buf[1024];
    const char *p = stat_fields(pid, buf, sizeof buf);
    /* Field 3 (state) is the first after ')'; the start time is field 22. */
    unsigned long long start = 0;
    for (int field = 3; field < 22 && p; field++)
        p = strchr(p + 1, ' ');
    if (!p || sscanf(p, " %llu", &start) != 1)
        return 0;
    return (uint64_t)start;
}

char atomd_proc_state(pid_t pid)
{
    char buf[512];
    const char *p = stat_fields(pid, buf, sizeof buf);
    return p ? p[1] : 0;
}

static pid_t proc_parent(pid_t pid)
{
    char buf[512];
    const char *p = stat_fields(pid, buf, sizeof buf);
    int ppid = 0;
    if (!p || sscanf(p, " %*c %d", &ppid) != 1)
        return 0;
    return (pid_t)ppid;
}

/* Open MPI puts each local rank in a process group of its own, so signalling mpirun's group alone
 * would leave ranks behind: the descendants are found through /proc. */
void atomd_kill_tree(pid_t root, int sig)
{
    if (root <= 0)
        return;
    pid_t tree[4096];
    int n = 0;
    tree[n++] = root;
    /* Descendants, found level by level (a few /proc scans; a job has few local processes). */
    for (int level = 0, start = 0; level < 8 && start < n; level++) {
        int end = n;
        DIR *dir = opendir("/proc");
        if (!dir)
            break;
        struct dirent *e;
        while ((e = readdir(dir)) && n < (int)(sizeof tree / sizeof *tree)) {
            pid_t pid = (pid_t)atoi(e->d_name);
            if (pid <= 0)
                continue;
            pid_t parent = proc_parent(pid);
            for (int i = start; i < end; i++)
                if (tree[i] == parent) {
                    tree[n++] = pid;
                    break;
                }
        }
        closedir(dir);
        start = end;
    }
    kill(-root, sig);
    for (int i = n - 1; i >= 0; i--)
        kill(tree[i], sig);
}

pid_t atomd_find_process_with_arg(const char *needle)
{
    DIR *dir = opendir("/proc");
    if (!dir)
        return 0;
    pid_t found = 0;
    struct dirent *e;
    while (!found && (e = readdir(dir))) {
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid <= 0)
            continue;
        char buf[8192];
        long n = read_proc_file(pid, "cmdline", buf, sizeof buf);
        for (long i = 0; i < n;) {
            if (strcmp(buf + i, needle) == 0) {
                found = pid;
                break;
            }
            i += (long)strlen(buf + i) + 1;
        }
    }
    closedir(dir);
    return found;
}
