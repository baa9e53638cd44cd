/*
 * Addresses as the bench tools spell them on the command line: "host:port", "[v6]:port" and
 * "unix:/path". Numeric hosts and "localhost" only: the benchmarks run on loopback and must
 * never wait on a resolver.
 */
#ifndef MF_NETADDR_H
#define MF_NETADDR_H

#include <stddef.h>
#include <sys/socket.h>

typedef struct mf_netaddr {
    struct sockaddr_storage ss;
    socklen_t len;
} mf_netaddr_t;

/* Returns 0, or -1 with a reason in err (errlen bytes, always terminated). */
int mf_netaddr_parse(const char *spec, mf_netaddr_t *addr, char *err, size_t errlen);

/* Whether the address is AF_INET or AF_INET6, where TCP_NODELAY applies. */
int mf_netaddr_is_inet(const mf_netaddr_t *addr);

/*
 * A non-blocking, close-on-exec listening socket bound to addr. A stale unix socket file
 * left by an earlier run is removed first (only when it is a socket). Returns the fd, or -1
 * with errno set.
 */
int mf_netaddr_listen(const mf_netaddr_t *addr, int backlog);

#endif
