/* bench/sched/bench_munge.c: atom-bench-munge, the cost of one MUNGE credential as atomd's TCP
 * port pays it: atom_munge_encode (the client's side) and atom_munge_decode (atomd's), each a
 * round trip to munged, on a submit-sized payload. Printed beside a Unix-socket round trip of the
 * same payload to an echo thread in this process, the peer a local request pays anyway. Checks
 * that every payload comes back intact and signed by this uid (exit 1 otherwise), never its times.
 *
 *   atom-bench-munge [--socket MUNGED_SOCKET] [--reps N] [--bytes N]
 */
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/common.h"

static void *echo(void *arg)
{
    int fd = *(int *)arg;
    char buf[1 << 16];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        if (write(fd, buf, (size_t)n) != n)
            break;
    return NULL;
}

int main(int argc, char **argv)
{
    const char *munge_socket = "";
    int reps = 2000;
    size_t bytes = 2000; /* about a normalised job spec in a submit request */
    static const struct option opts[] = {{"socket", required_argument, NULL, 's'},
                                         {"reps", required_argument, NULL, 'r'},
                                         {"bytes", required_argument, NULL, 'b'},
                                         {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "s:r:b:", opts, NULL)) != -1) {
        if (opt == 's')
            munge_socket = optarg;
        else if (opt == 'r')
            reps = atoi(optarg);
        else if (opt == 'b')
            bytes = (size_t)atol(optarg);
        else {
            fprintf(stderr, "usage: atom-bench-munge [--socket MUNGED_SOCKET] [--reps N] [--bytes N]\n");
            return 2;
        }
    }
    if (reps < 1 || bytes < 1 || bytes > (1u << 16)) {
        fprintf(stderr, "atom-bench-munge: --reps >= 1, --bytes 1..65536\n");
        return 2;
    }
    char *payload = malloc(bytes + 1);
    if (!payload)
        return 1;
    for (size_t i = 0; i < bytes; i++)
        payload[i] = (char)('a' + i % 26);
    payload[bytes] = '\0';

    atom_err err = {{0}};
    double enc = 0, dec = 0;
    size_t cred_len = 0;
    for (int i = 0; i < reps; i++) {
        char *cred = NULL, *back = NULL;
        size_t len = 0;
        uid_t uid;
        gid_t gid;
        payload[0] = (char)('a' + i % 26); /* a different credential each time */
        double t0 = atom_monotonic();
        if (atom_munge_encode(munge_socket, payload, bytes, &cred, &err)) {
            fprintf(stderr, "atom-bench-munge: %s\n", err.msg);
            return 1;
        }
        double t1 = atom_monotonic();
        if (atom_munge_decode(munge_socket, cred, &back, &len, &uid, &gid, &err)) {
            fprintf(stderr, "atom-bench-munge: %s\n", err.msg);
            return 1;
        }
        double t2 = atom_monotonic();
        if (len != bytes || memcmp(back, payload, bytes) != 0 || uid != geteuid()) {
            fprintf(stderr, "atom-bench-munge: the payload or the uid came back changed\n");
            return 1;
        }
        enc += t1 - t0;
        dec += t2 - t1;
        cred_len = strlen(cred);
        free(cred);
        free(back);
    }

    /* The peer: the same bytes there and back over a Unix stream socket. */
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return 1;
    pthread_t th;
    pthread_create(&th, NULL, echo, &sv[1]);
    char *in = malloc(bytes);
    double t0 = atom_monotonic();
    for (int i = 0; i < reps; i++) {
        if (write(sv[0], payload, bytes) != (ssize_t)bytes)
            return 1;
        size_t got = 0;
        while (got < bytes) {
            ssize_t n = read(sv[0], in + got, bytes - got);
            if (n <= 0)
                return 1;
            got += (size_t)n;
        }
    }
    double unix_rt = (atom_monotonic() - t0) / reps;
    shutdown(sv[0], SHUT_WR);
    pthread_join(th, NULL);
    close(sv[0]);
    close(sv[1]);

    double e = 1e6 * enc / reps, d = 1e6 * dec / reps;
    printf("MUNGE, %zu-byte payload (credential %zu bytes), %d reps: encode %.0f us, decode %.0f us, "
           "encode+decode %.0f us; peer: a Unix-socket round trip of the payload %.1f us (%.0fx)\n",
           bytes, cred_len, reps, e, d, e + d, 1e6 * unix_rt, (e + d) / (1e6 * unix_rt));
    free(in);
    free(payload);
    return 0;
}
