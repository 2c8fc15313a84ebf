/* scheduler/accounts.h: the account look-ups atomd answers with (private to atomd).
 *
 * A look-up in the password or group database may go to LDAP or SSSD and take milliseconds to
 * seconds, and atomd answers every client from one loop: `status` named the owner of every job
 * with its own getpwuid_r (about 20 ms per 100 jobs here, with the local files), and every request
 * of an administrator's asked getgrouplist again. So each uid is looked up at most once per
 * ACCOUNTS_TTL seconds and kept: a renamed user or a change of the admin group shows within
 * that time.
 */
#ifndef ATOM_SCHEDULER_ACCOUNTS_H
#define ATOM_SCHEDULER_ACCOUNTS_H

#include <stdbool.h>
#include <sys/types.h>

#define ACCOUNTS_TTL 60.0

/* The user name of uid, or its number when the database has none (a static buffer per entry:
 * valid until the next call). */
const char *atomd_account_name(uid_t uid);

/* Whether uid is a member of group (its primary group or a supplementary one). */
bool atomd_account_in_group(uid_t uid, const char *group);

#endif
