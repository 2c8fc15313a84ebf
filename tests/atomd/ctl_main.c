/* tests/atomd/ctl_main.c: runs atomctl's job commands (scheduler/atomctl_jobs.c) by name, so the
 * end-to-end tests exercise them before they are rows of atomctl's own command table.
 * usage: atomd-test-ctl COMMAND [ARGS] */
#include <stdio.h>
#include <string.h>

#include "scheduler/atomctl_jobs.h"

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*run)(int, char **);
    } cmds[] = {{"submit", atomctl_cmd_submit}, {"run", atomctl_cmd_run},       {"status", atomctl_cmd_status},
                {"queue", atomctl_cmd_queue},   {"show", atomctl_cmd_show},     {"cancel", atomctl_cmd_cancel},
                {"logs", atomctl_cmd_logs},     {"nodes", atomctl_cmd_nodes},   {"drain", atomctl_cmd_drain},
                {"resume", atomctl_cmd_resume}};
    for (size_t i = 0; argc > 1 && i < sizeof cmds / sizeof *cmds; i++)
        if (strcmp(argv[1], cmds[i].name) == 0)
            return cmds[i].run(argc - 1, argv + 1);
    fprintf(stderr, "usage: atomd-test-ctl COMMAND [ARGS]\n");
    return 2;
}
