/*
 * Outbound sockets (socket.h). Each socket has at most one read and one write operation in
 * progress (a connect is a write operation); each has a deadline on the worker's clock and a
 * timer for it. Readiness callbacks only note what happened and wake Lua with the socket's
 * token: the reading and writing happen in the calls Lua makes, so data is never copied
 * twice and nothing runs for a socket whose thread is not waiting.
 *
 * The read buffer is one linear block (start..end) that grows up to what the read needs:
 * lines, patterns and sizes are found in place and handed to Lua as a pointer into it, which
 * Lua copies once with ffi.string before its next call.
 */
#include "socket.h"
#include "log.h"
#include "loop.h"
#include "resolver.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define READ_CHUNK   (64 * 1024)
#define UDP_MAX      65536
#define MAX_IOV      16
#define ERRMSG_LEN   320
#define KEEP_BUF_MAX (64 * 1024) /* a pooled connection keeps at most this much buffer */

enum { S_NONE, S_RESOLVING, S_CONNECTING, S_CONNECTED, S_PARKED, S_FAILED };

#define SYSTEM_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"

/*
 * A TLS session that Lua holds (sslhandshake's result) and that a later handshake may pass
 * back. With TLS 1.3 the server's tickets arrive after the handshake: while the connection
 * that made the holder lives, each new ticket replaces the session in it. refs: Lua's and
 * that connection's.
 */
struct mf_sock_session {
    SSL_SESSION *sess;
    int refs;
};

/*
 * How bytes move over the connected fd. Plain sockets use recv and writev; TLS (later)
 * supplies its own pair over the same fd. Both return what recv/writev return, with errno
 * EAGAIN when the fd is not ready.
 */
typedef struct mf_sock_transport {
    ssize_t (*read)(mf_sock_t *s, void *buf, size_t len);
    ssize_t (*writev)(mf_sock_t *s, const struct iovec *iov, int n);
    void (*close)(mf_sock_t *s); /* before the fd closes */
} mf_sock_transport_t;

struct mf_sock {
    mf_worker_t *w; /* NULL once the worker closed */
    struct mf_sock *prev, *next;
    int kind;
    int fd;
    int state;
    int counted; /* in w->nsocks */
    uint64_t token;
    const mf_sock_transport_t *tr;
    void *tr_ctx;

    struct event rev, wev; /* on fd, assigned when it opens */
    struct event rtimer, wtimer;
    int rop, wop;       /* an operation is in progress */
    int rtimed, wtimed; /* its deadline passed */
    int wready;         /* the fd reported writable (a connect completes) */
    double rdeadline, wdeadline;

    char *buf;
    size_t start, end, cap;
    size_t scanned; /* bytes after start searched without a match */
    int eof;
    int rerr; /* errno of a failed read */

    struct evbuffer *out;
    SSL *ssl;                  /* the TLS transport's state, or NULL */
    int handshaking;           /* an sslhandshake is in progress */
    short want;                /* what TLS waits for after an EAGAIN: EV_READ or EV_WRITE */
    mf_sock_session_t *holder; /* receives the session tickets of this connection */
    mf_resolve_t *resolve;
    int port;
    char errmsg[ERRMSG_LEN];
};

static ssize_t plain_read(mf_sock_t *s, void *buf, size_t len)
{
    return recv(s->fd, buf, len, 0);
}

static ssize_t plain_writev(mf_sock_t *s, const struct iovec *iov, int n)
{
    return writev(s->fd, iov, n);
}

static void plain_close(mf_sock_t *s)
{
    (void)s;
}

static const mf_sock_transport_t plain = {plain_read, plain_writev, plain_close};

static void session_unref(mf_sock_session_t *h)
{
    if (h && --h->refs == 0) {
        if (h->sess)
            SSL_SESSION_free(h->sess);
        free(h);
    }
}

/* OpenSSL's result as recv/writev's: -1 with errno EAGAIN when the fd is not ready. */
static ssize_t tls_result(mf_sock_t *s, int n)
{
    int e = SSL_get_error(s->ssl, n);

    switch (e) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        /* A read may need a write (a key update) and a write a read: see io_event. */
        s->want = e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE;
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN: return 0;
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        if (errno == 0 || errno == EAGAIN)
            return 0; /* the peer closed without close_notify */
        return -1;
    default:
        ERR_clear_error();
        errno = EPROTO;
        return -1;
    }
}

static ssize_t tls_read(mf_sock_t *s, void *buf, size_t len)
{
    int n;

    if (len > INT32_MAX)
        len = INT32_MAX;
    errno = 0;
    n = SSL_read(s->ssl, buf, (int)len);
    return n > 0 ? n : tls_result(s, n);
}

static ssize_t tls_writev(mf_sock_t *s, const struct iovec *iov, int niov)
{
    ssize_t total = 0;

    for (int i = 0; i < niov; i++) {
        size_t len = iov[i].iov_len > INT32_MAX ? INT32_MAX : iov[i].iov_len;
        int n;
        errno = 0;
        n = SSL_write(s->ssl, iov[i].iov_base, (int)len);
        if (n <= 0) {
            ssize_t r = tls_result(s, n);
            if (total > 0)
                return total;
            return r == 0 ? (errno = EPIPE, -1) : r;
        }
        total += n;
        if ((size_t)n < iov[i].iov_len)
            break;
    }
    return total;
}

static void tls_close(mf_sock_t *s)
{
    if (s->ssl) {
        SSL_shutdown(s->ssl); /* one try: close_notify if the fd takes it now */
        SSL_free(s->ssl);
        s->ssl = NULL;
        ERR_clear_error();
    }
    session_unref(s->holder);
    s->holder = NULL;
    s->handshaking = 0;
}

static const mf_sock_transport_t tls = {tls_read, tls_writev, tls_close};

static void set_error(mf_sock_t *s, const char *msg)
{
    snprintf(s->errmsg, sizeof s->errmsg, "%s", msg);
}

/* strerror's text in lower case, as OpenResty reports it ("connection refused"). */
static void set_errno(mf_sock_t *s, int e)
{
    size_t i;

    set_error(s, strerror(e));
    for (i = 0; s->errmsg[i]; i++)
        s->errmsg[i] = (char)tolower((unsigned char)s->errmsg[i]);
}

static void wake(mf_sock_t *s)
{
    if (s->w)
        mf__worker_event(s->w, MF_EV_WAKE_TOKEN, s->token);
}

static struct timeval to_tv(double seconds)
{
    struct timeval tv;

    if (!(seconds > 0))
        seconds = 0;
    if (seconds > 1e8)
        seconds = 1e8;
    tv.tv_sec = (time_t)seconds;
    tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
    return tv;
}

static int is_open(const mf_sock_t *s)
{
    return s->state == S_RESOLVING || s->state == S_CONNECTING || s->state == S_CONNECTED ||
           s->state == S_PARKED;
}

/* Ends the connection: fd, events, look-up. The buffer's memory stays (a partial result may
 * point into it until Lua copied it); an operation in progress is woken to see "closed". */
static void close_fd(mf_sock_t *s)
{
    int busy = s->rop || s->wop;

    if (s->resolve) {
        mf_resolver_cancel(s->resolve);
        s->resolve = NULL;
    }
    if (s->w) {
        evtimer_del(&s->rtimer);
        evtimer_del(&s->wtimer);
    }
    if (s->fd >= 0) {
        if (s->w) {
            event_del(&s->rev);
            event_del(&s->wev);
        }
        if (s->tr)
            s->tr->close(s);
        close(s->fd);
        s->fd = -1;
    }
    if (s->counted && s->w) {
        s->w->nsocks--;
        s->counted = 0;
    }
    s->tr = NULL;
    s->state = S_NONE;
    s->rop = s->wop = s->rtimed = s->wtimed = s->wready = 0;
    s->start = s->end = s->scanned = 0;
    s->eof = s->rerr = 0;
    if (s->out)
        evbuffer_drain(s->out, evbuffer_get_length(s->out));
    if (busy)
        wake(s);
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
    mf_sock_t *s = arg;

    (void)fd;
    if (s->state == S_PARKED) {
        /* An idle pooled connection that speaks or ends is of no use to anyone. */
        close_fd(s);
        return;
    }
    if (what & EV_WRITE)
        s->wready = 1;
    wake(s);
}

static void on_rtimer(evutil_socket_t fd, short what, void *arg)
{
    mf_sock_t *s = arg;

    (void)fd;
    (void)what;
    if (s->state == S_PARKED) {
        close_fd(s); /* outlived its idle time */
        return;
    }
    s->rtimed = 1;
    wake(s);
}

static void on_wtimer(evutil_socket_t fd, short what, void *arg)
{
    mf_sock_t *s = arg;

    (void)fd;
    (void)what;
    s->wtimed = 1;
    wake(s);
}

mf_sock_t *mf_ffi_sock_new(mf_worker_t *w, int kind, uint64_t token)
{
    mf_sock_t *s;

    if (!w || (kind != MF_SOCK_TCP && kind != MF_SOCK_UDP))
        return NULL;
    if (!(s = calloc(1, sizeof *s)))
        return NULL;
    if (!(s->out = evbuffer_new())) {
        free(s);
        return NULL;
    }
    s->w = w;
    s->kind = kind;
    s->fd = -1;
    s->token = token;
    evtimer_assign(&s->rtimer, w->base, on_rtimer, s);
    evtimer_assign(&s->wtimer, w->base, on_wtimer, s);
    s->next = w->socks;
    if (w->socks)
        w->socks->prev = s;
    w->socks = s;
    return s;
}

static void unlink_sock(mf_sock_t *s)
{
    if (!s->w)
        return;
    if (s->prev)
        s->prev->next = s->next;
    else
        s->w->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

void mf_ffi_sock_free(mf_sock_t *s)
{
    if (!s)
        return;
    close_fd(s);
    unlink_sock(s);
    evbuffer_free(s->out);
    free(s->buf);
    free(s);
}

void mf_socket_close_all(mf_worker_t *w)
{
    while (w->socks) {
        mf_sock_t *s = w->socks;
        close_fd(s);
        unlink_sock(s);
        s->w = NULL;
    }
    if (w->ssl_ctx) {
        SSL_CTX_free(w->ssl_ctx);
        w->ssl_ctx = NULL;
    }
}

int mf_ffi_sock_close(mf_sock_t *s)
{
    if (!is_open(s)) {
        set_error(s, "closed");
        return MF_SOCK_CLOSED;
    }
    close_fd(s);
    return MF_SOCK_OK;
}

int mf_ffi_sock_is_open(mf_sock_t *s)
{
    return is_open(s);
}

const char *mf_ffi_sock_errmsg(mf_sock_t *s)
{
    return s->errmsg;
}

void mf_ffi_sock_wake(mf_sock_t *s)
{
    wake(s);
}

int mf_ffi_sock_configure(mf_worker_t *w, int max_sockets, double timeout, size_t buffer)
{
    if (max_sockets > 0)
        w->cfg.max_sockets = (unsigned)max_sockets;
    if (timeout > 0)
        w->cfg.socket_timeout = timeout;
    if (buffer > 0)
        w->cfg.socket_buffer = buffer;
    return 0;
}

double mf_ffi_sock_default_timeout(mf_worker_t *w)
{
    return w->cfg.socket_timeout;
}

unsigned mf_ffi_sock_count(mf_worker_t *w)
{
    return w->nsocks;
}

static double now(mf_sock_t *s)
{
    return mf_worker_now(s->w);
}

static double or_default(mf_sock_t *s, double timeout)
{
    return timeout > 0 ? timeout : s->w->cfg.socket_timeout;
}

/* Waits for fd readiness (ev) and the operation's deadline; MF_SOCK_WAIT. */
static int arm(mf_sock_t *s, struct event *ev, struct event *timer, double deadline)
{
    if (ev && !event_pending(ev, EV_READ | EV_WRITE, NULL))
        event_add(ev, NULL);
    if (!evtimer_pending(timer, NULL)) {
        struct timeval tv = to_tv(deadline - now(s));
        evtimer_add(timer, &tv);
    }
    return MF_SOCK_WAIT;
}

/* The fd event an operation waits for: its own, unless TLS asked for the other one. */
static struct event *io_event(mf_sock_t *s, struct event *own)
{
    if (s->want == EV_WRITE)
        return &s->wev;
    if (s->want == EV_READ)
        return &s->rev;
    return own;
}

static void end_read(mf_sock_t *s)
{
    s->rop = 0;
    s->rtimed = 0;
    if (s->w)
        evtimer_del(&s->rtimer);
}

static void end_write(mf_sock_t *s)
{
    s->wop = 0;
    s->wtimed = 0;
    if (s->w)
        evtimer_del(&s->wtimer);
}

/* A fatal error of an operation: the connection closes, errmsg says why. */
static int fail(mf_sock_t *s, int rc)
{
    close_fd(s);
    return rc;
}

/* Connect --------------------------------------------------------------------------------- */

static int start_connect(mf_sock_t *s, const struct sockaddr *sa, socklen_t len)
{
    int type = s->kind == MF_SOCK_UDP ? SOCK_DGRAM : SOCK_STREAM;
    int fd;

    if (s->w->nsocks >= s->w->cfg.max_sockets) {
        set_error(s, "too many sockets");
        s->state = S_FAILED;
        return MF_SOCK_ERROR;
    }
    fd = socket(sa->sa_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        set_errno(s, errno);
        s->state = S_FAILED;
        return MF_SOCK_ERROR;
    }
    s->fd = fd;
    s->tr = &plain;
    s->counted = 1;
    s->w->nsocks++;
    event_assign(&s->rev, s->w->base, fd, EV_READ, on_io, s);
    event_assign(&s->wev, s->w->base, fd, EV_WRITE, on_io, s);
    if (connect(fd, sa, len) == 0) {
        s->state = S_CONNECTED;
        return MF_SOCK_OK;
    }
    if (errno == EINPROGRESS) {
        s->state = S_CONNECTING;
        event_add(&s->wev, NULL);
        return MF_SOCK_WAIT;
    }
    set_errno(s, errno);
    close_fd(s);
    s->state = S_FAILED;
    return MF_SOCK_ERROR;
}

static void on_resolved(int err, const struct sockaddr_storage *addrs, int naddrs,
                        const char *errmsg, void *arg)
{
    mf_sock_t *s = arg;
    struct sockaddr_storage ss;

    s->resolve = NULL;
    if (err || naddrs < 1) {
        set_error(s, errmsg ? errmsg : "could not be resolved");
        s->state = S_FAILED;
        wake(s);
        return;
    }
    /* One of the addresses at random (cosocket.md section 4). */
    ss = addrs[naddrs > 1 ? rand() % naddrs : 0];
    if (ss.ss_family == AF_INET)
        ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)s->port);
    else
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)s->port);
    start_connect(s, (struct sockaddr *)&ss,
                  ss.ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                          : sizeof(struct sockaddr_in6));
    wake(s);
}

/* An IP literal (v6 with or without brackets) into ss; 0 when host is not one. */
static int parse_literal(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len)
{
    char buf[64];
    size_t n = strlen(host);

    memset(ss, 0, sizeof *ss);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof buf) {
        memcpy(buf, host + 1, n - 2);
        buf[n - 2] = '\0';
        host = buf;
    }
    if (inet_pton(AF_INET, host, &((struct sockaddr_in *)ss)->sin_addr) == 1) {
        ((struct sockaddr_in *)ss)->sin_family = AF_INET;
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
        *len = sizeof(struct sockaddr_in);
        return 1;
    }
    if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1) {
        ((struct sockaddr_in6 *)ss)->sin6_family = AF_INET6;
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
        *len = sizeof(struct sockaddr_in6);
        return 1;
    }
    return 0;
}

int mf_ffi_sock_connect(mf_sock_t *s, const char *host, int port, double timeout)
{
    struct sockaddr_storage ss;
    socklen_t len;
    const char *errmsg = NULL;
    int rc;

    if (!s->w) {
        set_error(s, "closed");
        return MF_SOCK_CLOSED;
    }
    if (is_open(s))
        close_fd(s);
    s->errmsg[0] = '\0';
    s->wop = 1;
    s->wtimed = 0;
    s->wdeadline = now(s) + or_default(s, timeout);
    if (strncmp(host, "unix:", 5) == 0) {
        struct sockaddr_un *sun = (struct sockaddr_un *)&ss;
        size_t n = strlen(host + 5);
        if (n == 0 || n >= sizeof sun->sun_path) {
            set_error(s, n == 0 ? "no such file or directory" : "file name too long");
            end_write(s);
            return MF_SOCK_ERROR;
        }
        memset(sun, 0, sizeof *sun);
        sun->sun_family = AF_UNIX;
        memcpy(sun->sun_path, host + 5, n);
        rc = start_connect(s, (struct sockaddr *)sun, sizeof *sun);
    } else if (parse_literal(host, port, &ss, &len)) {
        rc = start_connect(s, (struct sockaddr *)&ss, len);
    } else {
        s->port = port;
        s->state = S_RESOLVING;
        s->resolve = mf_resolver_lookup(s->w, host, on_resolved, s, &errmsg);
        if (!s->resolve) {
            set_error(s, errmsg ? errmsg : "the resolver failed");
            s->state = S_FAILED;
            rc = MF_SOCK_ERROR;
        } else {
            rc = MF_SOCK_WAIT;
        }
    }
    if (rc == MF_SOCK_WAIT)
        return arm(s, NULL, &s->wtimer, s->wdeadline);
    end_write(s);
    if (rc != MF_SOCK_OK)
        s->state = S_NONE;
    return rc;
}

int mf_ffi_sock_connecting(mf_sock_t *s)
{
    int err = 0;
    socklen_t len = sizeof err;

    switch (s->state) {
    case S_CONNECTED: end_write(s); return MF_SOCK_OK;
    case S_FAILED:
        end_write(s);
        s->state = S_NONE;
        return MF_SOCK_ERROR;
    case S_RESOLVING:
    case S_CONNECTING: break;
    default: set_error(s, "closed"); return MF_SOCK_CLOSED;
    }
    if (s->wtimed) {
        set_error(s, "timeout");
        return fail(s, MF_SOCK_TIMEOUT);
    }
    if (s->state == S_RESOLVING || !s->wready)
        return arm(s, s->state == S_CONNECTING ? &s->wev : NULL, &s->wtimer, s->wdeadline);
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err) {
        set_errno(s, err);
        return fail(s, MF_SOCK_ERROR);
    }
    s->state = S_CONNECTED;
    end_write(s);
    return MF_SOCK_OK;
}

/* A pause without I/O (a connect queued behind a full pool): MF_SOCK_WAIT until Lua wakes it
 * (mf_ffi_sock_wake) or the timeout passes (MF_SOCK_TIMEOUT); timeout < 0 ends the pause. */
int mf_ffi_sock_pause(mf_sock_t *s, double timeout)
{
    if (!s->w) {
        set_error(s, "closed");
        return MF_SOCK_CLOSED;
    }
    if (timeout < 0) {
        end_write(s);
        return MF_SOCK_OK;
    }
    if (!s->wop) {
        s->wop = 1;
        s->wtimed = 0;
        s->wdeadline = now(s) + or_default(s, timeout);
    }
    if (s->wtimed) {
        end_write(s);
        set_error(s, "timeout");
        return MF_SOCK_TIMEOUT;
    }
    return arm(s, NULL, &s->wtimer, s->wdeadline);
}

/* Send ------------------------------------------------------------------------------------ */

int mf_ffi_sock_send_add(mf_sock_t *s, const char *p, size_t len)
{
    if (s->state != S_CONNECTED) {
        set_error(s, "closed");
        return MF_SOCK_CLOSED;
    }
    if (evbuffer_add(s->out, p, len) < 0) {
        set_error(s, "out of memory");
        return fail(s, MF_SOCK_ERROR);
    }
    return MF_SOCK_OK;
}

static int send_udp(mf_sock_t *s)
{
    size_t len = evbuffer_get_length(s->out);
    unsigned char *p = evbuffer_pullup(s->out, -1);
    ssize_t n = send(s->fd, p, len, 0);

    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return MF_SOCK_WAIT;
        set_errno(s, errno);
        evbuffer_drain(s->out, len);
        return MF_SOCK_ERROR;
    }
    evbuffer_drain(s->out, len);
    return MF_SOCK_OK;
}

int mf_ffi_sock_send(mf_sock_t *s, double timeout)
{
    if (s->state != S_CONNECTED) {
        set_error(s, "closed");
        return MF_SOCK_CLOSED;
    }
    if (!s->wop) {
        s->wop = 1;
        s->wtimed = 0;
        s->wdeadline = now(s) + or_default(s, timeout);
    }
    for (;;) {
        struct evbuffer_iovec vec[MAX_IOV];
        struct iovec iov[MAX_IOV];
        int n, i;
        ssize_t wrote;

        if (evbuffer_get_length(s->out) == 0) {
            end_write(s);
            return MF_SOCK_OK;
        }
        if (s->wtimed) {
            set_error(s, "timeout");
            return fail(s, MF_SOCK_TIMEOUT);
        }
        if (s->kind == MF_SOCK_UDP) {
            int rc = send_udp(s);
            if (rc == MF_SOCK_WAIT)
                return arm(s, &s->wev, &s->wtimer, s->wdeadline);
            if (rc != MF_SOCK_OK)
                return fail(s, rc);
            continue;
        }
        n = evbuffer_peek(s->out, -1, NULL, vec, MAX_IOV);
        if (n > MAX_IOV)
            n = MAX_IOV;
        for (i = 0; i < n; i++) {
            iov[i].iov_base = vec[i].iov_base;
            iov[i].iov_len = vec[i].iov_len;
        }
        s->want = 0;
        wrote = s->tr->writev(s, iov, n);
        if (wrote < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return arm(s, io_event(s, &s->wev), &s->wtimer, s->wdeadline);
            set_errno(s, errno);
            return fail(s, MF_SOCK_ERROR);
        }
        evbuffer_drain(s->out, (size_t)wrote);
    }
}

/* Receive --------------------------------------------------------------------------------- */

/* Room for at least `need` more bytes after end (moves the data to the front first). */
static int reserve(mf_sock_t *s, size_t need)
{
    size_t avail = s->end - s->start;

    if (s->cap - s->end >= need)
        return 0;
    if (s->start > 0) {
        memmove(s->buf, s->buf + s->start, avail);
        s->start = 0;
        s->end = avail;
        if (s->cap - s->end >= need)
            return 0;
    }
    {
        size_t cap = s->cap ? s->cap : 4096;
        char *b;
        while (cap - avail < need)
            cap *= 2;
        if (!(b = realloc(s->buf, cap)))
            return -1;
        s->buf = b;
        s->cap = cap;
    }
    return 0;
}

/*
 * Reads what the fd has into the buffer, at most `want` bytes (at least one chunk's room).
 * 1: got data (or EOF/error noted in s->eof/s->rerr); 0: nothing now (EAGAIN).
 */
static int fill(mf_sock_t *s, size_t want)
{
    ssize_t n;

    if (want < 4096)
        want = 4096;
    if (want > READ_CHUNK)
        want = READ_CHUNK;
    if (reserve(s, want) < 0) {
        s->rerr = ENOMEM;
        return 1;
    }
    for (;;) {
        s->want = 0;
        n = s->tr->read(s, s->buf + s->end, s->cap - s->end);
        if (n > 0) {
            s->end += (size_t)n;
            return 1;
        }
        if (n == 0) {
            s->eof = 1;
            return 1;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        s->rerr = errno;
        return 1;
    }
}

/* Hands n bytes at the buffer's start to Lua and consumes them. */
static void take(mf_sock_t *s, size_t n, const char **p, size_t *len)
{
    *p = s->buf ? s->buf + s->start : "";
    *len = n;
    s->start += n;
    s->scanned = 0;
    if (s->start == s->end)
        s->start = s->end = 0; /* the pointer stays valid: nothing is written before Lua copies */
}

/* The end of a read that did not complete: everything buffered is the partial result. */
static int read_failed(mf_sock_t *s, const char **p, size_t *len)
{
    int rc;

    take(s, s->end - s->start, p, len);
    if (s->rtimed) {
        set_error(s, "timeout");
        end_read(s);
        return MF_SOCK_TIMEOUT; /* not fatal */
    }
    if (s->rerr) {
        set_errno(s, s->rerr);
        rc = MF_SOCK_ERROR;
    } else {
        set_error(s, "closed");
        rc = MF_SOCK_CLOSED;
    }
    end_read(s);
    return fail(s, rc);
}

static int too_large(mf_sock_t *s, const char **p, size_t *len)
{
    set_error(s, "buffer too large");
    take(s, s->end - s->start, p, len);
    end_read(s);
    return fail(s, MF_SOCK_TOO_LARGE);
}

static int receive_udp(mf_sock_t *s, size_t size, const char **p, size_t *len)
{
    ssize_t n;

    if (reserve(s, UDP_MAX) < 0) {
        set_error(s, "out of memory");
        return MF_SOCK_ERROR;
    }
    s->start = s->end = 0;
    for (;;) {
        n = recv(s->fd, s->buf, UDP_MAX, 0);
        if (n >= 0)
            break;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (s->rtimed) {
                set_error(s, "timeout");
                end_read(s);
                *p = "";
                *len = 0;
                return MF_SOCK_TIMEOUT;
            }
            return arm(s, &s->rev, &s->rtimer, s->rdeadline);
        }
        set_errno(s, errno);
        end_read(s);
        *p = "";
        *len = 0;
        return fail(s, MF_SOCK_ERROR);
    }
    *p = s->buf;
    *len = (size_t)n < size ? (size_t)n : size;
    end_read(s);
    return MF_SOCK_OK;
}

static void begin_read(mf_sock_t *s, double timeout)
{
    if (!s->rop) {
        s->rop = 1;
        s->rtimed = 0;
        s->rdeadline = now(s) + or_default(s, timeout);
    }
}

int mf_ffi_sock_receive(mf_sock_t *s, int mode, size_t size, double timeout, const char **p,
                        size_t *len)
{
    size_t limit;

    *p = "";
    *len = 0;
    if (s->state != S_CONNECTED) {
        set_error(s, "closed");
        return MF_SOCK_CLOSED;
    }
    begin_read(s, timeout);
    if (s->kind == MF_SOCK_UDP)
        return receive_udp(s, size, p, len);
    limit = s->w->cfg.socket_buffer;
    for (;;) {
        size_t avail = s->end - s->start;
        size_t want = READ_CHUNK;

        switch (mode) {
        case MF_SOCK_READ_LINE: {
            char *b = s->buf ? s->buf + s->start : NULL, *lf;
            lf = b && avail > s->scanned ? memchr(b + s->scanned, '\n', avail - s->scanned) : NULL;
            if (lf) {
                /* The line without its LF, and without any CR in it. */
                size_t n = (size_t)(lf - b), j = 0;
                for (size_t i = 0; i < n; i++)
                    if (b[i] != '\r')
                        b[j++] = b[i];
                take(s, n + 1, p, len);
                *len = j;
                end_read(s);
                return MF_SOCK_OK;
            }
            s->scanned = avail;
            if (avail >= limit)
                return too_large(s, p, len);
            break;
        }
        case MF_SOCK_READ_SIZE:
            if (avail >= size) {
                take(s, size, p, len);
                end_read(s);
                return MF_SOCK_OK;
            }
            want = size - avail;
            break;
        case MF_SOCK_READ_ANY:
            if (avail > 0) {
                take(s, avail < size ? avail : size, p, len);
                end_read(s);
                return MF_SOCK_OK;
            }
            want = size;
            break;
        default: /* MF_SOCK_READ_ALL */
            if (s->eof) {
                take(s, avail, p, len);
                end_read(s);
                /* The peer closed: so is the socket now, once its data is read. */
                close_fd(s);
                return MF_SOCK_OK;
            }
            if (avail >= limit)
                return too_large(s, p, len);
            break;
        }
        if (s->eof || s->rerr || s->rtimed)
            return read_failed(s, p, len);
        if (!fill(s, want))
            return arm(s, io_event(s, &s->rev), &s->rtimer, s->rdeadline);
    }
}

static char *find(const char *hay, size_t n, const char *pat, size_t m)
{
    return memmem(hay, n, pat, m);
}

/*
 * receiveuntil: *found = 1 once the pattern was consumed. Without size, the data before the
 * pattern (and the pattern when inclusive). With size, chunks of at most size bytes before
 * the pattern; at the pattern itself *found = 1 with the pattern as data when inclusive, else
 * nothing.
 */
int mf_ffi_sock_receive_until(mf_sock_t *s, const char *pat, size_t patlen, size_t size,
                              int inclusive, double timeout, const char **p, size_t *len,
                              int *found)
{
    size_t limit;

    *p = "";
    *len = 0;
    *found = 0;
    if (s->state != S_CONNECTED || s->kind != MF_SOCK_TCP) {
        set_error(s, "closed");
        return MF_SOCK_CLOSED;
    }
    begin_read(s, timeout);
    limit = s->w->cfg.socket_buffer;
    for (;;) {
        size_t avail = s->end - s->start, from = s->scanned;
        char *b = s->buf ? s->buf + s->start : NULL, *hit = NULL;

        /* Resume where the last search stopped, less a possible start of the pattern. */
        if (b && avail >= patlen && from <= avail - patlen)
            hit = find(b + from, avail - from, pat, patlen);
        if (hit) {
            size_t i = (size_t)(hit - b);
            if (size == 0) {
                take(s, i + patlen, p, len);
                *len = inclusive ? i + patlen : i;
                *found = 1;
            } else if (i > 0) {
                take(s, i < size ? i : size, p, len);
            } else {
                take(s, patlen, p, len);
                if (!inclusive)
                    *len = 0;
                *found = 1;
            }
            end_read(s);
            return MF_SOCK_OK;
        }
        s->scanned = avail >= patlen ? avail - patlen + 1 : 0;
        if (size > 0 && s->scanned >= size) {
            take(s, size, p, len);
            end_read(s);
            return MF_SOCK_OK;
        }
        if (size == 0 && avail >= limit)
            return too_large(s, p, len);
        if (s->eof || s->rerr || s->rtimed)
            return read_failed(s, p, len);
        if (!fill(s, READ_CHUNK))
            return arm(s, io_event(s, &s->rev), &s->rtimer, s->rdeadline);
    }
}

/* TLS ------------------------------------------------------------------------------------- */

static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    mf_sock_t *s = SSL_get_app_data(ssl);

    if (!s || !s->holder)
        return 0;
    if (s->holder->sess)
        SSL_SESSION_free(s->holder->sess);
    s->holder->sess = sess;
    return 1; /* the holder keeps the reference */
}

static SSL_CTX *make_ctx(const char *ca_file, int required)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    if (!ctx)
        return NULL;
    /* A missing system bundle is not fatal: verification then fails with its own reason. */
    if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1 && required) {
        SSL_CTX_free(ctx);
        ERR_clear_error();
        return NULL;
    }
    ERR_clear_error();
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL); /* checked after the handshake */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    return ctx;
}

int mf_ffi_sock_set_trusted(mf_worker_t *w, const char *path)
{
    SSL_CTX *ctx = make_ctx(path, 1);

    if (!ctx)
        return -1;
    if (w->ssl_ctx)
        SSL_CTX_free(w->ssl_ctx);
    w->ssl_ctx = ctx;
    return 0;
}

static SSL_CTX *client_ctx(mf_worker_t *w)
{
    if (!w->ssl_ctx) {
        const char *file = w->cfg.ssl_trusted ? w->cfg.ssl_trusted : SYSTEM_CA_BUNDLE;
        w->ssl_ctx = make_ctx(file, w->cfg.ssl_trusted != NULL);
        if (!w->ssl_ctx)
            mf_log_error("cannot load the trusted certificates of %s", file);
    }
    return w->ssl_ctx;
}

static int is_ip(const char *name)
{
    unsigned char buf[16];

    return inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
}

/* After the handshake: the chain, then the name (cosocket.md's error texts). */
static int verify_peer(mf_sock_t *s, const char *server_name)
{
    long v = SSL_get_verify_result(s->ssl);
    X509 *cert;
    int ok = 1;

    if (v != X509_V_OK) {
        snprintf(s->errmsg, sizeof s->errmsg, "%ld: %s", v, X509_verify_cert_error_string(v));
        return -1;
    }
    if (!(cert = SSL_get1_peer_certificate(s->ssl))) {
        set_error(s, "handshake failed");
        return -1;
    }
    if (server_name && *server_name)
        ok = is_ip(server_name) ? X509_check_ip_asc(cert, server_name, 0) == 1
                                : X509_check_host(cert, server_name, 0, 0, NULL) == 1;
    X509_free(cert);
    if (!ok) {
        set_error(s, "certificate host mismatch");
        return -1;
    }
    return 0;
}

static mf_sock_session_t *give_session(mf_sock_t *s)
{
    mf_sock_session_t *h = s->holder;

    if (!h) {
        if (!(h = calloc(1, sizeof *h)))
            return NULL;
        h->refs = 1;
        s->holder = h;
    }
    if (!h->sess)
        h->sess = SSL_get1_session(s->ssl);
    h->refs++;
    return h;
}

int mf_ffi_sock_sslhandshake(mf_sock_t *s, mf_sock_session_t *reuse, const char *server_name,
                             int verify, int want_session, double timeout,
                             mf_sock_session_t **session)
{
    int n;

    *session = NULL;
    if (s->state != S_CONNECTED || s->kind != MF_SOCK_TCP) {
        set_error(s, "closed");
        return MF_SOCK_CLOSED;
    }
    if (s->ssl && !s->handshaking) {
        /* Already TLS (a pooled connection): success at once. */
        if (want_session && !(*session = give_session(s))) {
            set_error(s, "out of memory");
            return MF_SOCK_ERROR;
        }
        return MF_SOCK_OK;
    }
    if (!s->handshaking) {
        SSL_CTX *ctx = client_ctx(s->w);
        if (!ctx || !(s->ssl = SSL_new(ctx))) {
            set_error(s, "handshake failed");
            ERR_clear_error();
            return fail(s, MF_SOCK_ERROR);
        }
        SSL_set_fd(s->ssl, s->fd);
        SSL_set_app_data(s->ssl, s);
        if (server_name && *server_name && !is_ip(server_name))
            SSL_set_tlsext_host_name(s->ssl, server_name);
        if (reuse && reuse->sess)
            SSL_set_session(s->ssl, reuse->sess);
        if (want_session && (s->holder = calloc(1, sizeof *s->holder)) != NULL)
            s->holder->refs = 1;
        s->tr = &tls;
        s->handshaking = 1;
        s->wop = 1;
        s->wtimed = 0;
        s->wdeadline = now(s) + or_default(s, timeout);
    }
    if (s->wtimed) {
        set_error(s, "timeout");
        return fail(s, MF_SOCK_TIMEOUT);
    }
    ERR_clear_error();
    n = SSL_connect(s->ssl);
    if (n == 1) {
        s->handshaking = 0;
        end_write(s);
        if (verify && verify_peer(s, server_name) < 0)
            return fail(s, MF_SOCK_ERROR);
        if (want_session && !(*session = give_session(s))) {
            set_error(s, "out of memory");
            return fail(s, MF_SOCK_ERROR);
        }
        return MF_SOCK_OK;
    }
    switch (SSL_get_error(s->ssl, n)) {
    case SSL_ERROR_WANT_READ: return arm(s, &s->rev, &s->wtimer, s->wdeadline);
    case SSL_ERROR_WANT_WRITE: return arm(s, &s->wev, &s->wtimer, s->wdeadline);
    default:
        ERR_clear_error();
        set_error(s, "handshake failed");
        return fail(s, MF_SOCK_ERROR);
    }
}

int mf_ffi_sock_ssl_reused(mf_sock_t *s)
{
    return s->ssl ? SSL_session_reused(s->ssl) : 0;
}

void mf_ffi_sock_session_free(mf_sock_session_t *sess)
{
    session_unref(sess);
}

/* Options and the pool -------------------------------------------------------------------- */

int mf_ffi_sock_setoption(mf_sock_t *s, const char *name, int value)
{
    int level = SOL_SOCKET, opt;

    if (s->state != S_CONNECTED) {
        set_error(s, "closed");
        return MF_SOCK_CLOSED;
    }
    if (strcmp(name, "keepalive") == 0)
        opt = SO_KEEPALIVE;
    else if (strcmp(name, "reuseaddr") == 0)
        opt = SO_REUSEADDR;
    else if (strcmp(name, "tcp-nodelay") == 0)
        level = IPPROTO_TCP, opt = TCP_NODELAY;
    else if (strcmp(name, "sndbuf") == 0)
        opt = SO_SNDBUF;
    else if (strcmp(name, "rcvbuf") == 0)
        opt = SO_RCVBUF;
    else {
        snprintf(s->errmsg, sizeof s->errmsg, "unsupported option \"%s\"", name);
        return MF_SOCK_ERROR;
    }
    if (setsockopt(s->fd, level, opt, &value, sizeof value) < 0) {
        set_errno(s, errno);
        return MF_SOCK_ERROR;
    }
    return MF_SOCK_OK;
}

/*
 * Whether the connection may go to the pool: 0 yes, 1 unread data in the buffer (it stays
 * open), 2 the peer already sent something or closed (it is closed now), MF_SOCK_CLOSED.
 */
int mf_ffi_sock_keepalive_check(mf_sock_t *s)
{
    char c;
    ssize_t n;

    if (s->state != S_CONNECTED) {
        set_error(s, "closed");
        return MF_SOCK_CLOSED;
    }
    if (s->end > s->start)
        return 1;
    if (s->ssl && (s->handshaking || SSL_pending(s->ssl) > 0)) {
        close_fd(s);
        return 2;
    }
    n = recv(s->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && evbuffer_get_length(s->out) == 0)
        return 0;
    close_fd(s);
    return 2;
}

int mf_ffi_sock_park(mf_sock_t *s, double idle)
{
    if (s->state != S_CONNECTED) {
        set_error(s, "closed");
        return MF_SOCK_CLOSED;
    }
    end_read(s);
    end_write(s);
    event_del(&s->wev);
    s->state = S_PARKED;
    s->start = s->end = s->scanned = 0;
    if (s->cap > KEEP_BUF_MAX) {
        free(s->buf);
        s->buf = NULL;
        s->cap = 0;
    }
    event_add(&s->rev, NULL);
    if (idle > 0) {
        struct timeval tv = to_tv(idle);
        evtimer_add(&s->rtimer, &tv);
    }
    return MF_SOCK_OK;
}

int mf_ffi_sock_unpark(mf_sock_t *s)
{
    if (s->state != S_PARKED) {
        set_error(s, "closed");
        return MF_SOCK_CLOSED;
    }
    event_del(&s->rev);
    evtimer_del(&s->rtimer);
    s->state = S_CONNECTED;
    return MF_SOCK_OK;
}
