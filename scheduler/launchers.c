/* scheduler/launchers.c: the table of atomd's launchers (see launchers.h). */
#include "scheduler/launchers.h"

#include <string.h>

static const atomd_launcher launchers[] = {
    {"mpirun", true, false, atom_launch_prepare, atom_launch_start, atom_launch_signal, atom_launch_wait,
     atom_launch_rank_log, false},
    {"slurm", false, false, atom_launch_slurm_prepare, atom_launch_slurm_start, atom_launch_slurm_signal,
     atom_launch_slurm_wait, atom_launch_slurm_rank_log, true},
};

const atomd_launcher *atomd_launcher_named(const char *name)
{
    for (size_t i = 0; i < sizeof launchers / sizeof *launchers; i++)
        if (strcmp(launchers[i].name, name) == 0)
            return &launchers[i];
    return NULL;
}
