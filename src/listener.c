#include "listener.h"
#include "fcgi.h"
#include "http.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "status.h"

#define BACKLOG 4096
/* Connections taken per wake-up, so one worker does not drain a burst alone. */
#define ACCEPT_BATCH 4

struct mf_listener {
    int fd;
    struct event ev;
    mf_worker_t *w;
    struct event retry;
    int is_tcp;
    int http;           /* connections speak HTTP (--http), not FastCGI */
    char *allow;        /* comma-separated addresses, or NULL for all */
    int idle_deferrals; /* connections left to an idle worker in a row (should_defer) */
    uint32_t coin;      /* xorshift state for the idle hand-over's coin */
    mf_listener_t *next;
};

static int set_flags(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -1;
    return fcntl(fd, F_SETFD, FD_CLOEXEC);
}

static int open_unix(const char *path, unsigned mode, mf_listen_set_t *set, char *err,
                     size_t errlen)
{
    struct sockaddr_un sun;
    struct stat st;
    mode_t old;
    int fd;

    if (strlen(path) >= sizeof sun.sun_path) {
        snprintf(err, errlen, "unix socket path too long: %s", path);
        return -1;
    }
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    strcpy(sun.sun_path, path);
    if (lstat(path, &st) == 0) {
        int probe;
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(err, errlen, "%s exists and is not a socket", path);
            return -1;
        }
        /* A socket file nobody accepts on is stale and replaced; a live one is an error. */
        probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0 && connect(probe, (struct sockaddr *)&sun, sizeof sun) == 0) {
            close(probe);
            snprintf(err, errlen, "%s is in use by a running server", path);
            return -1;
        }
        if (probe >= 0)
            close(probe);
        unlink(path);
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    old = umask(0077); /* nobody else may connect before the mode below is set */
    if (bind(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
        umask(old);
        snprintf(err, errlen, "cannot bind %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    umask(old);
    if (chmod(path, (mode_t)mode) < 0 || listen(fd, BACKLOG) < 0 || set_flags(fd) < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    snprintf(set->unix_path, sizeof set->unix_path, "%s", path);
    set->fds[set->n++] = fd;
    return 0;
}

static int open_tcp(const char *addr, mf_listen_set_t *set, char *err, size_t errlen)
{
    char host[256];
    const char *port, *colon;
    struct addrinfo hints, *res, *ai;
    int rc, fd = -1, one = 1;

    if (addr[0] == '[') {
        const char *close_br = strchr(addr, ']');
        if (!close_br || close_br[1] != ':' || (size_t)(close_br - addr - 1) >= sizeof host) {
            snprintf(err, errlen, "bad listen address '%s' (want [V6]:PORT)", addr);
            return -1;
        }
        memcpy(host, addr + 1, (size_t)(close_br - addr - 1));
        host[close_br - addr - 1] = '\0';
        port = close_br + 2;
    } else {
        colon = strrchr(addr, ':');
        if (!colon || (size_t)(colon - addr) >= sizeof host) {
            snprintf(err, errlen,
                     "bad listen address '%s' (want HOST:PORT, [V6]:PORT or "
                     "unix:/PATH)",
                     addr);
            return -1;
        }
        memcpy(host, addr, (size_t)(colon - addr));
        host[colon - addr] = '\0';
        port = colon + 1;
    }
    if (!*port || strspn(port, "0123456789") != strlen(port) || atoi(port) > 65535) {
        snprintf(err, errlen, "bad port in listen address '%s'", addr);
        return -1;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    rc = getaddrinfo(host[0] && strcmp(host, "*") ? host : NULL, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve '%s': %s", addr, gai_strerror(rc));
        return -1;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0)
            continue;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (ai->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, BACKLOG) == 0)
            break;
        snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(errno));
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return -1;
    set_flags(fd);
    set->fds[set->n++] = fd;
    return 0;
}

/* fd 0 is a listening socket when a web server or spawner started us [section 2.2]. */
static int fd0_is_listener(void)
{
    int v = 0;
    socklen_t len = sizeof v;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;

    if (getsockopt(0, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) < 0 || !v)
        return 0;
    return getpeername(0, (struct sockaddr *)&ss, &sl) < 0 && errno == ENOTCONN;
}

int mf_listener_open(const mf_config_t *cfg, mf_listen_set_t *set, char *err, size_t errlen)
{
    const char *pid = getenv("LISTEN_PID"), *nfds = getenv("LISTEN_FDS");

    memset(set, 0, sizeof *set);
    for (int i = 0; i < cfg->nhttp; i++) {
        const char *a = cfg->http[i];
        int rc = strncmp(a, "unix:", 5) == 0 ? open_unix(a + 5, cfg->socket_mode, set, err, errlen)
                                             : open_tcp(a, set, err, errlen);
        if (rc < 0)
            return -1;
        set->http[set->n - 1] = 1;
        set->source = "--http";
    }
    if (cfg->listen) {
        set->source = cfg->nhttp ? "--http and --listen" : "--listen";
        if (strncmp(cfg->listen, "unix:", 5) == 0)
            return open_unix(cfg->listen + 5, cfg->socket_mode, set, err, errlen);
        return open_tcp(cfg->listen, set, err, errlen);
    }
    /* With --http alone, nothing speaks FastCGI: a developer's machine needs no port 9000. */
    if (cfg->nhttp)
        return 0;
    if (fd0_is_listener()) {
        set->source = "fd 0";
        set->fds[set->n++] = 0;
        return set_flags(0) < 0 ? -1 : 0;
    }
    if (pid && nfds && atol(pid) == (long)getpid() && atoi(nfds) > 0) {
        int n = atoi(nfds);
        set->source = "systemd";
        if (n > MF_MAX_LISTENERS)
            n = MF_MAX_LISTENERS;
        for (int i = 0; i < n; i++) {
            set->fds[set->n++] = 3 + i;
            set_flags(3 + i);
        }
        /* Children must not take the variables for their own. */
        unsetenv("LISTEN_PID");
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_FDNAMES");
        return 0;
    }
    set->source = "default";
    return open_tcp("127.0.0.1:9000", set, err, errlen);
}

/* Compares one address from the list with the peer; IPv4-mapped IPv6 peers match IPv4. */
static int addr_matches(const char *a, const struct sockaddr *sa)
{
    struct in_addr v4;
    struct in6_addr v6;

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        return inet_pton(AF_INET, a, &v4) == 1 && v4.s_addr == sin->sin_addr.s_addr;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        if (inet_pton(AF_INET6, a, &v6) == 1)
            return memcmp(&v6, &s6->sin6_addr, sizeof v6) == 0;
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr) && inet_pton(AF_INET, a, &v4) == 1)
            return memcmp(&v4, &s6->sin6_addr.s6_addr[12], 4) == 0;
    }
    return 0;
}

int mf_listener_allowed(const char *allow, const struct sockaddr *sa)
{
    char item[INET6_ADDRSTRLEN + 8];
    const char *p = allow;

    if (!allow)
        return 1;
    if (sa->sa_family != AF_INET && sa->sa_family != AF_INET6)
        return 1; /* the list names TCP peers; unix sockets are guarded by their mode */
    while (*p) {
        size_t n = strcspn(p, ",");
        const char *s = p;
        size_t len = n;
        while (len && (*s == ' ' || *s == '\t'))
            s++, len--;
        while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
            len--;
        if (len && len < sizeof item) {
            memcpy(item, s, len);
            item[len] = '\0';
            if (addr_matches(item, sa))
                return 1;
        }
        p += n;
        if (*p == ',')
            p++;
    }
    return 0;
}

/* Hands one accepted socket to the worker. */
static void take(mf_listener_t *ls, int fd, const struct sockaddr *sa)
{
    mf_worker_t *w = ls->w;
    int one = 1;

    /* --allow names web servers; an HTTP listener's peers are browsers. */
    if (ls->is_tcp && !ls->http && !mf_listener_allowed(ls->allow, sa)) {
        char host[INET6_ADDRSTRLEN] = "?";
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, host, sizeof host);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, host, sizeof host);
        mf_log_warn("connection from %s refused: not in the allowed addresses", host);
        close(fd);
        return;
    }
    if (ls->is_tcp)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (ls->http ? mf_http_conn_new(w, fd) != NULL : mf_fcgi_conn_new(w, fd) != NULL) {
        w->accepted++;
        if (w->slot)
            w->slot->last_accept = mf_status_clock();
    }
}

/*
 * Workers share the listening socket, and the kernel wakes them all for a connection: the
 * first to run takes it, and that is often the same worker again and again. Returns
 * DEFER_LOAD when this worker has more connections than the least loaded live worker (plus
 * one), DEFER_IDLE when a live worker with no connection and no request has waited longer
 * since its last accept than this one, else 0.
 */
enum { DEFER_LOAD = 1, DEFER_IDLE = 2 };

static int should_defer(mf_worker_t *w)
{
    double now;
    uint32_t least = UINT32_MAX;
    int idle_waits_longer = 0;

    if (!w->shared || w->shared->nslots < 2)
        return 0;
    now = mf_status_clock();
    for (int i = 0; i < w->shared->nslots; i++) {
        mf_worker_slot_t *s = &w->shared->slots[i];
        /* Only workers whose loop ticked lately: a stuck one cannot take connections. */
        if (s == w->slot || s->pid == 0 || now - s->heartbeat > 1.5)
            continue;
        if (s->conns < least)
            least = s->conns;
        if (s->conns == 0 && s->in_flight == 0 && s->last_accept < w->slot->last_accept)
            idle_waits_longer = 1;
    }
    if (least != UINT32_MAX && w->nconns > least + 1)
        return DEFER_LOAD;
    return idle_waits_longer ? DEFER_IDLE : 0;
}

/* A fair coin from a per-listener xorshift generator. */
static int coin(mf_listener_t *ls)
{
    uint32_t x = ls->coin ? ls->coin : (uint32_t)getpid() * 2654435761u | 1u;

    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    ls->coin = x;
    return (int)(x >> 31);
}

static void pause_accepting(mf_listener_t *ls, long usec)
{
    struct timeval tv = {usec / 1000000, usec % 1000000};

    event_del(&ls->ev);
    evtimer_add(&ls->retry, &tv);
}

static void on_acceptable(evutil_socket_t lfd, short what, void *arg)
{
    mf_listener_t *ls = arg;
    mf_worker_t *w = ls->w;

    (void)what;
    switch (should_defer(w)) {
    case DEFER_LOAD: pause_accepting(ls, 2000); return;
    case DEFER_IDLE:
        /*
         * Half the time, and at most three times in a row (about 6 ms: the idle worker may
         * be in a long handler whose client left): connections opened one after another then
         * spread over the workers without falling into a fixed pattern, which strict turns
         * would (a health check's connection between two requests would always send the
         * requests to the same worker).
         */
        if (ls->idle_deferrals < 3 && coin(ls)) {
            ls->idle_deferrals++;
            pause_accepting(ls, 2000);
            return;
        }
        break;
    default: break;
    }
    ls->idle_deferrals = 0;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: accept would fail at once again; pause, don't spin. */
                mf_log_warn("accept failed: %s; pausing accepts for 100 ms", strerror(errno));
                pause_accepting(ls, 100 * 1000);
            } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                       errno != ECONNABORTED) {
                mf_log_warn("accept failed: %s", strerror(errno));
            }
            return;
        }
        take(ls, fd, (struct sockaddr *)&ss);
        if (w->nconns >= w->cfg.max_conns) {
            /* Leave further connections in the backlog (or to another worker) for now. */
            w->accept_paused = 1;
            mf_listener_enable_all(w, 0);
            return;
        }
        if (should_defer(w))
            return;
    }
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    mf_listener_t *ls = arg;

    (void)fd;
    (void)what;
    if (!ls->w->accept_paused && !ls->w->stopping)
        event_add(&ls->ev, NULL);
}

int mf_listener_attach(mf_worker_t *w, int fd, int http, const char *allow, char *err,
                       size_t errlen)
{
    mf_listener_t *ls = calloc(1, sizeof *ls);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;

    if (!ls) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    ls->w = w;
    ls->fd = fd;
    ls->http = http;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        ls->is_tcp = ss.ss_family == AF_INET || ss.ss_family == AF_INET6;
    if (allow && !(ls->allow = strdup(allow))) {
        free(ls);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    event_assign(&ls->ev, w->base, fd, EV_READ | EV_PERSIST, on_acceptable, ls);
    evtimer_assign(&ls->retry, w->base, on_retry, ls);
    if (event_add(&ls->ev, NULL) < 0) {
        snprintf(err, errlen, "cannot accept on fd %d", fd);
        free(ls->allow);
        free(ls);
        return -1;
    }
    ls->next = w->listeners;
    w->listeners = ls;
    return 0;
}

void mf_listener_close_all(mf_worker_t *w)
{
    mf_listener_t *ls;

    while ((ls = w->listeners) != NULL) {
        w->listeners = ls->next;
        evtimer_del(&ls->retry);
        event_del(&ls->ev);
        close(ls->fd);
        free(ls->allow);
        free(ls);
    }
}

void mf_listener_enable_all(mf_worker_t *w, int on)
{
    for (mf_listener_t *ls = w->listeners; ls; ls = ls->next) {
        if (on) {
            event_add(&ls->ev, NULL);
        } else {
            event_del(&ls->ev);
            evtimer_del(&ls->retry);
        }
    }
}
