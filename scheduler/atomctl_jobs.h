/* scheduler/atomctl_jobs.h: atomctl's commands that talk to atomd (atomctl_jobs.c).
 *
 * Each takes argv from the command's name on (argv[0] is the name) and returns atomctl's exit
 * code: 0 ok, 1 failed (refused by atomd, an invalid spec, a job that ended badly for `run`),
 * 2 usage, 3 atomd cannot be reached. Every read command takes --json. Every command takes
 * --socket PATH (default: client.h's atom_client_default_socket).
 */
#ifndef ATOM_SCHEDULER_ATOMCTL_JOBS_H
#define ATOM_SCHEDULER_ATOMCTL_JOBS_H

int atomctl_cmd_submit(int argc, char **argv);
int atomctl_cmd_run(int argc, char **argv);
int atomctl_cmd_status(int argc, char **argv);
int atomctl_cmd_queue(int argc, char **argv);
int atomctl_cmd_show(int argc, char **argv);
int atomctl_cmd_cancel(int argc, char **argv);
int atomctl_cmd_logs(int argc, char **argv);
int atomctl_cmd_nodes(int argc, char **argv);
int atomctl_cmd_drain(int argc, char **argv);
int atomctl_cmd_resume(int argc, char **argv);
int atomctl_cmd_history(int argc, char **argv);
int atomctl_cmd_usage(int argc, char **argv);

#endif
