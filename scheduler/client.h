/* scheduler/client.h: the client side of atomd's protocol, used by atomctl's job commands.
 *
 * Connect to atomd's Unix socket, or to its TCP port from another node (an address HOST:PORT:
 * each request then goes as a MUNGE credential carrying it, signed by the local munged; socket
 * ATOM_MUNGE_SOCKET, else munged's default), send one JSON request per line, read one JSON answer
 * per line.
 * When atomd is not running the connection fails at once with a sentence saying so (atomctl
 * exits with ATOM_EXIT_NO_DAEMON); an answer that does not come within the timeout is an error,
 * never a hang.
 */
#ifndef ATOM_SCHEDULER_CLIENT_H
#define ATOM_SCHEDULER_CLIENT_H

#include <stddef.h>

#include "common/common.h"

typedef struct json_t json_t;

/* atomctl's exit status when atomd cannot be reached. */
#define ATOM_EXIT_NO_DAEMON 3

typedef struct atom_client {
    int fd;
    bool tcp;         /* requests go as MUNGE credentials */
    char munge_socket[ATOM_PATH_MAX]; /* "" : munged's default */
    char *buf;        /* bytes read past the last answer */
    size_t len, cap;
    double timeout;   /* seconds to wait for an answer */
} atom_client;

/* The socket atomd listens on by default: ATOM_SOCKET from the environment, else
 * /run/atom/atomd.sock for root, else $XDG_RUNTIME_DIR/atom/atomd.sock, else the socket/ folder
 * of the user's state folder (atom_user_state_dir); "" when none can be found. Never under /tmp:
 * a folder there can be created first by another user. */
void atom_client_default_socket(char *path, size_t len);

/* ATOM_SERVER from the environment (atomd's TCP port, HOST:PORT) into addr; false when unset. */
bool atom_client_default_server(char *addr, size_t len);
/* Whether addr names a TCP port (HOST:PORT, no '/') rather than a Unix socket path. */
bool atom_client_is_tcp(const char *addr);

/* addr: a Unix socket path or HOST:PORT (atom_client_is_tcp). Returns 0, or -1 with err filled;
 * *not_running is set when no atomd listens there. */
int atom_client_connect(atom_client *c, const char *path, int *not_running, atom_err *err);
/* Sends req (not consumed) and returns the answer (caller frees), or NULL with err. */
json_t *atom_client_call(atom_client *c, json_t *req, atom_err *err);
void atom_client_close(atom_client *c);

#endif
