/*
 * mf-bench: a FastCGI load generator, the web server's side of a benchmark.
 *
 * Lean by design so that one core can saturate a fast application: every request is encoded
 * once at start-up (one template per request id) and sent from those bytes with writev; the
 * responses are checked by a byte-level state machine straight out of one per-thread read
 * buffer, so nothing of a response is copied or kept. Each thread owns an epoll instance and
 * its share of the connections; the threads only meet in the shared request budget (-n) and
 * when their statistics are merged at the end.
 */
#include "netaddr.h"
#include "wire.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS   100000
#define MAX_THREADS 64
/* Bounds the iovec array of one writev: one entry per queued request id. */
#define MAX_MPX    1024
#define MAX_PARAMS 64
#define READ_BUF   (256 * 1024)
/* The housekeeping period: reconnects, slow-read refills, timeouts, the deadline. */
#define TICK_NS 10000000ull
/* Without -d, a run bounded by -n still ends after this long whatever the server does. */
#define DEFAULT_CAP_S 120.0

/*
 * Latency histogram, log-linear like HdrHistogram: values below 128 ns have their own bucket,
 * above that each power of two is split into 64 buckets, so a reported percentile is within
 * 1.6% of the true sample.
 */
#define HIST_SUB     64
#define HIST_BUCKETS (59 * HIST_SUB)

struct param {
    const char *name;
    const char *value;
};

static struct options {
    mf_netaddr_t addr;
    const char *addr_spec;
    int conns;
    int threads;
    int mpx;
    double duration;
    uint64_t requests;
    bool keep_conn;
    size_t body;
    const char *uri;
    const char *method;
    const char *docroot;
    int role;
    bool minimal_params;
    bool strict;
    double slow_read;
    int rcvbuf;
    int expect_status;
    long long expect_body;
    double timeout;
    struct param extra[MAX_PARAMS];
    int nextra;
} opt = {
    .conns = 50,
    .threads = 1,
    .mpx = 1,
    .keep_conn = true,
    .uri = "/",
    .docroot = "/var/www/html",
    .role = MF_WIRE_RESPONDER,
    .expect_status = 200,
    .expect_body = -1,
    .timeout = 10.0,
};

/* One request encoded once: BEGIN_REQUEST, PARAMS, empty PARAMS, STDIN..., empty STDIN. */
struct tpl {
    uint8_t *buf;
    size_t len;
};

static struct tpl *tpls; /* index id - 1 */
static atomic_uint_fast64_t issued;
static volatile sig_atomic_t interrupted;

enum err_kind {
    ERR_STATUS,  /* the CGI Status was not the expected one */
    ERR_RECORD,  /* a record of the wrong version, type or id, or out of order */
    ERR_END,     /* END_REQUEST with a non-zero protocol or app status, or malformed */
    ERR_BODY,    /* the body length differed from --expect-body-bytes */
    ERR_LOST,    /* in flight on a connection that died */
    ERR_TIMEOUT, /* no END_REQUEST within --timeout */
    ERR_CONNECT, /* connect failed or timed out */
    ERR_KINDS,
};

static const char *const err_names[ERR_KINDS] = {
    "status", "record", "end_request", "body", "lost", "timeout", "connect",
};

struct stats {
    uint64_t requests; /* END_REQUEST received, well-formed or not */
    uint64_t errors[ERR_KINDS];
    uint64_t stdout_bytes;
    uint64_t stderr_bytes;
    uint64_t wire_bytes;
    uint64_t connects;
    uint64_t resets;       /* a reset after every response had arrived: not an error */
    uint64_t unterminated; /* END_REQUEST without the empty STDOUT record before it */
    uint64_t inflight_end;
    uint64_t oldest_end_ns; /* the age of the oldest request in flight at the end */
    uint64_t lat_max;
    uint64_t last_done_ns;
    uint64_t hist[HIST_BUCKETS];
};

enum hdr_state { HDR_LINES, HDR_DONE };

/* A request id on a connection and the response it is receiving. */
struct slot {
    uint64_t start_ns;
    uint64_t body_bytes;
    int status; /* -1 until a Status header is seen */
    uint16_t line_len;
    uint8_t busy;
    uint8_t queued; /* part of its request is still unsent */
    uint8_t reissue;
    uint8_t hdr_state;
    uint8_t stdout_closed;
    uint8_t bad;     /* an error for this request was already counted */
    uint8_t started; /* a record of its response has arrived */
    char line[24];
};

enum conn_state { C_IDLE, C_CONNECTING, C_OPEN, C_CLOSING, C_RETRY };

struct conn {
    struct worker *w;
    int fd;
    uint8_t state;
    uint8_t paused; /* slow read: out of tokens, EPOLLIN is off */
    uint8_t broken; /* a write failed: only the read side is left to drain */
    uint32_t events;
    uint32_t inflight;
    uint64_t since_ns; /* when the state began: connect and close timeouts */
    uint64_t retry_ns;
    uint32_t backoff_ms;
    double tokens;

    /* Ids whose template is (partly) unsent, oldest first; the head is sent from q_off. */
    uint16_t *q;
    uint32_t q_head;
    uint32_t q_len;
    size_t q_off;

    /* Where the response stream is: inside a header, content or padding. */
    uint8_t rh[MF_WIRE_HEADER_LEN];
    uint8_t rh_have;
    uint8_t rtype;
    uint16_t rid;
    uint32_t content_left;
    uint32_t pad_left;
    uint16_t content_len;
    uint8_t endbody[8];
    uint8_t end_have;

    struct slot *slots;
};

struct worker {
    pthread_t thread;
    int epfd;
    struct conn *conns;
    int nconns;
    uint32_t inflight;
    bool no_more; /* the -n budget is spent */
    uint64_t start_ns;
    uint64_t deadline_ns;
    uint64_t end_ns;
    uint8_t *rbuf;
    struct iovec iov[MAX_MPX];
    struct stats st;
};

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *msg)
{
    fprintf(stderr, "mf-bench: %s\n", msg);
    exit(2);
}

/* ---- latency histogram ---- */

static unsigned hist_index(uint64_t v)
{
    if (v < 2 * HIST_SUB)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = e - 6;
    return shift * HIST_SUB + (unsigned)(v >> shift);
}

/* The highest value that falls in bucket i, so percentiles never under-report. */
static uint64_t hist_upper(unsigned i)
{
    if (i < 2 * HIST_SUB)
        return i;
    unsigned shift = i / HIST_SUB - 1;
    uint64_t sub = i % HIST_SUB + HIST_SUB;
    return ((sub + 1) << shift) - 1;
}

static uint64_t hist_percentile(const struct stats *st, double p)
{
    uint64_t total = 0, want, seen = 0;

    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        total += st->hist[i];
    if (total == 0)
        return 0;
    want = (uint64_t)ceil(p / 100.0 * (double)total);
    if (want == 0)
        want = 1;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += st->hist[i];
        if (seen >= want) {
            uint64_t v = hist_upper(i);
            return v < st->lat_max ? v : st->lat_max;
        }
    }
    return st->lat_max;
}

/* ---- request templates ---- */

static void split_uri(char *path, size_t pathlen, const char **query)
{
    const char *q = strchr(opt.uri, '?');
    size_t n = q ? (size_t)(q - opt.uri) : strlen(opt.uri);

    if (n >= pathlen)
        die("--uri too long");
    memcpy(path, opt.uri, n);
    path[n] = '\0';
    *query = q ? q + 1 : "";
}

/*
 * The CGI parameters of nginx's stock fastcgi_params plus the HTTP headers of a browser: the
 * shape of what every production request looks like to the application.
 */
static size_t build_params(struct param *ps, size_t max, char (*scratch)[512])
{
    size_t n = 0;
    char path[256];
    const char *query;
    bool auth = opt.role == MF_WIRE_AUTHORIZER;

#define ADD(k, v)                                                                                  \
    do {                                                                                           \
        if (n < max) {                                                                             \
            ps[n].name = (k);                                                                      \
            ps[n].value = (v);                                                                     \
            n++;                                                                                   \
        }                                                                                          \
    } while (0)

    split_uri(path, sizeof(path), &query);
    snprintf(scratch[0], sizeof(scratch[0]), "%s%s", opt.docroot, path);
    snprintf(scratch[1], sizeof(scratch[1]), "%zu", opt.body);
    snprintf(scratch[2], sizeof(scratch[2]), "%s", path);
    snprintf(scratch[3], sizeof(scratch[3]), "%s", query);

    ADD("SCRIPT_FILENAME", scratch[0]);
    ADD("QUERY_STRING", scratch[3]);
    ADD("REQUEST_METHOD", opt.method);
    ADD("CONTENT_TYPE", opt.body ? "application/octet-stream" : "");
    if (!auth)
        ADD("CONTENT_LENGTH", opt.body ? scratch[1] : "");
    if (opt.minimal_params)
        goto extra;
    if (!auth)
        ADD("SCRIPT_NAME", scratch[2]);
    ADD("REQUEST_URI", opt.uri);
    ADD("DOCUMENT_URI", scratch[2]);
    ADD("DOCUMENT_ROOT", opt.docroot);
    ADD("SERVER_PROTOCOL", "HTTP/1.1");
    ADD("REQUEST_SCHEME", "http");
    ADD("GATEWAY_INTERFACE", "CGI/1.1");
    ADD("SERVER_SOFTWARE", "nginx/1.22.1");
    ADD("REMOTE_ADDR", "127.0.0.1");
    ADD("REMOTE_PORT", "51234");
    ADD("SERVER_ADDR", "127.0.0.1");
    ADD("SERVER_PORT", "80");
    ADD("SERVER_NAME", "localhost");
    ADD("REDIRECT_STATUS", "200");
    ADD("HTTP_HOST", "localhost");
    ADD("HTTP_USER_AGENT",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0");
    ADD("HTTP_ACCEPT", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8");
    ADD("HTTP_ACCEPT_LANGUAGE", "en-US,en;q=0.5");
    ADD("HTTP_ACCEPT_ENCODING", "gzip, deflate, br, zstd");
    ADD("HTTP_CONNECTION", "keep-alive");
    ADD("HTTP_COOKIE", "session=6f1c2a9e4b7d4e0f8a3c5b2d1e9f7a6c; theme=dark");
    ADD("HTTP_UPGRADE_INSECURE_REQUESTS", "1");
extra:
    for (int i = 0; i < opt.nextra; i++) {
        size_t j;

        /* --param overrides a default of the same name rather than sending it twice. */
        for (j = 0; j < n; j++)
            if (strcmp(ps[j].name, opt.extra[i].name) == 0)
                break;
        if (j < n)
            ps[j].value = opt.extra[i].value;
        else
            ADD(opt.extra[i].name, opt.extra[i].value);
    }
#undef ADD
    return n;
}

/* Appends records of one stream, content split at max bytes, padded to 8; then the empty one. */
static size_t put_stream(uint8_t *dst, uint8_t type, const uint8_t *data, size_t len, size_t max)
{
    size_t off = 0;

    while (len > 0) {
        size_t n = len < max ? len : max;
        uint8_t pad = mf_wire_padding(n);

        mf_wire_header(dst + off, type, 1, (uint16_t)n, pad);
        off += MF_WIRE_HEADER_LEN;
        if (data) {
            memcpy(dst + off, data, n);
            data += n;
        } else {
            memset(dst + off, 'x', n);
        }
        off += n;
        memset(dst + off, 0, pad);
        off += pad;
        len -= n;
    }
    mf_wire_header(dst + off, type, 1, 0, 0);
    return off + MF_WIRE_HEADER_LEN;
}

static size_t stream_size(size_t len, size_t max)
{
    size_t full = len / max, rest = len % max;

    return full * (MF_WIRE_HEADER_LEN + max) +
           (rest ? MF_WIRE_HEADER_LEN + rest + mf_wire_padding(rest) : 0) + MF_WIRE_HEADER_LEN;
}

static void build_templates(void)
{
    struct param ps[MAX_PARAMS + 32];
    char scratch[4][512];
    size_t np = build_params(ps, sizeof(ps) / sizeof(ps[0]), scratch);
    size_t plen = 0, off = 0, len;
    uint8_t *nv, *buf;

    for (size_t i = 0; i < np; i++)
        plen += mf_wire_nv_size(strlen(ps[i].name), strlen(ps[i].value));
    nv = malloc(plen ? plen : 1);
    if (nv == NULL)
        die("out of memory");
    for (size_t i = 0; i < np; i++)
        off += mf_wire_nv_encode(nv + off, ps[i].name, strlen(ps[i].name), ps[i].value,
                                 strlen(ps[i].value));

    /*
     * nginx sends all params in one record when they fit and stdin in records of up to
     * 32 KiB; larger params are split at the largest 8-aligned content.
     */
    len = 16 + stream_size(plen, MF_WIRE_CONTENT_MAX) + stream_size(opt.body, 32768);
    buf = malloc(len);
    if (buf == NULL)
        die("out of memory");
    mf_wire_header(buf, MF_WIRE_BEGIN_REQUEST, 1, 8, 0);
    memset(buf + 8, 0, 8);
    buf[9] = (uint8_t)opt.role;
    buf[10] = opt.keep_conn ? MF_WIRE_KEEP_CONN : 0;
    off = 16;
    off += put_stream(buf + off, MF_WIRE_PARAMS, nv, plen, MF_WIRE_CONTENT_MAX);
    off += put_stream(buf + off, MF_WIRE_STDIN, NULL, opt.body, 32768);
    if (off != len)
        die("internal error: template size");
    free(nv);

    tpls = calloc((size_t)opt.mpx, sizeof(*tpls));
    if (tpls == NULL)
        die("out of memory");
    for (int id = 1; id <= opt.mpx; id++) {
        uint8_t *t = id == 1 ? buf : malloc(len);

        if (t == NULL)
            die("out of memory");
        if (id > 1)
            memcpy(t, buf, len);
        /* Walk the records to stamp the id into each header. */
        for (size_t p = 0; p < len;) {
            size_t clen = (size_t)t[p + 4] << 8 | t[p + 5];

            mf_wire_set_id(t + p, (uint16_t)id);
            p += MF_WIRE_HEADER_LEN + clen + t[p + 6];
        }
        tpls[id - 1].buf = t;
        tpls[id - 1].len = len;
    }
}

/* ---- connections ---- */

static void set_events(struct conn *c, uint32_t ev)
{
    struct epoll_event e = {.events = ev, .data.ptr = c};

    if (c->events == ev)
        return;
    if (epoll_ctl(c->w->epfd, EPOLL_CTL_MOD, c->fd, &e) < 0)
        die("epoll_ctl MOD failed");
    c->events = ev;
}

static uint32_t want_events(const struct conn *c)
{
    uint32_t ev = 0;

    if (c->state == C_CONNECTING)
        return EPOLLOUT;
    if (!c->paused)
        ev |= EPOLLIN;
    if (c->q_len > 0)
        ev |= EPOLLOUT;
    return ev;
}

static void count_err(struct worker *w, enum err_kind k, uint64_t n)
{
    w->st.errors[k] += n;
}

/* Claims one request from the -n budget. */
static bool budget_take(struct worker *w)
{
    if (w->no_more)
        return false;
    if (opt.requests > 0 && atomic_fetch_add(&issued, 1) >= opt.requests) {
        w->no_more = true;
        return false;
    }
    return true;
}

static void issue(struct conn *c, uint16_t id, uint64_t now)
{
    struct slot *s = &c->slots[id - 1];

    if (c->broken || !budget_take(c->w))
        return;
    s->start_ns = now;
    s->body_bytes = 0;
    s->status = -1;
    s->line_len = 0;
    s->busy = 1;
    s->queued = 1;
    s->reissue = 0;
    s->hdr_state = HDR_LINES;
    s->stdout_closed = 0;
    s->bad = 0;
    s->started = 0;
    c->q[(c->q_head + c->q_len) % (uint32_t)opt.mpx] = id;
    c->q_len++;
    c->inflight++;
    c->w->inflight++;
}

static void conn_open(struct conn *c, uint64_t now);

/*
 * Drops a connection. Requests still in flight are lost and count as errors of kind k; with
 * reopen, a fresh connection takes its place at once or after the backoff.
 */
static void conn_close(struct conn *c, enum err_kind k, bool reopen, uint64_t now)
{
    struct worker *w = c->w;

    if (c->inflight > 0) {
        for (int i = 0; i < opt.mpx; i++) {
            struct slot *s = &c->slots[i];

            if (s->busy && !s->bad)
                count_err(w, k, 1);
            s->busy = 0;
        }
        w->inflight -= c->inflight;
        c->inflight = 0;
    }
    for (int i = 0; i < opt.mpx; i++)
        c->slots[i].queued = c->slots[i].reissue = 0;
    c->q_head = c->q_len = 0;
    c->q_off = 0;
    c->broken = 0;
    if (c->fd >= 0) {
        epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    c->state = C_IDLE;
    if (!reopen || w->no_more)
        return;
    if (c->backoff_ms == 0) {
        conn_open(c, now);
    } else {
        c->state = C_RETRY;
        c->retry_ns = now + (uint64_t)c->backoff_ms * 1000000ull;
    }
}

static void connect_failed(struct conn *c, uint64_t now)
{
    count_err(c->w, ERR_CONNECT, 1);
    /* Back off so a server that is down costs a few errors a second, not a spin. */
    c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : 10;
    if (c->backoff_ms > 200)
        c->backoff_ms = 200;
    conn_close(c, ERR_LOST, true, now);
}

static void conn_flush(struct conn *c, uint64_t now);

static void conn_ready(struct conn *c, uint64_t now)
{
    c->state = C_OPEN;
    c->backoff_ms = 0;
    c->since_ns = now;
    c->w->st.connects++;
    for (int id = 1; id <= opt.mpx; id++)
        issue(c, (uint16_t)id, now);
    conn_flush(c, now);
}

static void conn_open(struct conn *c, uint64_t now)
{
    struct worker *w = c->w;
    int fd, one = 1;
    struct epoll_event e;

    memset(c->rh, 0, sizeof(c->rh));
    c->rh_have = 0;
    c->content_left = c->pad_left = 0;
    c->paused = 0;
    c->tokens = opt.slow_read > 0 ? opt.slow_read * TICK_NS / 1e9 : 0;
    c->since_ns = now;

    fd = socket(opt.addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("mf-bench: socket");
        connect_failed(c, now);
        return;
    }
    c->fd = fd;
    if (mf_netaddr_is_inet(&opt.addr))
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (opt.rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &opt.rcvbuf, sizeof(opt.rcvbuf));

    c->events = EPOLLOUT;
    e.events = c->events;
    e.data.ptr = c;
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &e) < 0)
        die("epoll_ctl ADD failed");

    if (connect(fd, (const struct sockaddr *)&opt.addr.ss, opt.addr.len) == 0) {
        conn_ready(c, now);
    } else if (errno == EINPROGRESS) {
        c->state = C_CONNECTING;
    } else if (errno == EAGAIN) {
        /* A unix socket's backlog is full: the server is busy, not broken. Retry shortly. */
        conn_close(c, ERR_LOST, false, now);
        c->state = C_RETRY;
        c->retry_ns = now + 1000000ull;
    } else {
        connect_failed(c, now);
    }
}

/* Sends as much of the queued templates as the socket takes, in one writev. */
static void conn_flush(struct conn *c, uint64_t now)
{
    struct worker *w = c->w;

    for (int round = 0; round < 4 && c->q_len > 0; round++) {
        uint32_t n = c->q_len;
        ssize_t wrote;

        for (uint32_t i = 0; i < n; i++) {
            const struct tpl *t = &tpls[c->q[(c->q_head + i) % (uint32_t)opt.mpx] - 1];
            size_t skip = i == 0 ? c->q_off : 0;

            w->iov[i].iov_base = t->buf + skip;
            w->iov[i].iov_len = t->len - skip;
        }
        wrote = writev(c->fd, w->iov, (int)n);
        if (wrote < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            /*
             * The server closed, maybe right after answering without reading the whole body.
             * Its responses may still sit in the receive queue, so let the read side decide
             * what was lost when it reaches the end.
             */
            for (uint32_t i = 0; i < c->q_len; i++) {
                struct slot *s = &c->slots[c->q[(c->q_head + i) % (uint32_t)opt.mpx] - 1];

                s->queued = s->reissue = 0;
            }
            c->q_head = c->q_len = 0;
            c->q_off = 0;
            c->broken = 1;
            break;
        }
        size_t left = (size_t)wrote;
        bool reissued = false;
        while (c->q_len > 0) {
            uint16_t id = c->q[c->q_head];
            size_t rest = tpls[id - 1].len - c->q_off;
            struct slot *s = &c->slots[id - 1];

            if (left < rest) {
                c->q_off += left;
                break;
            }
            left -= rest;
            c->q_off = 0;
            c->q_head = (c->q_head + 1) % (uint32_t)opt.mpx;
            c->q_len--;
            s->queued = 0;
            if (s->reissue) {
                /* Its response came while the body was still going out: send the next. */
                s->reissue = 0;
                issue(c, id, now);
                reissued = true;
            }
        }
        if (c->q_len > 0 && !reissued)
            break;
    }
    set_events(c, want_events(c));
}

/* ---- response checking ---- */

static void slot_error(struct worker *w, struct slot *s, enum err_kind k)
{
    if (!s->bad)
        count_err(w, k, 1);
    s->bad = 1;
}

/* Looks at one complete CGI header line, without its line end. */
static void header_line(struct slot *s, size_t len)
{
    size_t n = len < sizeof(s->line) ? len : sizeof(s->line);
    const char *p = s->line, *end = s->line + n;

    if (n < 7 || strncasecmp(p, "status:", 7) != 0)
        return;
    p += 7;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    if (end - p >= 3 && p[0] >= '0' && p[0] <= '9' && p[1] >= '0' && p[1] <= '9' && p[2] >= '0' &&
        p[2] <= '9')
        s->status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
    else
        s->status = 0;
}

/* Feeds STDOUT content to the CGI header scanner; what follows the blank line is body. */
static void stdout_bytes(struct slot *s, const uint8_t *p, size_t n)
{
    size_t i = 0;

    while (s->hdr_state == HDR_LINES && i < n) {
        uint8_t ch = p[i++];

        if (ch == '\n') {
            size_t len = s->line_len;

            if (len > 0 && len <= sizeof(s->line) && s->line[len - 1] == '\r')
                len--;
            if (len == 0)
                s->hdr_state = HDR_DONE;
            else
                header_line(s, len);
            s->line_len = 0;
        } else {
            if (s->line_len < sizeof(s->line))
                s->line[s->line_len] = (char)ch;
            if (s->line_len < UINT16_MAX)
                s->line_len++;
        }
    }
    s->body_bytes += n - i;
}

static struct slot *slot_of(struct conn *c, uint16_t id)
{
    if (id == 0 || id > opt.mpx || !c->slots[id - 1].busy)
        return NULL;
    return &c->slots[id - 1];
}

static void end_request(struct conn *c, struct slot *s, uint16_t id, uint64_t now)
{
    struct worker *w = c->w;
    uint32_t app = (uint32_t)c->endbody[0] << 24 | (uint32_t)c->endbody[1] << 16 |
                   (uint32_t)c->endbody[2] << 8 | c->endbody[3];
    uint64_t lat = now - s->start_ns;

    if (c->content_len != 8 || app != 0 || c->endbody[4] != MF_WIRE_REQUEST_COMPLETE)
        slot_error(w, s, ERR_END);
    else if (s->hdr_state != HDR_DONE || (!s->stdout_closed && opt.strict))
        slot_error(w, s, ERR_RECORD);
    else if ((s->status < 0 ? 200 : s->status) != opt.expect_status)
        slot_error(w, s, ERR_STATUS);
    else if (opt.expect_body >= 0 && s->body_bytes != (uint64_t)opt.expect_body)
        slot_error(w, s, ERR_BODY);

    /*
     * PHP-FPM ends STDOUT with END_REQUEST alone, without the empty record [section 3.3]
     * asks for, and nginx accepts that; so only --strict makes it an error.
     */
    if (!s->stdout_closed)
        w->st.unterminated++;
    w->st.requests++;
    w->st.hist[hist_index(lat)]++;
    if (lat > w->st.lat_max)
        w->st.lat_max = lat;
    w->st.last_done_ns = now;
    s->busy = 0;
    c->inflight--;
    w->inflight--;

    if (!opt.keep_conn) {
        /* The application closes [section 5.1]; wait for its FIN before the next request. */
        c->state = C_CLOSING;
        c->since_ns = now;
    } else if (s->queued) {
        s->reissue = 1;
    } else {
        issue(c, id, now);
    }
}

/* A header arrived whole: checks what the response stream may legally contain next. */
static bool record_start(struct conn *c, uint64_t now)
{
    struct worker *w = c->w;
    const uint8_t *h = c->rh;
    struct slot *s;

    if (h[0] != MF_WIRE_VERSION) {
        /* The framing cannot be trusted past a bad version: never resynchronise. */
        conn_close(c, ERR_RECORD, true, now);
        return false;
    }
    c->rtype = h[1];
    c->rid = (uint16_t)(h[2] << 8 | h[3]);
    c->content_len = (uint16_t)(h[4] << 8 | h[5]);
    c->content_left = c->content_len;
    c->pad_left = h[6];
    c->end_have = 0;

    s = slot_of(c, c->rid);
    if (s != NULL)
        s->started = 1;
    switch (c->rtype) {
    case MF_WIRE_STDOUT:
        if (s == NULL || s->stdout_closed) {
            count_err(w, ERR_RECORD, 1);
            c->rtype = 0; /* skip its content */
        } else if (c->content_len == 0) {
            s->stdout_closed = 1;
        }
        break;
    case MF_WIRE_STDERR:
        if (s == NULL) {
            count_err(w, ERR_RECORD, 1);
            c->rtype = 0;
        }
        break;
    case MF_WIRE_END_REQUEST:
        if (s == NULL) {
            count_err(w, ERR_RECORD, 1);
            c->rtype = 0;
        } else if (c->content_len < 8) {
            slot_error(w, s, ERR_END);
            if (c->content_len == 0)
                end_request(c, s, c->rid, now);
        }
        break;
    default:
        count_err(w, ERR_RECORD, 1);
        c->rtype = 0;
        break;
    }
    return true;
}

/* Returns false when the connection was closed (and possibly reopened) meanwhile. */
static bool parse_input(struct conn *c, const uint8_t *p, size_t n, uint64_t now)
{
    struct worker *w = c->w;
    const uint8_t *end = p + n;

    while (p < end) {
        if (c->rh_have < MF_WIRE_HEADER_LEN) {
            size_t k = MF_WIRE_HEADER_LEN - c->rh_have;

            if (k > (size_t)(end - p))
                k = (size_t)(end - p);
            memcpy(c->rh + c->rh_have, p, k);
            c->rh_have += (uint8_t)k;
            p += k;
            if (c->rh_have < MF_WIRE_HEADER_LEN)
                break;
            if (!record_start(c, now))
                return false;
            continue;
        }
        if (c->content_left > 0) {
            size_t k = c->content_left;

            if (k > (size_t)(end - p))
                k = (size_t)(end - p);
            switch (c->rtype) {
            case MF_WIRE_STDOUT:
                w->st.stdout_bytes += k;
                stdout_bytes(&c->slots[c->rid - 1], p, k);
                break;
            case MF_WIRE_STDERR: w->st.stderr_bytes += k; break;
            case MF_WIRE_END_REQUEST:
                for (size_t i = 0; i < k && c->end_have < 8; i++)
                    c->endbody[c->end_have++] = p[i];
                break;
            default: break;
            }
            p += k;
            c->content_left -= (uint32_t)k;
            if (c->content_left == 0 && c->rtype == MF_WIRE_END_REQUEST) {
                struct slot *s = slot_of(c, c->rid);

                if (s != NULL)
                    end_request(c, s, c->rid, now);
            }
            continue;
        }
        if (c->pad_left > 0) {
            size_t k = c->pad_left;

            if (k > (size_t)(end - p))
                k = (size_t)(end - p);
            p += k;
            c->pad_left -= (uint32_t)k;
            continue;
        }
        c->rh_have = 0;
    }
    if (c->rh_have == MF_WIRE_HEADER_LEN && c->content_left == 0 && c->pad_left == 0)
        c->rh_have = 0;
    return true;
}

static void conn_readable(struct conn *c)
{
    struct worker *w = c->w;
    size_t want = READ_BUF;
    ssize_t n;
    uint64_t now;

    if (opt.slow_read > 0) {
        if (c->tokens < 1.0) {
            c->paused = 1;
            set_events(c, want_events(c));
            return;
        }
        if (c->tokens < (double)want)
            want = (size_t)c->tokens;
    }
    n = read(c->fd, w->rbuf, want);
    now = now_ns();
    if (n > 0) {
        w->st.wire_bytes += (uint64_t)n;
        if (opt.slow_read > 0)
            c->tokens -= (double)n;
        if (!parse_input(c, w->rbuf, (size_t)n, now))
            return;
        if (c->q_len > 0)
            conn_flush(c, now);
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n < 0 && errno == ECONNRESET && c->inflight == 0)
        w->st.resets++;
    /* EOF or an error: clean only when nothing was in flight. */
    conn_close(c, ERR_LOST, true, now);
}

static void conn_event(struct conn *c, uint32_t ev)
{
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        uint64_t now = now_ns();

        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0)
            connect_failed(c, now);
        else
            conn_ready(c, now);
        return;
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        conn_readable(c);
        if (c->state != C_OPEN && c->state != C_CLOSING)
            return;
    }
    if ((ev & EPOLLOUT) && c->q_len > 0)
        conn_flush(c, now_ns());
}

static void refill(struct conn *c, uint64_t dt)
{
    double cap = opt.slow_read * 0.1 > 1.0 ? opt.slow_read * 0.1 : 1.0;

    c->tokens += opt.slow_read * (double)dt / 1e9;
    if (c->tokens > cap)
        c->tokens = cap;
    if (c->paused && c->tokens >= 1.0) {
        c->paused = 0;
        set_events(c, want_events(c));
    }
}

/*
 * Reconnects and slow-read refills every TICK_NS; timeouts only when check_timeouts, since
 * they walk every slot.
 */
static void housekeeping(struct worker *w, uint64_t now, uint64_t dt, bool check_timeouts)
{
    uint64_t tmo = (uint64_t)(opt.timeout * 1e9);

    for (int i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];

        switch (c->state) {
        case C_RETRY:
            if (now >= c->retry_ns && !w->no_more)
                conn_open(c, now);
            break;
        case C_CONNECTING:
            if (now - c->since_ns > tmo)
                connect_failed(c, now);
            break;
        case C_CLOSING:
            if (now - c->since_ns > tmo) {
                /* The server never closed a connection without FCGI_KEEP_CONN. */
                count_err(w, ERR_TIMEOUT, 1);
                conn_close(c, ERR_LOST, true, now);
            } else if (opt.slow_read > 0) {
                refill(c, dt);
            }
            break;
        case C_OPEN:
            if (c->broken && c->inflight == 0) {
                conn_close(c, ERR_LOST, true, now);
                break;
            }
            for (int j = 0; check_timeouts && j < opt.mpx; j++) {
                struct slot *s = &c->slots[j];

                if (s->busy && now - s->start_ns > tmo) {
                    slot_error(w, s, ERR_TIMEOUT);
                    conn_close(c, ERR_LOST, true, now);
                    break;
                }
            }
            if (c->state == C_OPEN && opt.slow_read > 0)
                refill(c, dt);
            break;
        default: break;
        }
    }
}

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    struct epoll_event evs[256];
    uint64_t now = now_ns(), last_tick = now;
    unsigned ticks = 0;

    for (int i = 0; i < w->nconns; i++)
        conn_open(&w->conns[i], now);

    for (;;) {
        int n = epoll_wait(w->epfd, evs, 256, 10);

        if (n < 0 && errno != EINTR)
            die("epoll_wait failed");
        for (int i = 0; i < n; i++)
            conn_event(evs[i].data.ptr, evs[i].events);
        now = now_ns();
        if (interrupted || now >= w->deadline_ns)
            break;
        if (w->no_more && w->inflight == 0)
            break;
        if (now - last_tick >= TICK_NS) {
            housekeeping(w, now, now - last_tick, ++ticks % 10 == 0);
            last_tick = now;
        }
    }
    w->end_ns = now;
    for (int i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];

        for (int j = 0; c->inflight > 0 && j < opt.mpx; j++) {
            struct slot *s = &c->slots[j];
            uint64_t age = now - s->start_ns;

            if (!s->busy)
                continue;
            w->st.inflight_end++;
            if (age > w->st.oldest_end_ns)
                w->st.oldest_end_ns = age;
            /*
             * A request sent in the first half of the run without a byte of answer is a
             * server that starves connections (a worker per kept connection and fewer
             * workers than -c), which a --timeout longer than the run would otherwise hide.
             */
            if (!s->started && age > (now - w->start_ns) / 2)
                slot_error(w, s, ERR_TIMEOUT);
        }
        if (c->fd >= 0)
            close(c->fd);
    }
    return NULL;
}

/* ---- command line and report ---- */

static void usage(FILE *f)
{
    fputs("usage: mf-bench --connect ADDR [options]\n"
          "  --connect ADDR          host:port, [v6]:port or unix:/path\n"
          "  -c, --conns N           connections (default 50)\n"
          "  -t, --threads N         threads sharing the connections (default 1)\n"
          "  -d, --duration S        run for S seconds (default 5; with -n: an upper bound,\n"
          "                          120 unless given)\n"
          "  -n, --requests N        stop after N requests\n"
          "      --keep-conn         reuse connections, FCGI_KEEP_CONN set (default)\n"
          "      --no-keep-conn      one connection per request; the server must close it\n"
          "  -m, --mpx M             requests in flight per connection, ids 1..M (default 1)\n"
          "      --body N            send N bytes of request body on STDIN\n"
          "      --uri /path[?q]     request URI (default /)\n"
          "      --method M          REQUEST_METHOD (default GET, or POST with --body)\n"
          "      --document-root D   DOCUMENT_ROOT, prefix of SCRIPT_FILENAME\n"
          "                          (default /var/www/html)\n"
          "      --role R            responder (default) or authorizer\n"
          "      --params SET        nginx (default: ~27 params as nginx sends them) or minimal\n"
          "      --param NAME=VALUE  add or override a param (repeatable)\n"
          "      --slow-read BPS     read each connection's responses at BPS bytes/s\n"
          "      --rcvbuf BYTES      SO_RCVBUF of each connection (with --slow-read)\n"
          "      --expect-status N   CGI status every response must have (default 200)\n"
          "      --expect-body-bytes N  body bytes (after the CGI headers) each must have\n"
          "      --timeout S         a request or connect slower than S fails (default 10);\n"
          "                          so does one sent in the first half of the run that has\n"
          "                          no byte of answer when the run ends\n"
          "      --strict            also fail a STDOUT stream that END_REQUEST ends without\n"
          "                          its empty record (PHP-FPM does that; nginx accepts it)\n"
          "  -h, --help\n"
          "The last line printed is machine-readable:\n"
          "RESULT rps=.. bytes_per_s=.. p50_us=.. p99_us=.. max_us=.. errors=.. requests=..\n"
          "       cpu_pct=..\n"
          "Exit status: 0 when there were no errors, 1 otherwise, 2 on bad usage.\n",
          f);
}

static long long parse_num(const char *s, const char *what, long long min, long long max)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "mf-bench: bad %s '%s' (%lld..%lld)\n", what, s, min, max);
        exit(2);
    }
    return v;
}

static double parse_real(const char *s, const char *what)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v > 0) || v > 1e7) {
        fprintf(stderr, "mf-bench: bad %s '%s'\n", what, s);
        exit(2);
    }
    return v;
}

enum {
    O_CONNECT = 256,
    O_KEEP,
    O_NO_KEEP,
    O_BODY,
    O_URI,
    O_METHOD,
    O_DOCROOT,
    O_ROLE,
    O_PARAMS,
    O_PARAM,
    O_SLOW,
    O_RCVBUF,
    O_STATUS,
    O_EXPECT_BODY,
    O_TIMEOUT,
    O_STRICT,
};

static void parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"connect", required_argument, NULL, O_CONNECT},
        {"conns", required_argument, NULL, 'c'},
        {"threads", required_argument, NULL, 't'},
        {"duration", required_argument, NULL, 'd'},
        {"requests", required_argument, NULL, 'n'},
        {"keep-conn", no_argument, NULL, O_KEEP},
        {"no-keep-conn", no_argument, NULL, O_NO_KEEP},
        {"mpx", required_argument, NULL, 'm'},
        {"body", required_argument, NULL, O_BODY},
        {"uri", required_argument, NULL, O_URI},
        {"method", required_argument, NULL, O_METHOD},
        {"document-root", required_argument, NULL, O_DOCROOT},
        {"role", required_argument, NULL, O_ROLE},
        {"params", required_argument, NULL, O_PARAMS},
        {"param", required_argument, NULL, O_PARAM},
        {"slow-read", required_argument, NULL, O_SLOW},
        {"rcvbuf", required_argument, NULL, O_RCVBUF},
        {"expect-status", required_argument, NULL, O_STATUS},
        {"expect-body-bytes", required_argument, NULL, O_EXPECT_BODY},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"strict", no_argument, NULL, O_STRICT},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    char err[160];
    int ch;

    while ((ch = getopt_long(argc, argv, "c:t:d:n:m:h", longopts, NULL)) != -1) {
        switch (ch) {
        case O_CONNECT:
            if (mf_netaddr_parse(optarg, &opt.addr, err, sizeof(err)) < 0) {
                fprintf(stderr, "mf-bench: --connect: %s\n", err);
                exit(2);
            }
            opt.addr_spec = optarg;
            break;
        case 'c': opt.conns = (int)parse_num(optarg, "--conns", 1, MAX_CONNS); break;
        case 't': opt.threads = (int)parse_num(optarg, "--threads", 1, MAX_THREADS); break;
        case 'd': opt.duration = parse_real(optarg, "--duration"); break;
        case 'n': opt.requests = (uint64_t)parse_num(optarg, "--requests", 1, LLONG_MAX / 2); break;
        case O_KEEP: opt.keep_conn = true; break;
        case O_NO_KEEP: opt.keep_conn = false; break;
        case 'm': opt.mpx = (int)parse_num(optarg, "--mpx", 1, MAX_MPX); break;
        case O_BODY: opt.body = (size_t)parse_num(optarg, "--body", 0, 1LL << 30); break;
        case O_URI:
            if (optarg[0] != '/')
                die("--uri must start with /");
            opt.uri = optarg;
            break;
        case O_METHOD: opt.method = optarg; break;
        case O_DOCROOT: opt.docroot = optarg; break;
        case O_ROLE:
            if (strcmp(optarg, "responder") == 0)
                opt.role = MF_WIRE_RESPONDER;
            else if (strcmp(optarg, "authorizer") == 0)
                opt.role = MF_WIRE_AUTHORIZER;
            else
                die("--role is responder or authorizer");
            break;
        case O_PARAMS:
            if (strcmp(optarg, "nginx") == 0)
                opt.minimal_params = false;
            else if (strcmp(optarg, "minimal") == 0)
                opt.minimal_params = true;
            else
                die("--params is nginx or minimal");
            break;
        case O_PARAM: {
            char *eq = strchr(optarg, '=');

            if (eq == NULL || eq == optarg || opt.nextra == MAX_PARAMS)
                die("--param NAME=VALUE (at most 64)");
            *eq = '\0';
            opt.extra[opt.nextra].name = optarg;
            opt.extra[opt.nextra].value = eq + 1;
            opt.nextra++;
            break;
        }
        case O_SLOW: opt.slow_read = parse_real(optarg, "--slow-read"); break;
        case O_RCVBUF: opt.rcvbuf = (int)parse_num(optarg, "--rcvbuf", 1, INT_MAX / 2); break;
        case O_STATUS:
            opt.expect_status = (int)parse_num(optarg, "--expect-status", 100, 999);
            break;
        case O_EXPECT_BODY:
            opt.expect_body = parse_num(optarg, "--expect-body-bytes", 0, LLONG_MAX / 2);
            break;
        case O_TIMEOUT: opt.timeout = parse_real(optarg, "--timeout"); break;
        case O_STRICT: opt.strict = true; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind != argc || opt.addr_spec == NULL) {
        usage(stderr);
        exit(2);
    }
    if (opt.duration == 0)
        opt.duration = opt.requests > 0 ? DEFAULT_CAP_S : 5.0;
    if (opt.method == NULL)
        opt.method = opt.body > 0 ? "POST" : "GET";
    if (!opt.keep_conn && opt.mpx > 1) {
        /* Without FCGI_KEEP_CONN the server closes after the first END_REQUEST. */
        fprintf(stderr, "mf-bench: --no-keep-conn: using -m 1\n");
        opt.mpx = 1;
    }
    if (opt.threads > opt.conns)
        opt.threads = opt.conns;
}

static void merge(struct stats *into, const struct stats *from)
{
    into->requests += from->requests;
    for (int k = 0; k < ERR_KINDS; k++)
        into->errors[k] += from->errors[k];
    into->stdout_bytes += from->stdout_bytes;
    into->stderr_bytes += from->stderr_bytes;
    into->wire_bytes += from->wire_bytes;
    into->connects += from->connects;
    into->resets += from->resets;
    into->unterminated += from->unterminated;
    into->inflight_end += from->inflight_end;
    if (from->oldest_end_ns > into->oldest_end_ns)
        into->oldest_end_ns = from->oldest_end_ns;
    if (from->lat_max > into->lat_max)
        into->lat_max = from->lat_max;
    if (from->last_done_ns > into->last_done_ns)
        into->last_done_ns = from->last_done_ns;
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        into->hist[i] += from->hist[i];
}

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void report(const struct stats *st, uint64_t start_ns, uint64_t end_ns)
{
    double secs = (double)(end_ns - start_ns) / 1e9;
    uint64_t errors = 0;
    struct rusage ru;
    double cpu = 0;

    for (int k = 0; k < ERR_KINDS; k++)
        errors += st->errors[k];
    if (secs <= 0)
        secs = 1e-9;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
              (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;

    double rps = (double)st->requests / secs;
    double bps = (double)st->stdout_bytes / secs;
    double p50 = (double)hist_percentile(st, 50) / 1e3;
    double p90 = (double)hist_percentile(st, 90) / 1e3;
    double p99 = (double)hist_percentile(st, 99) / 1e3;
    double p999 = (double)hist_percentile(st, 99.9) / 1e3;
    double max = (double)st->lat_max / 1e3;

    printf("mf-bench: %s, %d conns, %d thread%s, %s, mpx %d, body %zu, %.2f s\n", opt.addr_spec,
           opt.conns, opt.threads, opt.threads == 1 ? "" : "s",
           opt.keep_conn ? "keep-conn" : "no-keep-conn", opt.mpx, opt.body, secs);
    printf("  requests    %llu, errors %llu\n", (unsigned long long)st->requests,
           (unsigned long long)errors);
    printf("  throughput  %.1f req/s, stdout %.2f MB/s, wire %.2f MB/s\n", rps, bps / 1e6,
           (double)st->wire_bytes / secs / 1e6);
    printf("  latency     p50 %.1f us, p90 %.1f us, p99 %.1f us, p99.9 %.1f us, max %.1f us\n", p50,
           p90, p99, p999, max);
    printf("  errors     ");
    for (int k = 0; k < ERR_KINDS; k++)
        printf(" %s %llu", err_names[k], (unsigned long long)st->errors[k]);
    printf("\n  conns       %llu opened, %llu reset after the response\n",
           (unsigned long long)st->connects, (unsigned long long)st->resets);
    if (st->inflight_end > 0)
        printf("  at the end  %llu requests in flight (not counted), the oldest sent %.1f ms "
               "before\n",
               (unsigned long long)st->inflight_end, (double)st->oldest_end_ns / 1e6);
    if (st->unterminated > 0)
        printf("  note        %llu responses had no empty STDOUT record before END_REQUEST%s\n",
               (unsigned long long)st->unterminated,
               opt.strict ? "" : " (allowed without --strict)");
    if (st->stderr_bytes > 0)
        printf("  stderr      %llu bytes\n", (unsigned long long)st->stderr_bytes);
    printf("  cpu         %.0f%% of one core (a figure near 100%% x threads means mf-bench,\n"
           "              not the server, may be the limit)\n",
           cpu / secs * 100.0);
    printf("RESULT rps=%.1f bytes_per_s=%.0f p50_us=%.1f p99_us=%.1f max_us=%.1f errors=%llu "
           "requests=%llu cpu_pct=%.0f\n",
           rps, bps, p50, p99, max, (unsigned long long)errors, (unsigned long long)st->requests,
           cpu / secs * 100.0);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    struct worker *ws;
    struct stats *total;
    uint64_t start, end = 0;
    struct sigaction sa;

    parse_args(argc, argv);
    build_templates();

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    ws = calloc((size_t)opt.threads, sizeof(*ws));
    total = calloc(1, sizeof(*total));
    if (ws == NULL || total == NULL)
        die("out of memory");
    start = now_ns();
    for (int t = 0; t < opt.threads; t++) {
        struct worker *w = &ws[t];
        int share = opt.conns / opt.threads + (t < opt.conns % opt.threads);

        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        w->rbuf = malloc(READ_BUF);
        w->conns = calloc((size_t)share, sizeof(*w->conns));
        if (w->epfd < 0 || w->rbuf == NULL || w->conns == NULL)
            die("cannot set up a worker");
        w->nconns = share;
        w->start_ns = start;
        w->deadline_ns = start + (uint64_t)(opt.duration * 1e9);
        for (int i = 0; i < share; i++) {
            struct conn *c = &w->conns[i];

            c->w = w;
            c->fd = -1;
            c->slots = calloc((size_t)opt.mpx, sizeof(*c->slots));
            c->q = calloc((size_t)opt.mpx, sizeof(*c->q));
            if (c->slots == NULL || c->q == NULL)
                die("out of memory");
        }
    }
    for (int t = 0; t < opt.threads; t++)
        if (pthread_create(&ws[t].thread, NULL, worker_run, &ws[t]) != 0)
            die("pthread_create failed");
    for (int t = 0; t < opt.threads; t++) {
        pthread_join(ws[t].thread, NULL);
        merge(total, &ws[t].st);
        if (ws[t].end_ns > end)
            end = ws[t].end_ns;
    }
    /* A run bounded by -n ends with its last response, not with the housekeeping tick. */
    if (opt.requests > 0 && total->last_done_ns > start && total->last_done_ns < end)
        end = total->last_done_ns;
    report(total, start, end);

    uint64_t errors = 0;
    for (int k = 0; k < ERR_KINDS; k++)
        errors += total->errors[k];

    /* Freed so that a sanitizer build reports real leaks only. */
    for (int t = 0; t < opt.threads; t++) {
        for (int i = 0; i < ws[t].nconns; i++) {
            free(ws[t].conns[i].slots);
            free(ws[t].conns[i].q);
        }
        free(ws[t].conns);
        free(ws[t].rbuf);
        close(ws[t].epfd);
    }
    for (int id = 0; id < opt.mpx; id++)
        free(tpls[id].buf);
    free(tpls);
    free(ws);
    free(total);
    return errors == 0 ? 0 : 1;
}
