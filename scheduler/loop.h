/* scheduler/loop.h: atomd's event loop, an epoll set of descriptors with one handler each.
 *
 * In the manner of Redis's ae.c: every descriptor atomd watches (signalfd, listening sockets,
 * the heartbeat socket, clients, metrics connections, a pipe from a launcher...) is registered
 * once with the events it wants and a handler; the server changes the events when a client's
 * state changes (output to send, reading paused) instead of rebuilding and scanning an array of
 * every descriptor each iteration, so an iteration costs what is ready, not what is open.
 *
 * Level-triggered: a handler that leaves data unread is called again at the next iteration.
 * At most ATOMD_LOOP_BATCH ready descriptors are handled per wait; epoll hands out the others
 * (in turn) at the next. A hang-up or an error on a descriptor is reported as every event it was
 * registered for, so a handler finds out by its read or write failing. A handler may add,
 * change or delete any descriptor, its own included; a descriptor deleted during a wait gets no
 * further call from that wait (but a descriptor number closed and reused by a new registration
 * within one wait may see one event meant for the old one: handlers take EAGAIN in their stride,
 * as non-blocking descriptors require anyway).
 *
 * The loop only dispatches: what an iteration does around the wait (the scheduling pass, the
 * COMMIT, then the answers) is server.c's atomd_server_run.
 */
#ifndef ATOM_SCHEDULER_LOOP_H
#define ATOM_SCHEDULER_LOOP_H

#include "common/common.h"

struct atomd;

#define ATOMD_READABLE 1u
#define ATOMD_WRITABLE 2u
#define ATOMD_LOOP_BATCH 256

/* Called with the events that are ready (a subset of those registered). */
typedef void atomd_fd_handler(struct atomd *d, int fd, unsigned mask, void *arg);

typedef struct atomd_loop_entry {
    bool used;               /* registered */
    unsigned mask;           /* the events waited for (0: in no epoll set for now) */
    atomd_fd_handler *fn;
    void *arg;
} atomd_loop_entry;

typedef struct atomd_loop {
    int epoll_fd;
    atomd_loop_entry *fds;   /* indexed by descriptor */
    int n_fds;               /* entries in fds */
    int registered;          /* descriptors with a handler */
} atomd_loop;

int atomd_loop_open(atomd_loop *l, atom_err *err);
void atomd_loop_close(atomd_loop *l);

/* Registers fd with the events in mask (0: none for now) and its handler; fn and arg replace
 * any earlier registration of fd. */
int atomd_loop_add(atomd_loop *l, int fd, unsigned mask, atomd_fd_handler *fn, void *arg,
                   atom_err *err);
/* Changes the events fd waits for (0: none until the next change; fd stays registered). */
int atomd_loop_mod(atomd_loop *l, int fd, unsigned mask, atom_err *err);
/* Forgets fd: call it before close(fd). Unknown descriptors are ignored. */
void atomd_loop_del(atomd_loop *l, int fd);
/* Whether fd is registered, and the events it waits for. */
unsigned atomd_loop_mask(const atomd_loop *l, int fd);
bool atomd_loop_has(const atomd_loop *l, int fd);

/* Waits up to timeout seconds (0: do not wait) for events and calls their handlers. Returns how
 * many descriptors were ready, 0 on timeout or EINTR, -1 on another epoll_wait error. */
int atomd_loop_wait(atomd_loop *l, struct atomd *d, double timeout, atom_err *err);

#endif
