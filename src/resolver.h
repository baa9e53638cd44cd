/*
 * Non-blocking name resolution for outbound sockets (cosocket.md section 4): /etc/hosts,
 * then DNS through libevent's evdns on the worker's event base, with a per-worker cache that
 * honours the answers' TTL. The resolver of a worker starts on its first look-up.
 *
 * Concurrent look-ups of one name share one DNS query. A and AAAA are asked at once (AAAA
 * unless --resolver-ipv6 off); the look-up succeeds with every address either gave.
 */
#ifndef MF_RESOLVER_H
#define MF_RESOLVER_H

#include <sys/socket.h>

typedef struct mf_worker mf_worker_t;
typedef struct mf_resolver mf_resolver_t;
typedef struct mf_resolve mf_resolve_t;

/*
 * err == 0: naddrs >= 1 addresses (sockaddr_in/in6, port 0). err != 0: errmsg is the
 * OpenResty-worded text, e.g. "NAME could not be resolved (3: Host not found)". The addresses
 * and errmsg are valid only during the call: copy what you keep. After the callback the look-up
 * handle is gone (do not cancel it).
 */
typedef void (*mf_resolve_cb)(int err, const struct sockaddr_storage *addrs, int naddrs,
                              const char *errmsg, void *arg);

/*
 * Starts a look-up on worker w; cb runs exactly once, later, from the event loop (never
 * inside this call), unless cancelled. NULL and *errmsg set (static text) on immediate
 * failure (out of memory, the resolver cannot start). A name that is not a host name is not
 * an immediate failure: cb gets err != 0 and `failed to parse host name "NAME"`.
 */
mf_resolve_t *mf_resolver_lookup(mf_worker_t *w, const char *name, mf_resolve_cb cb, void *arg,
                                 const char **errmsg);

/* The callback will not run; safe to call from inside other callbacks. */
void mf_resolver_cancel(mf_resolve_t *q);

/* Frees the worker's resolver (pending look-ups are cancelled); called by mf_worker_free. */
void mf_resolver_free(mf_worker_t *w);

/* Error codes of the callback's err, as nginx's resolver numbers them. */
enum {
    MF_RESOLVE_FORMAT = 1,
    MF_RESOLVE_SERVFAIL = 2,
    MF_RESOLVE_NOTFOUND = 3,
    MF_RESOLVE_NOTIMPL = 4,
    MF_RESOLVE_REFUSED = 5,
    MF_RESOLVE_TIMEDOUT = 110,
    /* An answer too large for UDP: evdns has no TCP fallback (nor EDNS), so a name with more
     * addresses than fit in 512 bytes (about 30 A records) fails with this. */
    MF_RESOLVE_TRUNCATED = 65,
    MF_RESOLVE_BADNAME = 1000, /* failed to parse host name */
    MF_RESOLVE_NOMEM = 1001,
};

/* Cached names of worker w, for tests and status. */
unsigned mf_resolver_cached(mf_worker_t *w);

#endif
