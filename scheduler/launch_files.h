/* scheduler/launch_files.h: helpers both launchers share (private to scheduler/): an attempt's
 * file paths and plan file (atom_program_path, in common.h, finds the programs next to atomd). */
#ifndef ATOM_SCHEDULER_LAUNCH_FILES_H
#define ATOM_SCHEDULER_LAUNCH_FILES_H

#include <stddef.h>

#include "scheduler/launch.h"

/* Clears launch, fills its run_dir, out_dir (plan->run_dir when set, else run_dir), plan_path
 * (run_dir/plan.json) and app_path (run_dir/app_name), and writes the plan there with out_dir as
 * its run_dir (where the workers write). */
int atom_launch_write_plan(const atom_plan *plan, const char *run_dir, const char *app_name,
                           atom_launch *launch, atom_err *err);

#endif
