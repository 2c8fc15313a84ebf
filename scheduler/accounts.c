/* scheduler/accounts.c: uid -> name and group membership, kept for ACCOUNTS_TTL (accounts.h). */
#include "scheduler/accounts.h"

#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>

#include "common/common.h"

/* One slot per uid, by uid modulo the table's size: a collision replaces the older entry. */
#define ACCOUNTS_SLOTS 1024

typedef struct account {
    bool used;
    uid_t uid;
    double looked_up;         /* atom_monotonic() of the look-up */
    char name[64];
    char group[64];           /* the group the membership below is for ("" : not asked yet) */
    bool in_group;
    double group_looked_up;
} account;

static account accounts[ACCOUNTS_SLOTS];

static account *slot(uid_t uid)
{
    account *a = &accounts[uid % ACCOUNTS_SLOTS];
    double now = atom_monotonic();
    if (a->used && a->uid == uid && now - a->looked_up < ACCOUNTS_TTL)
        return a;
    memset(a, 0, sizeof *a);
    a->used = true;
    a->uid = uid;
    a->looked_up = now;
    struct passwd pw, *res = NULL;
    char buf[2048];
    if (getpwuid_r(uid, &pw, buf, sizeof buf, &res) == 0 && res)
        snprintf(a->name, sizeof a->name, "%s", pw.pw_name);
    else
        snprintf(a->name, sizeof a->name, "%u", (unsigned)uid);
    return a;
}

const char *atomd_account_name(uid_t uid)
{
    return slot(uid)->name;
}

bool atomd_account_in_group(uid_t uid, const char *group)
{
    account *a = slot(uid);
    double now = atom_monotonic();
    if (strcmp(a->group, group) == 0 && now - a->group_looked_up < ACCOUNTS_TTL)
        return a->in_group;
    snprintf(a->group, sizeof a->group, "%s", group);
    a->group_looked_up = now;
    a->in_group = false;
    struct passwd pw, *pres = NULL;
    struct group gr, *gres = NULL;
    char pbuf[2048], gbuf[8192];
    if (getpwuid_r(uid, &pw, pbuf, sizeof pbuf, &pres) != 0 || !pres ||
        getgrnam_r(group, &gr, gbuf, sizeof gbuf, &gres) != 0 || !gres)
        return false;
    /* SO_PEERCRED carries the primary group only: the supplementary ones come from here. */
    gid_t groups[256];
    int n = (int)(sizeof groups / sizeof *groups);
    if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &n) < 0)
        n = (int)(sizeof groups / sizeof *groups);
    for (int i = 0; i < n && !a->in_group; i++)
        a->in_group = groups[i] == gr.gr_gid;
    return a->in_group;
}
