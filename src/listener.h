/*
 * Listening sockets: opening them from the command line or inheriting them (fd 0 as
 * FCGI_LISTENSOCK_FILENO, systemd socket activation), and accepting in a worker.
 */
#ifndef MF_LISTENER_H
#define MF_LISTENER_H

#include <stddef.h>

#include "config.h"
#include "loop.h"

#define MF_MAX_LISTENERS 16

typedef struct mf_listen_set {
    int fds[MF_MAX_LISTENERS];
    int http[MF_MAX_LISTENERS]; /* fds[i] is an --http listener */
    int n;
    char unix_path[108]; /* a unix socket we created and unlink at exit, or "" */
    const char *source;  /* "--listen", "fd 0", "systemd" or "default" */
} mf_listen_set_t;

/*
 * Opens or inherits the listening sockets, in the order of docs/api.md, "Command line". Returns
 * 0, or -1 with a one-line message in err.
 */
int mf_listener_open(const mf_config_t *cfg, mf_listen_set_t *set, char *err, size_t errlen);

/*
 * Accepts on fd in w's loop; the connections speak HTTP when http is set, else FastCGI. The
 * allow list comes from --allow and FCGI_WEB_SERVER_ADDRS (FastCGI listeners only).
 */
int mf_listener_attach(mf_worker_t *w, int fd, int http, const char *allow, char *err,
                       size_t errlen);

void mf_listener_close_all(mf_worker_t *w);
void mf_listener_enable_all(mf_worker_t *w, int on);

/* Whether a peer may connect under a comma-separated address list (NULL: everyone). */
int mf_listener_allowed(const char *allow, const struct sockaddr *sa);

#endif
