/* scheduler/loop.c: atomd's epoll event loop (see loop.h). */
#include "scheduler/loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

int atomd_loop_open(atomd_loop *l, atom_err *err)
{
    memset(l, 0, sizeof *l);
    l->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epoll_fd < 0)
        return atom_errf(err, "epoll_create1: %s", strerror(errno));
    return 0;
}

void atomd_loop_close(atomd_loop *l)
{
    if (l->epoll_fd >= 0)
        close(l->epoll_fd);
    free(l->fds);
    memset(l, 0, sizeof *l);
    l->epoll_fd = -1;
}

static uint32_t epoll_events(unsigned mask)
{
    return (mask & ATOMD_READABLE ? EPOLLIN : 0u) | (mask & ATOMD_WRITABLE ? EPOLLOUT : 0u);
}

/* Moves fd's epoll registration from `from` events to `to`: a descriptor that waits for nothing
 * is taken out of the set, since epoll reports a hang-up even to one that asked for no event. */
static int set_events(atomd_loop *l, int fd, unsigned from, unsigned to, atom_err *err)
{
    if (from == to)
        return 0;
    struct epoll_event ev = {.events = epoll_events(to), .data.fd = fd};
    int op = !from ? EPOLL_CTL_ADD : !to ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    if (epoll_ctl(l->epoll_fd, op, fd, &ev) != 0)
        return atom_errf(err, "epoll_ctl on descriptor %d: %s", fd, strerror(errno));
    return 0;
}

int atomd_loop_add(atomd_loop *l, int fd, unsigned mask, atomd_fd_handler *fn, void *arg,
                   atom_err *err)
{
    if (fd < 0)
        return atom_errf(err, "event loop: descriptor %d", fd);
    if (fd >= l->n_fds) {
        int n = l->n_fds ? l->n_fds : 64;
        while (n <= fd)
            n *= 2;
        atomd_loop_entry *fds = realloc(l->fds, (size_t)n * sizeof *fds);
        if (!fds)
            return atom_errf(err, "event loop: out of memory");
        memset(fds + l->n_fds, 0, (size_t)(n - l->n_fds) * sizeof *fds);
        l->fds = fds;
        l->n_fds = n;
    }
    atomd_loop_entry *e = &l->fds[fd];
    mask &= ATOMD_READABLE | ATOMD_WRITABLE;
    if (set_events(l, fd, e->used ? e->mask : 0, mask, err))
        return -1;
    if (!e->used)
        l->registered++;
    *e = (atomd_loop_entry){.used = true, .mask = mask, .fn = fn, .arg = arg};
    return 0;
}

int atomd_loop_mod(atomd_loop *l, int fd, unsigned mask, atom_err *err)
{
    if (!atomd_loop_has(l, fd))
        return atom_errf(err, "event loop: descriptor %d is not registered", fd);
    atomd_loop_entry *e = &l->fds[fd];
    mask &= ATOMD_READABLE | ATOMD_WRITABLE;
    if (set_events(l, fd, e->mask, mask, err))
        return -1;
    e->mask = mask;
    return 0;
}

void atomd_loop_del(atomd_loop *l, int fd)
{
    if (!atomd_loop_has(l, fd))
        return;
    atomd_loop_entry *e = &l->fds[fd];
    if (e->mask)
        epoll_ctl(l->epoll_fd, EPOLL_CTL_DEL, fd, NULL);
    memset(e, 0, sizeof *e);
    l->registered--;
}

bool atomd_loop_has(const atomd_loop *l, int fd)
{
    return fd >= 0 && fd < l->n_fds && l->fds[fd].used;
}

unsigned atomd_loop_mask(const atomd_loop *l, int fd)
{
    return atomd_loop_has(l, fd) ? l->fds[fd].mask : 0;
}

int atomd_loop_wait(atomd_loop *l, struct atomd *d, double timeout, atom_err *err)
{
    struct epoll_event ev[ATOMD_LOOP_BATCH];
    int timeout_ms = timeout <= 0 ? 0 : (int)(timeout * 1000.0 + 0.999);
    int n = epoll_wait(l->epoll_fd, ev, ATOMD_LOOP_BATCH, timeout_ms);
    if (n < 0) {
        if (errno == EINTR)
            return 0;
        return atom_errf(err, "epoll_wait: %s", strerror(errno));
    }
    for (int i = 0; i < n; i++) {
        int fd = ev[i].data.fd;
        unsigned ready = (ev[i].events & EPOLLIN ? ATOMD_READABLE : 0u) |
                         (ev[i].events & EPOLLOUT ? ATOMD_WRITABLE : 0u);
        if (ev[i].events & (EPOLLERR | EPOLLHUP | EPOLLRDHUP))
            ready |= ATOMD_READABLE | ATOMD_WRITABLE;
        /* The registration as it is now: an earlier handler of this wait may have changed it. */
        if (!atomd_loop_has(l, fd))
            continue;
        atomd_loop_entry e = l->fds[fd];
        ready &= e.mask;
        if (ready)
            e.fn(d, fd, ready, e.arg);
    }
    return n;
}
