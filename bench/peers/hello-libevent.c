/*
 * mf-peer-libevent: the plain-C ceiling for moonfcgi's benchmarks.
 *
 * A FastCGI responder with nothing between the socket and the answer: raw libevent events,
 * one read into a static buffer, records parsed where they lie (only a record cut by the end
 * of a read is kept, in an evbuffer), each answer built from a template encoded at start-up
 * and appended in one piece, and one write per readable batch. It keeps connections,
 * multiplexes, answers GET_VALUES and ABORT_REQUEST, and obeys output backpressure, so it
 * is a fair ceiling rather than a toy that only survives the happy path.
 */
#include "netaddr.h"
#include "wire.h"

#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

/* Above this much unsent output a connection stops reading and producing. */
#define HIGH_WATER (256 * 1024)
#define READ_MAX   (256 * 1024)
/* How long a closing connection discards input before the close [spec: close gracefully]. */
#define LINGER_S       2
#define ACCEPT_BATCH   64
#define SMALL_RESPONSE 4096

static struct {
    const char *listen;
    long long body_size; /* -1: the hello world body */
    unsigned long long stream_bytes;
    bool read_body;
    int procs;
} opt = {.body_size = -1, .procs = 1};

/* Per request id on a connection. */
enum { R_ACTIVE = 1, R_PARAMS_DONE = 2, R_KEEP = 4, R_STREAMING = 8 };

struct stream {
    uint16_t id;
    unsigned long long left;
};

struct conn {
    struct conn *prev;
    struct conn *next; /* all open connections, so that an exit can free them */
    int fd;
    struct event *rev;
    struct event *wev;
    struct event *linger;
    struct evbuffer *out;
    /* Holds a record cut by the end of a read until the rest arrives. */
    struct evbuffer *partial;
    size_t skip; /* content and padding of the current record still to discard */
    uint8_t *reqs;
    size_t nreqs;
    struct stream *streams;
    size_t nstreams;
    size_t streams_cap;
    size_t rr; /* the stream to produce from next */
    bool closing;
    bool lingering;
    bool read_paused;
};

static struct event_base *base;
static struct event *accept_ev;
static struct event *accept_retry_ev;
static int listen_fd = -1;
static bool listen_inet;
static uint8_t rbuf[READ_MAX];

/* The whole response for id 0; record headers at resp_hdr[] get the real id. */
static uint8_t *resp;
static size_t resp_len;
static size_t *resp_hdr;
static size_t resp_nhdr;
/* --stream-mib: the first STDOUT record (CGI headers) and the body chunk every record uses. */
static uint8_t *stream_head;
static size_t stream_head_len;
static uint8_t *chunk;

static unsigned long long served;
static struct conn *conns;

static void die(const char *msg)
{
    fprintf(stderr, "mf-peer-libevent: %s\n", msg);
    exit(2);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (p == NULL)
        die("out of memory");
    return p;
}

/* ---- response templates ---- */

/* Encodes a STDOUT stream (content split at 65528) into dst, recording header offsets. */
static size_t put_stdout(uint8_t *dst, size_t at, const uint8_t *data, size_t len, bool close)
{
    size_t off = at;

    while (len > 0) {
        size_t n = len < MF_WIRE_CONTENT_MAX ? len : MF_WIRE_CONTENT_MAX;
        uint8_t pad = mf_wire_padding(n);

        if (dst) {
            resp_hdr[resp_nhdr++] = off;
            mf_wire_header(dst + off, MF_WIRE_STDOUT, 0, (uint16_t)n, pad);
            memcpy(dst + off + 8, data, n);
            memset(dst + off + 8 + n, 0, pad);
        }
        off += 8 + n + pad;
        data += n;
        len -= n;
    }
    if (close) {
        if (dst) {
            resp_hdr[resp_nhdr++] = off;
            mf_wire_header(dst + off, MF_WIRE_STDOUT, 0, 0, 0);
        }
        off += 8;
    }
    return off - at;
}

static size_t put_end(uint8_t *dst, size_t at)
{
    if (dst) {
        resp_hdr[resp_nhdr++] = at;
        mf_wire_header(dst + at, MF_WIRE_END_REQUEST, 0, 8, 0);
        memset(dst + at + 8, 0, 8);
    }
    return 16;
}

static void build_templates(void)
{
    static const char hello[] = "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nHello, world!\n";
    uint8_t *doc;
    size_t doclen;
    char head[160];
    int hl;

    if (opt.stream_bytes > 0) {
        hl = snprintf(head, sizeof(head),
                      "Status: 200 OK\r\nContent-Type: application/octet-stream\r\n"
                      "Content-Length: %llu\r\n\r\n",
                      opt.stream_bytes);
        stream_head_len = put_stdout(NULL, 0, (const uint8_t *)head, (size_t)hl, false);
        resp_hdr = xmalloc(2 * sizeof(*resp_hdr));
        stream_head = xmalloc(stream_head_len);
        put_stdout(stream_head, 0, (const uint8_t *)head, (size_t)hl, false);
        /* The tail: empty STDOUT and END_REQUEST. */
        resp_nhdr = 0;
        resp_len = put_stdout(NULL, 0, NULL, 0, true) + 16;
        resp = xmalloc(resp_len);
        put_stdout(resp, 0, NULL, 0, true);
        put_end(resp, 8);
        /* One chunk with room for the padding of the shortest record. */
        chunk = xmalloc(MF_WIRE_CONTENT_MAX + 8);
        memset(chunk, 'a', MF_WIRE_CONTENT_MAX + 8);
        return;
    }
    if (opt.body_size < 0) {
        doclen = sizeof(hello) - 1;
        doc = xmalloc(doclen);
        memcpy(doc, hello, doclen);
    } else {
        hl = snprintf(head, sizeof(head),
                      "Status: 200 OK\r\nContent-Type: application/octet-stream\r\n"
                      "Content-Length: %lld\r\n\r\n",
                      opt.body_size);
        doclen = (size_t)hl + (size_t)opt.body_size;
        doc = xmalloc(doclen);
        memcpy(doc, head, (size_t)hl);
        memset(doc + hl, 'a', (size_t)opt.body_size);
    }
    resp_len = put_stdout(NULL, 0, doc, doclen, true) + 16;
    resp_hdr = xmalloc((resp_len / 8) * sizeof(*resp_hdr));
    resp = xmalloc(resp_len);
    resp_nhdr = 0;
    put_end(resp, put_stdout(resp, 0, doc, doclen, true));
    free(doc);
}

/* Appends the template response for id, each record whole [spec: one buffer append]. */
static void add_response(struct evbuffer *out, uint16_t id)
{
    if (resp_len <= SMALL_RESPONSE) {
        uint8_t buf[SMALL_RESPONSE];

        memcpy(buf, resp, resp_len);
        for (size_t i = 0; i < resp_nhdr; i++)
            mf_wire_set_id(buf + resp_hdr[i], id);
        evbuffer_add(out, buf, resp_len);
        return;
    }
    /* Large bodies are referenced, not copied: only the 8-byte headers differ per id. */
    for (size_t i = 0; i < resp_nhdr; i++) {
        size_t at = resp_hdr[i];
        size_t next = i + 1 < resp_nhdr ? resp_hdr[i + 1] : resp_len;
        uint8_t h[8];

        memcpy(h, resp + at, 8);
        mf_wire_set_id(h, id);
        evbuffer_add(out, h, 8);
        if (next > at + 8)
            evbuffer_add_reference(out, resp + at + 8, next - at - 8, NULL, NULL);
    }
}

static void add_end(struct evbuffer *out, uint16_t id, uint8_t protocol_status)
{
    uint8_t rec[16] = {0};

    mf_wire_header(rec, MF_WIRE_END_REQUEST, id, 8, 0);
    rec[12] = protocol_status;
    evbuffer_add(out, rec, sizeof(rec));
}

/* ---- connections ---- */

static void conn_free(struct conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    event_free(c->rev);
    event_free(c->wev);
    if (c->linger)
        event_free(c->linger);
    evbuffer_free(c->out);
    evbuffer_free(c->partial);
    close(c->fd);
    free(c->reqs);
    free(c->streams);
    free(c);
}

static uint8_t *req_state(struct conn *c, uint16_t id)
{
    if (id >= c->nreqs) {
        size_t n = c->nreqs ? c->nreqs : 16;

        while (n <= id)
            n *= 2;
        if (n > 65536)
            n = 65536;
        c->reqs = realloc(c->reqs, n);
        if (c->reqs == NULL)
            die("out of memory");
        memset(c->reqs + c->nreqs, 0, n - c->nreqs);
        c->nreqs = n;
    }
    return &c->reqs[id];
}

static void finished(struct conn *c, uint8_t *st)
{
    if (!(*st & R_KEEP))
        c->closing = true; /* [section 5.1]: without KEEP_CONN the application closes */
    *st = 0;
}

static void answer(struct conn *c, uint16_t id, uint8_t *st)
{
    served++;
    if (opt.stream_bytes == 0) {
        add_response(c->out, id);
        finished(c, st);
        return;
    }
    uint8_t h[8];
    memcpy(h, stream_head, 8);
    mf_wire_set_id(h, id);
    evbuffer_add(c->out, h, 8);
    evbuffer_add(c->out, stream_head + 8, stream_head_len - 8);
    if (c->nstreams == c->streams_cap) {
        c->streams_cap = c->streams_cap ? c->streams_cap * 2 : 4;
        c->streams = realloc(c->streams, c->streams_cap * sizeof(*c->streams));
        if (c->streams == NULL)
            die("out of memory");
    }
    c->streams[c->nstreams].id = id;
    c->streams[c->nstreams].left = opt.stream_bytes;
    c->nstreams++;
    *st |= R_STREAMING;
}

static void stream_remove(struct conn *c, size_t i)
{
    c->streams[i] = c->streams[--c->nstreams];
    if (c->rr >= c->nstreams)
        c->rr = 0;
}

/* Adds streamed records round-robin until the output reaches the high-water mark. */
static void produce(struct conn *c)
{
    while (c->nstreams > 0 && evbuffer_get_length(c->out) < HIGH_WATER) {
        struct stream *s = &c->streams[c->rr];
        size_t n = s->left < MF_WIRE_CONTENT_MAX ? (size_t)s->left : MF_WIRE_CONTENT_MAX;
        uint8_t pad = mf_wire_padding(n);
        uint8_t h[8];

        mf_wire_header(h, MF_WIRE_STDOUT, s->id, (uint16_t)n, pad);
        evbuffer_add(c->out, h, 8);
        evbuffer_add_reference(c->out, chunk, n + pad, NULL, NULL);
        s->left -= n;
        if (s->left == 0) {
            uint8_t tail[32];
            uint16_t id = s->id;

            memcpy(tail, resp, resp_len);
            mf_wire_set_id(tail, id);
            mf_wire_set_id(tail + 8, id);
            evbuffer_add(c->out, tail, resp_len);
            stream_remove(c, c->rr);
            finished(c, req_state(c, id));
        } else {
            c->rr = (c->rr + 1) % c->nstreams;
        }
    }
}

static void on_linger(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_free(arg);
}

/* Half-closes and discards input for a while, so the kernel never answers with a reset. */
static void start_linger(struct conn *c)
{
    struct timeval tv = {LINGER_S, 0};

    c->lingering = true;
    shutdown(c->fd, SHUT_WR);
    event_del(c->wev);
    if (c->read_paused) {
        c->read_paused = false;
        event_add(c->rev, NULL);
    }
    c->linger = evtimer_new(base, on_linger, c);
    if (c->linger == NULL)
        die("evtimer_new failed");
    evtimer_add(c->linger, &tv);
}

/* Returns -1 when the connection was freed. */
static int flush(struct conn *c)
{
    for (int round = 0; round < 4; round++) {
        if (evbuffer_get_length(c->out) > 0 && evbuffer_write(c->out, c->fd) < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                conn_free(c);
                return -1;
            }
        }
        /* Refill from streams only when the write made room, and write again at once. */
        if (c->nstreams == 0 || evbuffer_get_length(c->out) >= HIGH_WATER / 2)
            break;
        produce(c);
    }
    size_t left = evbuffer_get_length(c->out);
    if (left >= HIGH_WATER && !c->read_paused && !c->lingering) {
        /* Backpressure: a client that does not read must not make us buffer more. */
        c->read_paused = true;
        event_del(c->rev);
    } else if (left < HIGH_WATER / 2 && c->read_paused) {
        c->read_paused = false;
        event_add(c->rev, NULL);
    }
    if (left > 0) {
        event_add(c->wev, NULL);
        return 0;
    }
    event_del(c->wev);
    if (c->closing && c->nstreams == 0 && !c->lingering)
        start_linger(c);
    return 0;
}

static int nv_len(const uint8_t *p, size_t len, size_t *off, size_t *out)
{
    if (*off >= len)
        return -1;
    if (p[*off] < 128) {
        *out = p[(*off)++];
        return 0;
    }
    if (len - *off < 4)
        return -1;
    *out = ((size_t)(p[*off] & 0x7f) << 24) | ((size_t)p[*off + 1] << 16) |
           ((size_t)p[*off + 2] << 8) | p[*off + 3];
    *off += 4;
    return 0;
}

/* [section 4.1]: each known name answered at most once, unknown names left out. */
static void get_values(struct conn *c, const uint8_t *p, size_t len)
{
    static const struct {
        const char *name;
        const char *value;
    } known[] = {
        {"FCGI_MAX_CONNS", "10000"},
        {"FCGI_MAX_REQS", "65535"},
        {"FCGI_MPXS_CONNS", "1"},
    };
    uint8_t out[8 + 128];
    size_t off = 0, o = 8;
    unsigned seen = 0;

    while (off < len) {
        size_t nl, vl;

        if (nv_len(p, len, &off, &nl) < 0 || nv_len(p, len, &off, &vl) < 0 || nl > len - off ||
            vl > len - off - nl)
            break;
        for (unsigned k = 0; k < 3; k++) {
            size_t kl = strlen(known[k].name);

            if (!(seen & (1u << k)) && nl == kl && memcmp(p + off, known[k].name, kl) == 0) {
                seen |= 1u << k;
                o += mf_wire_nv_encode(out + o, known[k].name, kl, known[k].value,
                                       strlen(known[k].value));
            }
        }
        off += nl + vl;
    }
    uint8_t pad = mf_wire_padding(o - 8);
    mf_wire_header(out, MF_WIRE_GET_VALUES_RESULT, 0, (uint16_t)(o - 8), pad);
    memset(out + o, 0, pad);
    evbuffer_add(c->out, out, o + pad);
}

/*
 * Acts on one record. content is NULL for types whose content does not matter here; the
 * caller discards it. Returns -1 on a protocol error that ends the connection.
 */
static int on_record(struct conn *c, const uint8_t *h, const uint8_t *content)
{
    uint8_t type = h[1];
    uint16_t id = (uint16_t)(h[2] << 8 | h[3]);
    size_t clen = (size_t)h[4] << 8 | h[5];
    uint8_t *st;

    if (id == 0) {
        if (type == MF_WIRE_GET_VALUES) {
            get_values(c, content, clen);
        } else {
            uint8_t rec[16] = {0};

            mf_wire_header(rec, MF_WIRE_UNKNOWN_TYPE, 0, 8, 0);
            rec[8] = type;
            evbuffer_add(c->out, rec, sizeof(rec));
        }
        return 0;
    }
    st = req_state(c, id);
    switch (type) {
    case MF_WIRE_BEGIN_REQUEST: {
        uint16_t role = (uint16_t)(content[0] << 8 | content[1]);

        if (*st & R_ACTIVE)
            return -1;
        if (role < MF_WIRE_RESPONDER || role > MF_WIRE_FILTER) {
            add_end(c->out, id, MF_WIRE_UNKNOWN_ROLE);
            if (!(content[2] & MF_WIRE_KEEP_CONN))
                c->closing = true;
            return 0;
        }
        *st = R_ACTIVE | ((content[2] & MF_WIRE_KEEP_CONN) ? R_KEEP : 0);
        return 0;
    }
    case MF_WIRE_ABORT_REQUEST:
        if (!(*st & R_ACTIVE))
            return 0;
        if (*st & R_STREAMING) {
            for (size_t i = 0; i < c->nstreams; i++)
                if (c->streams[i].id == id) {
                    stream_remove(c, i);
                    /* Close its STDOUT stream before END_REQUEST [section 3.3]. */
                    uint8_t h0[8];
                    mf_wire_header(h0, MF_WIRE_STDOUT, id, 0, 0);
                    evbuffer_add(c->out, h0, 8);
                    break;
                }
        }
        add_end(c->out, id, MF_WIRE_REQUEST_COMPLETE);
        finished(c, st);
        return 0;
    case MF_WIRE_PARAMS:
        if ((*st & (R_ACTIVE | R_PARAMS_DONE)) != R_ACTIVE || clen > 0)
            return 0;
        *st |= R_PARAMS_DONE;
        if (!opt.read_body)
            answer(c, id, st);
        return 0;
    case MF_WIRE_STDIN:
        if ((*st & (R_ACTIVE | R_PARAMS_DONE | R_STREAMING)) == (R_ACTIVE | R_PARAMS_DONE) &&
            clen == 0 && opt.read_body)
            answer(c, id, st);
        return 0;
    default:
        /* DATA, and records for requests already answered: nothing to do. */
        return 0;
    }
}

/* BEGIN_REQUEST and GET_VALUES are the only records whose content matters. */
static bool needs_content(const uint8_t *h)
{
    return h[1] == MF_WIRE_BEGIN_REQUEST || (h[1] == MF_WIRE_GET_VALUES && h[2] == 0 && h[3] == 0);
}

static int check_header(const uint8_t *h)
{
    if (h[0] != MF_WIRE_VERSION)
        return -1; /* never resynchronise a broken stream: close it */
    if (h[1] == MF_WIRE_BEGIN_REQUEST && ((size_t)h[4] << 8 | h[5]) < 8)
        return -1;
    return 0;
}

/* Parses the bytes of one read in place. Returns -1 on a protocol error. */
static int feed(struct conn *c, const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n;

    while (p < end) {
        size_t avail = (size_t)(end - p);

        if (c->skip > 0) {
            size_t k = c->skip < avail ? c->skip : avail;

            p += k;
            c->skip -= k;
            continue;
        }
        size_t have = evbuffer_get_length(c->partial);
        if (have == 0 && avail >= 8) {
            size_t total = 8 + ((size_t)p[4] << 8 | p[5]) + p[6];

            if (check_header(p) < 0)
                return -1;
            if (!needs_content(p)) {
                if (on_record(c, p, NULL) < 0)
                    return -1;
                p += 8;
                c->skip = total - 8;
                continue;
            }
            if (avail >= total) {
                if (on_record(c, p, p + 8) < 0)
                    return -1;
                p += total;
                continue;
            }
        }
        /* A record cut by the end of this read: keep what is needed of it. */
        if (have < 8) {
            size_t k = 8 - have < avail ? 8 - have : avail;

            evbuffer_add(c->partial, p, k);
            p += k;
            if (have + k < 8)
                break;
            have += k;
            avail -= k;
        }
        uint8_t h[8];
        evbuffer_copyout(c->partial, h, 8);
        if (check_header(h) < 0)
            return -1;
        size_t total = 8 + ((size_t)h[4] << 8 | h[5]) + h[6];
        if (!needs_content(h)) {
            evbuffer_drain(c->partial, have);
            if (on_record(c, h, NULL) < 0)
                return -1;
            c->skip = total - 8;
            continue;
        }
        size_t k = total - have < avail ? total - have : avail;
        evbuffer_add(c->partial, p, k);
        p += k;
        if (have + k < total)
            break;
        const uint8_t *rec = evbuffer_pullup(c->partial, (ev_ssize_t)total);
        int rc = on_record(c, rec, rec + 8);
        evbuffer_drain(c->partial, total);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    ssize_t n;

    (void)what;
    n = read(fd, rbuf, sizeof(rbuf));
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        conn_free(c);
        return;
    }
    if (n < 0 || c->lingering || c->closing)
        return; /* nothing to do, or input after the last request: discarded */
    if (feed(c, rbuf, (size_t)n) < 0) {
        conn_free(c);
        return;
    }
    produce(c);
    flush(c);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    (void)fd;
    (void)what;
    produce(c);
    flush(c);
}

static void on_accept_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    event_add(accept_ev, NULL);
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    (void)what;
    (void)arg;
    /*
     * With --procs every process wakes for each connection; one that accepted a whole
     * batch would take all of a burst, so then each takes one per wake-up and the idler
     * processes get their share.
     */
    int batch = opt.procs > 1 ? 1 : ACCEPT_BATCH;

    for (int i = 0; i < batch; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC), one = 1;
        struct conn *c;

        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: pause accepting instead of spinning on the error. */
                struct timeval tv = {0, 100000};

                event_del(accept_ev);
                evtimer_add(accept_retry_ev, &tv);
            }
            return;
        }
        if (listen_inet)
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        c = calloc(1, sizeof(*c));
        if (c == NULL)
            die("out of memory");
        c->fd = fd;
        c->next = conns;
        if (conns)
            conns->prev = c;
        conns = c;
        c->out = evbuffer_new();
        c->partial = evbuffer_new();
        c->rev = event_new(base, fd, EV_READ | EV_PERSIST, on_read, c);
        c->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, on_write, c);
        if (c->out == NULL || c->partial == NULL || c->rev == NULL || c->wev == NULL)
            die("out of memory");
        event_add(c->rev, NULL);
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    (void)arg;
    event_base_loopbreak(base);
}

static void serve(void)
{
    struct event *sigterm, *sigint;

    base = event_base_new();
    if (base == NULL)
        die("event_base_new failed");
    accept_ev = event_new(base, listen_fd, EV_READ | EV_PERSIST, on_accept, NULL);
    accept_retry_ev = evtimer_new(base, on_accept_retry, NULL);
    sigterm = evsignal_new(base, SIGTERM, on_signal, NULL);
    sigint = evsignal_new(base, SIGINT, on_signal, NULL);
    if (accept_ev == NULL || accept_retry_ev == NULL || sigterm == NULL || sigint == NULL)
        die("event_new failed");
    event_add(accept_ev, NULL);
    event_add(sigterm, NULL);
    event_add(sigint, NULL);
    event_base_dispatch(base);
    fprintf(stderr, "mf-peer-libevent[%d]: served %llu requests\n", (int)getpid(), served);

    /* Freed so that a sanitizer build reports real leaks only. */
    while (conns)
        conn_free(conns);
    event_free(accept_ev);
    event_free(accept_retry_ev);
    event_free(sigterm);
    event_free(sigint);
    event_base_free(base);
    free(resp);
    free(resp_hdr);
    free(stream_head);
    free(chunk);
}

static volatile sig_atomic_t parent_stop;

static void on_parent_signal(int sig)
{
    (void)sig;
    parent_stop = 1;
}

/* --procs: children share the listening socket; the parent only supervises them. */
static void run_procs(void)
{
    pid_t *pids = xmalloc((size_t)opt.procs * sizeof(*pids));
    pid_t parent = getpid();
    struct sigaction sa;
    int alive = 0;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_parent_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    for (int i = 0; i < opt.procs; i++) {
        pids[i] = fork();
        if (pids[i] < 0)
            die("fork failed");
        if (pids[i] == 0) {
            /* A supervisor killed with SIGKILL must not leave workers behind. */
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() != parent)
                _exit(0);
            signal(SIGTERM, SIG_DFL);
            signal(SIGINT, SIG_DFL);
            serve();
            _exit(0);
        }
        alive++;
    }
    while (alive > 0) {
        int status;
        pid_t pid = waitpid(-1, &status, 0);

        if (pid > 0) {
            alive--;
            continue;
        }
        if (errno != EINTR)
            break;
        if (parent_stop) {
            for (int i = 0; i < opt.procs; i++)
                kill(pids[i], SIGTERM);
            parent_stop = 0;
        }
    }
    free(pids);
}

static void usage(FILE *f)
{
    fputs("usage: mf-peer-libevent --listen ADDR [options]\n"
          "  --listen ADDR      host:port, [v6]:port or unix:/path\n"
          "  --body-size N      answer with N body bytes instead of \"Hello, world!\\n\"\n"
          "  --stream-mib N     answer with N MiB streamed in 64 KiB records, as fast as the\n"
          "                     client reads (output backpressure)\n"
          "  --read-body        answer once the whole STDIN has arrived (default: once PARAMS\n"
          "                     has, discarding STDIN)\n"
          "  --procs N          fork N processes sharing the listening socket (default 1)\n"
          "  -h, --help\n",
          f);
}

static long long parse_num(const char *s, const char *what, long long max)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 0 || v > max) {
        fprintf(stderr, "mf-peer-libevent: bad %s '%s'\n", what, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"body-size", required_argument, NULL, 'b'},
        {"stream-mib", required_argument, NULL, 's'},
        {"read-body", no_argument, NULL, 'r'},
        {"procs", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    mf_netaddr_t addr;
    char err[160];
    int ch;

    while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'l': opt.listen = optarg; break;
        case 'b': opt.body_size = parse_num(optarg, "--body-size", 1LL << 30); break;
        case 's':
            opt.stream_bytes = (unsigned long long)parse_num(optarg, "--stream-mib", 1 << 20) << 20;
            break;
        case 'r': opt.read_body = true; break;
        case 'p':
            opt.procs = (int)parse_num(optarg, "--procs", 256);
            if (opt.procs < 1)
                die("--procs must be at least 1");
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc || opt.listen == NULL) {
        usage(stderr);
        return 2;
    }
    if (mf_netaddr_parse(opt.listen, &addr, err, sizeof(err)) < 0) {
        fprintf(stderr, "mf-peer-libevent: --listen: %s\n", err);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    build_templates();
    listen_fd = mf_netaddr_listen(&addr, 4096);
    if (listen_fd < 0) {
        fprintf(stderr, "mf-peer-libevent: cannot listen on %s: %s\n", opt.listen, strerror(errno));
        return 1;
    }
    listen_inet = mf_netaddr_is_inet(&addr);
    if (opt.procs == 1)
        serve();
    else
        run_procs();
    return 0;
}
