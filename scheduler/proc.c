/* scheduler/proc.c: looking at and signalling local processes through /proc (see proc.h). */
#include "scheduler/proc.h"

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint64_t atomd_proc_start_time(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* The command name may hold spaces and parentheses: fields restart after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    p++;
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
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' ? p[2] : 0;
}

static pid_t proc_parent(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    int ppid = 0;
    if (!p || sscanf(p + 1, " %*c %d", &ppid) != 1)
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
        char path[64], buf[8192];
        snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        for (size_t i = 0; i < n;) {
            if (strcmp(buf + i, needle) == 0) {
                found = pid;
                break;
            }
            i += strlen(buf + i) + 1;
        }
    }
    closedir(dir);
    return found;
}
