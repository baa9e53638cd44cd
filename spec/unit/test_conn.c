/*
 * Unit tests of src/conn.c: the connection's input loop and output, through the real worker
 * and without Lua. Each test makes a worker (mf_ffi_worker_new), connects over a socketpair
 * (mf_ffi_worker_pair), writes FastCGI bytes on the client end and plays the handler in C with
 * the mf_ffi_req_* functions, as lua/moonfcgi/runtime.lua would. What comes back is decoded
 * by a record reader written here, independent of src/record.c.
 */
#include "conn.h"
#include "ffi.h"
#include "log.h"
#include "record.h"
#include "request.h"
#include "worker.h"
#include "unit.h"

#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/*
 * The wall clock, as this process sees it, is moved by wall_step seconds: these definitions
 * take the place of libc's for the core and for libevent, so a test can step the wall clock
 * as an administrator or NTP would, without touching the monotonic clock.
 */
static time_t wall_step;

__attribute__((visibility("default"))) int clock_gettime(clockid_t id, struct timespec *ts)
{
    int rc = (int)syscall(SYS_clock_gettime, id, ts);

    if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE))
        ts->tv_sec += wall_step;
    return rc;
}

__attribute__((visibility("default"))) int gettimeofday(struct timeval *tv, void *tz)
{
    int rc = (int)syscall(SYS_gettimeofday, tv, tz);

    if (rc == 0)
        tv->tv_sec += wall_step;
    return rc;
}

/* Byte strings */

typedef struct bytes {
    uint8_t *p;
    size_t len, cap;
} bytes_t;

static void b_put(bytes_t *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p)
            abort();
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void b_str(bytes_t *b, const char *s)
{
    b_put(b, s, strlen(s));
}

static void b_free(bytes_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static int b_eq(const bytes_t *a, const bytes_t *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
}

static int b_starts(const bytes_t *b, const char *s)
{
    size_t n = strlen(s);
    return b->len >= n && memcmp(b->p, s, n) == 0;
}

static int b_contains(const bytes_t *b, const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i + n <= b->len; i++)
        if (memcmp(b->p + i, s, n) == 0)
            return 1;
    return 0;
}

/* What a web server sends */

/* One record with explicit padding and reserved byte; pad_byte fills the padding. */
static void put_record_ex(bytes_t *b, int version, int type, int id, const void *content,
                          size_t len, int padding, uint8_t pad_byte, uint8_t reserved)
{
    uint8_t h[8] = {(uint8_t)version,    (uint8_t)type, (uint8_t)(id >> 8), (uint8_t)id,
                    (uint8_t)(len >> 8), (uint8_t)len,  (uint8_t)padding,   reserved};

    b_put(b, h, 8);
    b_put(b, content, len);
    for (int i = 0; i < padding; i++)
        b_put(b, &pad_byte, 1);
}

static void put_record(bytes_t *b, int type, int id, const void *content, size_t len)
{
    put_record_ex(b, 1, type, id, content, len, (int)((8 - (len & 7)) & 7), 0, 0);
}

static void put_begin(bytes_t *b, int id, int role, int flags)
{
    uint8_t body[8] = {(uint8_t)(role >> 8), (uint8_t)role, (uint8_t)flags, 0, 0, 0, 0, 0};
    put_record(b, MF_BEGIN_REQUEST, id, body, 8);
}

static void put_length(bytes_t *b, size_t n)
{
    if (n < 128) {
        uint8_t c = (uint8_t)n;
        b_put(b, &c, 1);
    } else {
        uint8_t c[4] = {(uint8_t)((n >> 24) | 0x80), (uint8_t)(n >> 16), (uint8_t)(n >> 8),
                        (uint8_t)n};
        b_put(b, c, 4);
    }
}

static void put_pair(bytes_t *b, const char *name, const char *value)
{
    put_length(b, strlen(name));
    put_length(b, strlen(value));
    b_str(b, name);
    b_str(b, value);
}

/* A stream: the data in records of at most chunk bytes, then the empty record. */
static void put_stream(bytes_t *b, int type, int id, const void *data, size_t len, size_t chunk)
{
    const uint8_t *p = data;

    for (size_t off = 0; off < len; off += chunk)
        put_record(b, type, id, p + off, len - off < chunk ? len - off : chunk);
    put_record(b, type, id, NULL, 0);
}

/* A whole request: BEGIN, params from NULL-terminated name/value strings, STDIN. */
static void put_request(bytes_t *b, int id, int role, int flags, const char *stdin_data, ...)
{
    bytes_t params = {0};
    va_list ap;
    const char *name;

    va_start(ap, stdin_data);
    while ((name = va_arg(ap, const char *)) != NULL)
        put_pair(&params, name, va_arg(ap, const char *));
    va_end(ap);
    put_begin(b, id, role, flags);
    put_stream(b, MF_PARAMS, id, params.p, params.len, 65528);
    if (stdin_data)
        put_stream(b, MF_STDIN, id, stdin_data, strlen(stdin_data), 65528);
    b_free(&params);
}

/* What the application answers */

typedef struct rec {
    uint8_t version, type;
    uint16_t id;
    uint16_t clen;
    uint8_t plen;
    const uint8_t *content;
} rec_t;

typedef struct resp {
    bytes_t out, err;
    int ends;         /* END_REQUEST records */
    int after_end;    /* records for the id after its END_REQUEST */
    int stdout_empty; /* empty STDOUT records (the stream's end) */
    uint32_t app_status;
    int protocol_status;
} resp_t;

static void resp_free(resp_t *r)
{
    b_free(&r->out);
    b_free(&r->err);
}

/*
 * Decodes every record of what the client read and checks what we emit: version 1, content of
 * at most 65528 bytes, content + padding a multiple of 8 and at most 65535, whole records.
 * Returns the number of records; they are in *out (free it).
 */
static size_t decode(const bytes_t *in, rec_t **out)
{
    size_t off = 0, n = 0, cap = 16;
    rec_t *recs = malloc(cap * sizeof *recs);

    while (in->len - off >= 8) {
        const uint8_t *h = in->p + off;
        rec_t r = {h[0], h[1], (uint16_t)(h[2] << 8 | h[3]), (uint16_t)(h[4] << 8 | h[5]),
                   h[6], h + 8};
        if (in->len - off < 8u + r.clen + r.plen)
            break;
        CHECK_EQ(r.version, 1);
        CHECK(r.clen <= MF_OUT_CONTENT_MAX);
        CHECK(r.clen + r.plen <= 65535);
        CHECK_EQ((r.clen + r.plen) % 8, 0);
        CHECK_EQ(h[7], 0);
        if (n == cap)
            recs = realloc(recs, (cap *= 2) * sizeof *recs);
        recs[n++] = r;
        off += 8u + r.clen + r.plen;
    }
    CHECK_EQ(off, in->len); /* nothing but whole records */
    *out = recs;
    return n;
}

/* Collects the output of one request id. */
static void collect(const bytes_t *in, uint16_t id, resp_t *r)
{
    rec_t *recs;
    size_t n = decode(in, &recs);

    memset(r, 0, sizeof *r);
    r->protocol_status = -1;
    for (size_t i = 0; i < n; i++) {
        if (recs[i].id != id)
            continue;
        if (r->ends)
            r->after_end++;
        switch (recs[i].type) {
        case MF_STDOUT:
            if (recs[i].clen == 0)
                r->stdout_empty++;
            b_put(&r->out, recs[i].content, recs[i].clen);
            break;
        case MF_STDERR: b_put(&r->err, recs[i].content, recs[i].clen); break;
        case MF_END_REQUEST: {
            const uint8_t *c = recs[i].content;
            CHECK_EQ(recs[i].clen, 8);
            r->ends++;
            r->app_status =
                (uint32_t)c[0] << 24 | (uint32_t)c[1] << 16 | (uint32_t)c[2] << 8 | c[3];
            r->protocol_status = c[4];
            CHECK(c[5] == 0 && c[6] == 0 && c[7] == 0);
            break;
        }
        default: CHECK(!"unexpected record type for a request");
        }
    }
    free(recs);
}

/* Counts the records of a type (any id). */
static int count_type(const bytes_t *in, int type)
{
    rec_t *recs;
    size_t n = decode(in, &recs);
    int k = 0;

    for (size_t i = 0; i < n; i++)
        k += recs[i].type == type;
    free(recs);
    return k;
}

/* The harness: one worker, its clients, the events and an application played in C */

#define MAX_CLIENTS 8
#define MAX_EVENTS  4096
#define MAX_HREQS   256

typedef struct client {
    int fd;
    int paused; /* the web server does not read */
    int eof;
    bytes_t in;
} client_t;

/* One request as the C "application" sees it. */
typedef struct hreq {
    mf_request_t *r;
    uint32_t slot, serial;
    uint16_t id;
    uint8_t role;
    int state; /* 0 reading, 1 writing, 2 done */
    bytes_t in[2];
    int eof[2];
    size_t body_left, chunk;
    uint8_t fill;
    int aborted;
} hreq_t;

static mf_worker_t *W;
static client_t clients[MAX_CLIENTS];
static int nclients;
static mf_event_t events[MAX_EVENTS];
static int nevents;
static int auto_app = 1; /* NEW events start the echo application */
static hreq_t hreqs[MAX_HREQS];
static int nhreqs;

static void setup_opts(mf_ffi_options_t *o)
{
    o->max_conns = 77;
    o->log_level = MF_LOG_ERROR;
    W = mf_ffi_worker_new(o);
    if (!W)
        abort();
    mf_ffi_worker_set_roles(W, 0xe);
    nclients = 0;
    nevents = 0;
    nhreqs = 0;
    auto_app = 1;
}

static void setup_with(unsigned max_reqs, size_t max_params)
{
    mf_ffi_options_t o;

    memset(&o, 0, sizeof o);
    o.max_reqs = max_reqs;
    o.max_params = max_params;
    setup_opts(&o);
}

static void setup(void)
{
    setup_with(0, 0);
}

static client_t *connect_client(void)
{
    client_t *cl = &clients[nclients];
    int fd = -1;

    if (nclients == MAX_CLIENTS || mf_ffi_worker_pair(W, &fd) != 0)
        abort();
    memset(cl, 0, sizeof *cl);
    cl->fd = fd;
    nclients++;
    return cl;
}

static void close_client(client_t *cl)
{
    if (cl->fd >= 0)
        close(cl->fd);
    cl->fd = -1;
}

static void param(mf_request_t *r, const char *name, char *out, size_t cap)
{
    const char *v;
    size_t n;

    out[0] = '\0';
    if (mf_ffi_req_param(r, name, strlen(name), &v, &n) == MF_OK) {
        if (n >= cap)
            n = cap - 1;
        memcpy(out, v, n);
        out[n] = '\0';
    }
}

static void hreq_start(const mf_event_t *e)
{
    hreq_t *h;
    char v[64];

    /* A finished request's place is reused. */
    for (h = hreqs; h < hreqs + nhreqs && h->state != 2; h++)
        ;
    if (h == hreqs + MAX_HREQS)
        abort();
    if (h == hreqs + nhreqs)
        nhreqs++;
    b_free(&h->in[0]);
    b_free(&h->in[1]);
    memset(h, 0, sizeof *h);
    h->r = e->req;
    h->slot = e->slot;
    h->serial = e->serial;
    h->id = e->id;
    h->role = e->role;
    param(h->r, "BODY_SIZE", v, sizeof v);
    h->body_left = (size_t)strtoul(v, NULL, 10);
    param(h->r, "CHUNK", v, sizeof v);
    h->chunk = (size_t)strtoul(v, NULL, 10);
    param(h->r, "FILL", v, sizeof v);
    h->fill = v[0] ? (uint8_t)v[0] : 'x';
    /* An authorizer reads no stdin (Apache's mod_authnz_fcgi sends none). */
    h->eof[0] = e->role == MF_AUTHORIZER;
    h->eof[1] = e->role != MF_FILTER;
}

/*
 * The echo application: reads STDIN (and DATA for a filter) to the end, then answers with
 * X-Id and a body that repeats what it got, or BODY_SIZE bytes of FILL written CHUNK bytes at
 * a time (one chunk per turn, each flushed so that requests' records interleave).
 */
static int hreq_run(hreq_t *h)
{
    int progress = 0;

    if (h->state == 0) {
        for (int s = 0; s < 2; s++) {
            while (!h->eof[s]) {
                const char *p;
                size_t n;
                int rc = mf_ffi_req_read(h->r, s, 0, &p, &n);
                if (rc == MF_OK) {
                    b_put(&h->in[s], p, n);
                    mf_ffi_req_consume(h->r, s, n);
                    progress = 1;
                } else if (rc == MF_EOF) {
                    h->eof[s] = 1;
                    progress = 1;
                } else if (rc == MF_ABORTED) {
                    h->aborted = 1;
                    mf_ffi_req_finish(h->r, 0, MF_FINISH_OK);
                    h->state = 2;
                    return 1;
                } else {
                    CHECK_EQ(rc, MF_WAIT);
                    return progress;
                }
            }
        }
        {
            char line[128], uri[64];
            int n;
            CHECK_EQ(mf_ffi_req_set_status(h->r, 200, NULL, 0), MF_OK);
            n = snprintf(line, sizeof line, "%u", h->id);
            CHECK_EQ(mf_ffi_req_set_header(h->r, "X-Id", 4, line, (size_t)n, 0), MF_OK);
            CHECK_EQ(mf_ffi_req_set_header(h->r, "Content-Type", 12, "text/plain", 10, 0), MF_OK);
            if (h->body_left == 0) {
                param(h->r, "REQUEST_URI", uri, sizeof uri);
                n = snprintf(line, sizeof line, "id=%u role=%u uri=%s stdin=", h->id, h->role, uri);
                mf_ffi_req_write(h->r, line, (size_t)n);
                mf_ffi_req_write(h->r, (const char *)h->in[0].p, h->in[0].len);
                mf_ffi_req_write(h->r, " data=", 6);
                mf_ffi_req_write(h->r, (const char *)h->in[1].p, h->in[1].len);
            }
        }
        h->state = 1;
        progress = 1;
    }
    if (h->state == 1) {
        if (h->body_left > 0) {
            size_t n = h->chunk && h->chunk < h->body_left ? h->chunk : h->body_left;
            char *buf = malloc(n);
            int rc;
            memset(buf, h->fill, n);
            rc = mf_ffi_req_write(h->r, buf, n);
            CHECK(rc == MF_OK || rc == MF_WAIT || rc == MF_ABORTED);
            free(buf);
            h->body_left -= n;
            if (h->chunk)
                mf_ffi_req_flush(h->r);
            progress = 1;
            if (h->body_left > 0)
                return progress;
        }
        mf_ffi_req_finish(h->r, 0, MF_FINISH_OK);
        h->state = 2;
        progress = 1;
    }
    return progress;
}

/* One turn: poll, take the events, run the application, write, read what the clients got. */
static int step_for(int timeout_ms)
{
    mf_event_t *ev;
    int n = mf_ffi_worker_poll(W, timeout_ms, &ev), progress = n > 0;

    for (int i = 0; i < n; i++) {
        if (nevents < MAX_EVENTS)
            events[nevents++] = ev[i];
        if (ev[i].type == MF_EV_NEW && auto_app)
            hreq_start(&ev[i]);
    }
    for (int i = 0; i < nhreqs; i++)
        if (hreqs[i].state != 2)
            progress |= hreq_run(&hreqs[i]);
    mf_ffi_worker_flush(W);
    for (int i = 0; i < nclients; i++) {
        client_t *cl = &clients[i];
        uint8_t buf[65536];
        ssize_t k;
        if (cl->fd < 0 || cl->paused || cl->eof)
            continue;
        while ((k = read(cl->fd, buf, sizeof buf)) > 0) {
            b_put(&cl->in, buf, (size_t)k);
            progress = 1;
        }
        if (k == 0) {
            cl->eof = 1;
            progress = 1;
        }
    }
    return progress;
}

static int step(void)
{
    return step_for(0);
}

/* Turns for a while, sleeping in the poll: for the timeouts, which the worker sweeps. */
static void run_for(double seconds)
{
    struct timespec t0, t;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        step_for(5);
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9 < seconds);
}

/* Turns until nothing happens for a few turns in a row. */
static void settle(void)
{
    int idle = 0;

    for (int i = 0; i < 100000 && idle < 4; i++)
        idle = step() ? 0 : idle + 1;
}

/* Writes all of it, turning the worker while the socket is full. */
static void send_bytes(client_t *cl, const void *p, size_t len)
{
    const uint8_t *b = p;
    int spins = 0;

    while (len > 0 && spins < 100000) {
        ssize_t k = write(cl->fd, b, len);
        if (k > 0) {
            b += k;
            len -= (size_t)k;
            continue;
        }
        if (k < 0 && errno != EAGAIN && errno != EINTR)
            break;
        step();
        spins++;
    }
    CHECK_EQ(len, 0);
}

static void send_b(client_t *cl, const bytes_t *b)
{
    send_bytes(cl, b->p, b->len);
}

static int count_events(int type)
{
    int k = 0;
    for (int i = 0; i < nevents; i++)
        k += events[i].type == type;
    return k;
}

/* The n-th NEW event (0-based), or NULL. */
static mf_event_t *new_event(int n)
{
    for (int i = 0; i < nevents; i++)
        if (events[i].type == MF_EV_NEW && n-- == 0)
            return &events[i];
    return NULL;
}

/* Closes every client and checks that the worker lets go of every connection and request. */
static void teardown(void)
{
    for (int i = 0; i < nclients; i++)
        close_client(&clients[i]);
    settle();
    CHECK_EQ(mf_ffi_worker_connections(W), 0);
    CHECK_EQ(mf_ffi_worker_requests(W), 0);
    for (int i = 0; i < nclients; i++)
        b_free(&clients[i].in);
    for (int i = 0; i < nhreqs; i++) {
        b_free(&hreqs[i].in[0]);
        b_free(&hreqs[i].in[1]);
    }
    mf_ffi_worker_free(W);
    W = NULL;
}

/* The request used by the split tests: params and stdin each in two records. */
static void split_request(bytes_t *b)
{
    bytes_t params = {0};
    char uri[200];

    memset(uri, 'u', sizeof uri);
    uri[0] = '/';
    uri[sizeof uri - 1] = '\0';
    put_pair(&params, "REQUEST_URI", uri); /* a 4-byte value length */
    put_pair(&params, "REQUEST_METHOD", "POST");
    put_pair(&params, "CONTENT_LENGTH", "11");
    put_begin(b, 1, MF_RESPONDER, MF_KEEP_CONN);
    /* The first pair straddles the two records. */
    put_record(b, MF_PARAMS, 1, params.p, 100);
    put_record(b, MF_PARAMS, 1, params.p + 100, params.len - 100);
    put_record(b, MF_PARAMS, 1, NULL, 0);
    put_record(b, MF_STDIN, 1, "hello ", 6);
    put_record(b, MF_STDIN, 1, "world", 5);
    put_record(b, MF_STDIN, 1, NULL, 0);
    b_free(&params);
}

/* Sends req in the given pieces on a new connection; returns what came back. */
static void run_split(const bytes_t *req, const size_t *cuts, int ncuts, bytes_t *answer)
{
    client_t *cl = connect_client();
    size_t from = 0;

    for (int i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : req->len;
        send_bytes(cl, req->p + from, to - from);
        settle();
        from = to;
    }
    *answer = cl->in;
    cl->in = (bytes_t){0};
    close_client(cl);
    settle();
}

static void every_split_gives_the_same_response(void)
{
    bytes_t req = {0}, ref, got;
    resp_t r;
    int mismatches = 0;

    setup();
    split_request(&req);
    run_split(&req, NULL, 0, &ref);
    collect(&ref, 1, &r);
    CHECK_EQ(r.ends, 1);
    CHECK_EQ(r.protocol_status, MF_REQUEST_COMPLETE);
    CHECK(b_starts(&r.out, "Status: 200 OK\r\n"));
    CHECK(b_contains(&r.out, "X-Id: 1\r\n"));
    CHECK(b_contains(&r.out, "\r\n\r\nid=1 role=1 uri=/uuu"));
    CHECK(b_contains(&r.out, "stdin=hello world data="));
    resp_free(&r);

    /* One byte at a time. */
    {
        size_t *cuts = malloc(req.len * sizeof *cuts);
        for (size_t i = 1; i < req.len; i++)
            cuts[i - 1] = i;
        run_split(&req, cuts, (int)req.len - 1, &got);
        CHECK(b_eq(&got, &ref));
        b_free(&got);
        free(cuts);
    }
    /* Every split point into two writes; each connection is closed and freed after. */
    for (size_t cut = 1; cut < req.len; cut++) {
        nclients = 0;
        run_split(&req, &cut, 1, &got);
        mismatches += !b_eq(&got, &ref);
        b_free(&got);
        CHECK_EQ(mf_ffi_worker_connections(W), 0);
    }
    CHECK_EQ(mismatches, 0);
    CHECK_EQ(count_events(MF_EV_NEW), (int)req.len + 1);
    b_free(&ref);
    b_free(&req);
    nclients = 0;
    teardown();
}

static void filter_one_byte_at_a_time(void)
{
    bytes_t req = {0}, ref, got;
    size_t *cuts;
    resp_t r;

    setup();
    put_begin(&req, 3, MF_FILTER, 0);
    {
        bytes_t params = {0};
        put_pair(&params, "FCGI_DATA_LENGTH", "4");
        put_pair(&params, "FCGI_DATA_LAST_MOD", "0");
        put_stream(&req, MF_PARAMS, 3, params.p, params.len, 7);
        b_free(&params);
    }
    put_stream(&req, MF_STDIN, 3, "in", 2, 1);
    put_stream(&req, MF_DATA, 3, "file", 4, 3);
    run_split(&req, NULL, 0, &ref);
    collect(&ref, 3, &r);
    CHECK_EQ(r.ends, 1);
    CHECK(b_contains(&r.out, "id=3 role=3 uri= stdin=in data=file"));
    resp_free(&r);
    cuts = malloc(req.len * sizeof *cuts);
    for (size_t i = 1; i < req.len; i++)
        cuts[i - 1] = i;
    run_split(&req, cuts, (int)req.len - 1, &got);
    CHECK(b_eq(&got, &ref));
    free(cuts);
    b_free(&got);
    b_free(&ref);
    b_free(&req);
    teardown();
}

/* nginx sends a params record of up to 65535 bytes padded to 8 (php-src #12982). */
static void long_params_record_with_255_padding(void)
{
    bytes_t req = {0}, params = {0};
    client_t *cl;
    resp_t r;
    char *uri = malloc(65535);
    size_t vlen = 65535 - 1 - 4 - strlen("REQUEST_URI");
    mf_event_t *e;

    setup();
    cl = connect_client();
    auto_app = 0;
    memset(uri, 'a', vlen);
    uri[0] = '/';
    uri[vlen] = '\0';
    put_pair(&params, "REQUEST_URI", uri);
    CHECK_EQ(params.len, 65535);
    put_begin(&req, 1, MF_RESPONDER, 0);
    put_record_ex(&req, 1, MF_PARAMS, 1, params.p, params.len, 255, 0xcc, 0xcc);
    put_record(&req, MF_PARAMS, 1, NULL, 0);
    put_record(&req, MF_STDIN, 1, NULL, 0);
    send_b(cl, &req);
    settle();
    e = new_event(0);
    CHECK(e != NULL);
    if (e) {
        const char *v;
        size_t n;
        CHECK_EQ(mf_ffi_req_param(e->req, "REQUEST_URI", 11, &v, &n), MF_OK);
        CHECK_EQ(n, vlen);
        CHECK(n == vlen && memcmp(v, uri, vlen) == 0);
        CHECK_EQ(mf_ffi_req_param_count(e->req), 1);
        mf_ffi_req_write(e->req, "ok", 2);
        mf_ffi_req_finish(e->req, 7, MF_FINISH_OK);
    }
    settle();
    collect(&cl->in, 1, &r);
    CHECK_EQ(r.ends, 1);
    CHECK_EQ(r.app_status, 7);
    CHECK(b_starts(&r.out, "Status: 200 OK\r\n"));
    CHECK(cl->eof); /* no KEEP_CONN: we close after the request */
    resp_free(&r);
    free(uri);
    b_free(&params);
    b_free(&req);
    teardown();
}

/* HAProxy multiplexes: 50 requests interleaved record by record on one connection. */
static void multiplexed_requests(void)
{
    enum { N = 50, NREC = 6 };
    bytes_t recs[N + 1][NREC], req = {0};
    client_t *cl;
    int bad = 0;

    setup();
    cl = connect_client();
    memset(recs, 0, sizeof recs);
    for (int id = 1; id <= N; id++) {
        bytes_t params = {0};
        char size[16], fill[2] = {(char)('A' + id % 26), 0};
        snprintf(size, sizeof size, "%d", id * 1700); /* up to 85000: several records */
        put_pair(&params, "BODY_SIZE", size);
        put_pair(&params, "CHUNK", "9000");
        put_pair(&params, "FILL", fill);
        put_begin(&recs[id][0], id, MF_RESPONDER, MF_KEEP_CONN);
        put_record(&recs[id][1], MF_PARAMS, id, params.p, 5);
        put_record(&recs[id][2], MF_PARAMS, id, params.p + 5, params.len - 5);
        put_record(&recs[id][3], MF_PARAMS, id, NULL, 0);
        put_record(&recs[id][4], MF_STDIN, id, "x", 1);
        put_record(&recs[id][5], MF_STDIN, id, NULL, 0);
        b_free(&params);
    }
    for (int k = 0; k < NREC; k++)
        for (int id = 1; id <= N; id++)
            b_put(&req, recs[id][k].p, recs[id][k].len);
    send_b(cl, &req);
    settle();
    CHECK_EQ(count_events(MF_EV_NEW), N);
    for (int id = 1; id <= N; id++) {
        resp_t r;
        size_t body = (size_t)id * 1700;
        const uint8_t *p;
        collect(&cl->in, (uint16_t)id, &r);
        CHECK_EQ(r.ends, 1);
        CHECK_EQ(r.after_end, 0);
        CHECK_EQ(r.protocol_status, MF_REQUEST_COMPLETE);
        CHECK_EQ(r.stdout_empty, 1);
        CHECK(b_starts(&r.out, "Status: 200 OK\r\n"));
        CHECK(r.out.len > body);
        p = r.out.p + r.out.len - body;
        CHECK(p >= r.out.p + 4 && memcmp(p - 4, "\r\n\r\n", 4) == 0);
        for (size_t i = 0; i < body && p >= r.out.p; i++)
            if (p[i] != 'A' + id % 26) {
                bad++;
                break;
            }
        resp_free(&r);
        for (int k = 0; k < NREC; k++)
            b_free(&recs[id][k]);
    }
    CHECK_EQ(bad, 0);
    /* The answers were interleaved record by record, not one request after the other. */
    {
        rec_t *rs;
        size_t n = decode(&cl->in, &rs);
        int switches = 0;
        for (size_t i = 1; i < n; i++)
            switches += rs[i].id != rs[i - 1].id;
        CHECK(switches > N);
        free(rs);
    }
    CHECK_EQ(mf_ffi_worker_requests(W), 0);
    CHECK_EQ(mf_ffi_worker_connections(W), 1); /* KEEP_CONN: still open */
    b_free(&req);
    teardown();
}

/* Returns the GET_VALUES_RESULT pairs as "NAME=VALUE;" in order. */
static int values_result(const bytes_t *in, char *out, size_t cap)
{
    rec_t *recs;
    size_t n = decode(in, &recs);
    int results = 0;

    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        size_t off = 0;
        mf_nv_t nv;
        if (recs[i].type != MF_GET_VALUES_RESULT)
            continue;
        results++;
        CHECK_EQ(recs[i].id, 0);
        while (mf_nv_next(recs[i].content, recs[i].clen, &off, &nv) == MF_NV_PAIR) {
            size_t l = strlen(out);
            snprintf(out + l, cap - l, "%.*s=%.*s;", (int)nv.name_len, (const char *)nv.name,
                     (int)nv.value_len, (const char *)nv.value);
        }
        CHECK_EQ(off, recs[i].clen);
    }
    free(recs);
    return results;
}

static void get_values(void)
{
    bytes_t q = {0}, req = {0};
    client_t *cl;
    char got[512];
    resp_t r;

    setup_with(33, 0);
    cl = connect_client();
    /* Each known name asked twice, an unknown one, and a 4-byte length of a small name. */
    put_pair(&q, "FCGI_MAX_CONNS", "");
    put_pair(&q, "FCGI_MAX_REQS", "");
    put_pair(&q, "FCGI_UNKNOWN", "");
    put_pair(&q, "FCGI_MAX_CONNS", "");
    b_put(&q, "\x80\x00\x00\x0f\x00", 5);
    b_str(&q, "FCGI_MPXS_CONNS");
    put_pair(&q, "FCGI_MPXS_CONNS", "");
    put_pair(&q, "FCGI_MAX_REQS", "x");
    put_record(&req, MF_GET_VALUES, 0, q.p, q.len);
    send_b(cl, &req);
    settle();
    CHECK_EQ(values_result(&cl->in, got, sizeof got), 1);
    CHECK(strcmp(got, "FCGI_MAX_CONNS=77;FCGI_MAX_REQS=33;FCGI_MPXS_CONNS=1;") == 0);
    CHECK_EQ(count_type(&cl->in, MF_GET_VALUES_RESULT), 1);
    CHECK_EQ(cl->in.len, 8 + 56u);
    CHECK_EQ(cl->eof, 0); /* PHP-FPM closed here; we keep the connection */

    /* An empty query gets an empty answer; only unknown names, too. */
    cl->in.len = 0;
    req.len = 0;
    put_record(&req, MF_GET_VALUES, 0, NULL, 0);
    q.len = 0;
    put_pair(&q, "NOPE", "");
    put_record(&req, MF_GET_VALUES, 0, q.p, q.len);
    send_b(cl, &req);
    settle();
    CHECK_EQ(values_result(&cl->in, got, sizeof got), 2);
    CHECK_EQ(got[0], '\0');

    /* The last thing in the buffer with no padding after it (32 content bytes). */
    cl->in.len = 0;
    req.len = 0;
    q.len = 0;
    put_pair(&q, "FCGI_MAX_REQS", "");
    put_pair(&q, "FCGI_MPXS_CONNS", "");
    CHECK_EQ(q.len, 32);
    put_record(&req, MF_GET_VALUES, 0, q.p, q.len);
    CHECK_EQ(req.len, 40);
    send_b(cl, &req);
    settle();
    CHECK_EQ(values_result(&cl->in, got, sizeof got), 1);
    CHECK(strcmp(got, "FCGI_MAX_REQS=33;FCGI_MPXS_CONNS=1;") == 0);

    /* After a request, as the last thing in the buffer, in the same write. */
    cl->in.len = 0;
    req.len = 0;
    put_request(&req, 1, MF_RESPONDER, MF_KEEP_CONN, "", "REQUEST_URI", "/a", NULL);
    q.len = 0;
    put_pair(&q, "FCGI_MPXS_CONNS", "");
    put_record(&req, MF_GET_VALUES, 0, q.p, q.len);
    send_b(cl, &req);
    settle();
    CHECK_EQ(values_result(&cl->in, got, sizeof got), 1);
    CHECK(strcmp(got, "FCGI_MPXS_CONNS=1;") == 0);
    collect(&cl->in, 1, &r);
    CHECK_EQ(r.ends, 1);
    resp_free(&r);

    /* A malformed tail: the names before it are still answered. */
    cl->in.len = 0;
    req.len = 0;
    q.len = 0;
    put_pair(&q, "FCGI_MAX_REQS", "");
    b_put(&q, "\x20\x00NAME", 6);
    put_record(&req, MF_GET_VALUES, 0, q.p, q.len);
    send_b(cl, &req);
    settle();
    CHECK_EQ(values_result(&cl->in, got, sizeof got), 1);
    CHECK(strcmp(got, "FCGI_MAX_REQS=33;") == 0);
    CHECK_EQ(cl->eof, 0);
    b_free(&q);
    b_free(&req);
    teardown();
}

static void unknown_management_type(void)
{
    static const int types[] = {0, 12, 100, 255, MF_END_REQUEST, MF_GET_VALUES_RESULT};
    bytes_t req = {0};
    client_t *cl;

    setup();
    cl = connect_client();
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        rec_t *recs;
        size_t n;
        cl->in.len = 0;
        req.len = 0;
        put_record_ex(&req, 1, types[i], 0, "content", 7, 9, 0xee, 0xff);
        send_b(cl, &req);
        settle();
        n = decode(&cl->in, &recs);
        CHECK_EQ(n, 1);
        if (n == 1) {
            static const uint8_t zeros[7];
            CHECK_EQ(recs[0].type, MF_UNKNOWN_TYPE);
            CHECK_EQ(recs[0].id, 0);
            CHECK_EQ(recs[0].clen, 8);
            CHECK_EQ(recs[0].content[0], types[i]);
            CHECK(memcmp(recs[0].content + 1, zeros, 7) == 0);
        }
        free(recs);
    }
    CHECK_EQ(cl->eof, 0);

    /* libfcgi: an unknown management record's content leaked into the request body. */
    cl->in.len = 0;
    req.len = 0;
    put_begin(&req, 1, MF_RESPONDER, MF_KEEP_CONN);
    put_stream(&req, MF_PARAMS, 1, NULL, 0, 1);
    put_record(&req, MF_STDIN, 1, "in", 2);
    put_record(&req, 42, 0, "LEAK", 4);
    put_record(&req, 42, 1, "LEAK", 4); /* an unknown type on the request's id, too */
    put_record(&req, MF_STDIN, 1, NULL, 0);
    send_b(cl, &req);
    settle();
    {
        resp_t r;
        collect(&cl->in, 1, &r);
        CHECK_EQ(r.ends, 1);
        CHECK(b_contains(&r.out, "stdin=in data="));
        CHECK(!b_contains(&r.out, "LEAK"));
        resp_free(&r);
    }
    b_free(&req);
    teardown();
}

/* Sends one BEGIN with a role and returns the protocol status of its END_REQUEST. */
static int role_answer(client_t *cl, int id, int role, int flags)
{
    bytes_t req = {0};
    resp_t r;
    int ps;

    cl->in.len = 0;
    put_request(&req, id, role, flags, "", "REQUEST_URI", "/r", NULL);
    send_b(cl, &req);
    settle();
    collect(&cl->in, (uint16_t)id, &r);
    CHECK_EQ(r.ends, 1);
    ps = r.ends == 1 ? r.protocol_status : -1;
    if (ps == MF_UNKNOWN_ROLE)
        CHECK_EQ(r.out.len, 0);
    resp_free(&r);
    b_free(&req);
    return ps;
}

static void unknown_role(void)
{
    client_t *cl;

    setup();
    cl = connect_client();
    CHECK_EQ(role_answer(cl, 1, 0, MF_KEEP_CONN), MF_UNKNOWN_ROLE);
    CHECK_EQ(role_answer(cl, 2, 4, MF_KEEP_CONN), MF_UNKNOWN_ROLE);
    CHECK_EQ(role_answer(cl, 3, 0xffff, MF_KEEP_CONN), MF_UNKNOWN_ROLE);
    CHECK_EQ(role_answer(cl, 4, 0x0101, MF_KEEP_CONN), MF_UNKNOWN_ROLE);
    CHECK_EQ(count_events(MF_EV_NEW), 0);
    /* The connection still serves the roles it knows. */
    CHECK_EQ(role_answer(cl, 5, MF_RESPONDER, MF_KEEP_CONN), MF_REQUEST_COMPLETE);
    CHECK_EQ(role_answer(cl, 6, MF_AUTHORIZER, MF_KEEP_CONN), MF_REQUEST_COMPLETE);
    CHECK_EQ(cl->eof, 0);
    /* Without KEEP_CONN, the refusal ends the connection. */
    CHECK_EQ(role_answer(cl, 7, 9, 0), MF_UNKNOWN_ROLE);
    CHECK_EQ(cl->eof, 1);
    CHECK_EQ(mf_ffi_worker_requests(W), 0);
    teardown();
}

static void roles_the_app_lacks(void)
{
    client_t *cl;

    setup();
    mf_ffi_worker_set_roles(W, 0x2); /* a responder only */
    cl = connect_client();
    CHECK_EQ(role_answer(cl, 1, MF_AUTHORIZER, MF_KEEP_CONN), MF_UNKNOWN_ROLE);
    CHECK_EQ(role_answer(cl, 2, MF_FILTER, MF_KEEP_CONN), MF_UNKNOWN_ROLE);
    CHECK_EQ(role_answer(cl, 3, MF_RESPONDER, MF_KEEP_CONN), MF_REQUEST_COMPLETE);
    CHECK_EQ(count_events(MF_EV_NEW), 1);
    mf_ffi_worker_set_roles(W, 0x4); /* an authorizer only */
    CHECK_EQ(role_answer(cl, 4, MF_RESPONDER, MF_KEEP_CONN), MF_UNKNOWN_ROLE);
    CHECK_EQ(role_answer(cl, 5, MF_AUTHORIZER, MF_KEEP_CONN), MF_REQUEST_COMPLETE);
    teardown();
}

/* --max-reqs 4: four requests in flight are served, the fifth is OVERLOADED. */
static void overloaded_past_max_reqs(void)
{
    bytes_t req = {0};
    client_t *cl, *cl2;
    resp_t r;

    setup_with(4, 0);
    cl = connect_client();
    cl2 = connect_client();
    /* Requests whose params never end stay in flight. */
    for (int id = 1; id <= 3; id++) {
        put_begin(&req, id, MF_RESPONDER, MF_KEEP_CONN);
        put_record(&req, MF_PARAMS, id, "\1\1ab", 4);
    }
    send_b(cl, &req);
    req.len = 0;
    put_begin(&req, 9, MF_RESPONDER, MF_KEEP_CONN); /* the 4th, on another connection */
    send_b(cl2, &req);
    settle();
    CHECK_EQ(mf_ffi_worker_requests(W), 4);
    CHECK_EQ(cl->in.len + cl2->in.len, 0);
    /* At the limit: one more is refused. */
    req.len = 0;
    put_begin(&req, 5, MF_RESPONDER, MF_KEEP_CONN);
    send_b(cl, &req);
    settle();
    collect(&cl->in, 5, &r);
    CHECK_EQ(r.ends, 1);
    CHECK_EQ(r.protocol_status, MF_OVERLOADED);
    CHECK_EQ(r.out.len, 0);
    resp_free(&r);
    CHECK_EQ(mf_ffi_worker_requests(W), 4);
    CHECK_EQ(cl->eof, 0);
    /* One ends: there is room again. */
    req.len = 0;
    put_record(&req, MF_PARAMS, 1, NULL, 0);
    put_record(&req, MF_STDIN, 1, NULL, 0);
    send_b(cl, &req);
    settle();
    CHECK_EQ(mf_ffi_worker_requests(W), 3);
    cl->in.len = 0;
    req.len = 0;
    put_request(&req, 6, MF_RESPONDER, MF_KEEP_CONN, "", NULL);
    send_b(cl, &req);
    settle();
    collect(&cl->in, 6, &r);
    CHECK_EQ(r.ends, 1);
    CHECK_EQ(r.protocol_status, MF_REQUEST_COMPLETE);
    CHECK(b_starts(&r.out, "Status: 200 OK"));
    resp_free(&r);
    b_free(&req);
    teardown();
}

/* --max-params 1000: exactly 1000 bytes of params are served, 1001 get a 431. */
static void max_params_boundary(void)
{
    bytes_t req = {0}, params = {0};
    client_t *cl;
    char value[1000];
    resp_t r;

    setup_with(0, 1000);
    cl = connect_client();
    auto_app = 0;
    for (int over = 0; over <= 1; over++) {
        size_t vlen = 994 + (size_t)over; /* 1 + 4 + 1 + vlen bytes */
        mf_event_t *e;
        memset(value, 'v', vlen);
        value[vlen] = '\0';
        params.len = 0;
        put_pair(&params, "P", value);
        CHECK_EQ(params.len, 1000u + (size_t)over);
        req.len = 0;
        cl->in.len = 0;
        nevents = 0;
        put_begin(&req, 1, MF_RESPONDER, MF_KEEP_CONN);
        /* In three records: the limit is on the sum. */
        put_record(&req, MF_PARAMS, 1, params.p, 400);
        put_record(&req, MF_PARAMS, 1, params.p + 400, 400);
        put_record(&req, MF_PARAMS, 1, params.p + 800, params.len - 800);
        put_record(&req, MF_PARAMS, 1, NULL, 0);
        put_record(&req, MF_STDIN, 1, NULL, 0);
        send_b(cl, &req);
        settle();
        e = new_event(0);
        if (!over) {
            const char *v;
            size_t n;
            CHECK(e != NULL);
            if (!e)
                continue;
            CHECK_EQ(mf_ffi_req_param(e->req, "P", 1, &v, &n), MF_OK);
            CHECK_EQ(n, vlen);
            mf_ffi_req_finish(e->req, 0, MF_FINISH_OK);
            settle();
            collect(&cl->in, 1, &r);
            CHECK(b_starts(&r.out, "Status: 200 OK\r\n"));
        } else {
            CHECK(e == NULL);
            collect(&cl->in, 1, &r);
            CHECK(b_starts(&r.out, "Status: 431 Request Header Fields Too Large\r\n"));
            CHECK(b_contains(&r.out, "\r\n\r\nrequest params too large\n"));
        }
        CHECK_EQ(r.ends, 1);
        CHECK_EQ(r.protocol_status, MF_REQUEST_COMPLETE);
        resp_free(&r);
        CHECK_EQ(mf_ffi_worker_requests(W), 0);
    }
    CHECK_EQ(cl->eof, 0);
    b_free(&params);
    b_free(&req);
    teardown();
}

static void malformed_params_get_400(void)
{
    static const char *const bad[] = {
        "\5\3ab",              /* the name runs past the end */
        "\1\1ab\200\0",        /* a 4-byte length cut short */
        "\x01",                /* the value length is missing */
        "\377\377\377\377\0x", /* a name length of 2^31 - 1 */
    };
    static const size_t lens[] = {4, 6, 1, 6};
    bytes_t req = {0};
    client_t *cl;

    setup();
    cl = connect_client();
    for (size_t i = 0; i < 4; i++) {
        resp_t r;
        cl->in.len = 0;
        req.len = 0;
        put_begin(&req, 1, MF_RESPONDER, MF_KEEP_CONN);
        put_stream(&req, MF_PARAMS, 1, bad[i], lens[i], 65528);
        put_stream(&req, MF_STDIN, 1, "body", 4, 65528);
        send_b(cl, &req);
        settle();
        collect(&cl->in, 1, &r);
        CHECK_EQ(r.ends, 1);
        CHECK(b_starts(&r.out, "Status: 400 Bad Request\r\n"));
        CHECK(b_contains(&r.out, "malformed FastCGI params"));
        resp_free(&r);
        /* The connection keeps working. */
        CHECK_EQ(role_answer(cl, 1, MF_RESPONDER, MF_KEEP_CONN), MF_REQUEST_COMPLETE);
    }
    CHECK_EQ(count_events(MF_EV_NEW), 4);
    CHECK_EQ(cl->eof, 0);
    b_free(&req);
    teardown();
}

/* A version other than 1 closes that connection and no other. */
static void bad_version_closes_only_that_connection(void)
{
    bytes_t req = {0}, part1 = {0};
    client_t *good, *bad;
    resp_t r;

    setup();
    good = connect_client();
    bad = connect_client();
    put_request(&part1, 1, MF_RESPONDER, MF_KEEP_CONN, "abc", "REQUEST_URI", "/good", NULL);
    send_bytes(good, part1.p, 20); /* the good one is mid-request */
    put_request(&req, 1, MF_RESPONDER, MF_KEEP_CONN, "", NULL);
    req.p[0] = 2; /* the BEGIN is version 2 */
    send_b(bad, &req);
    settle();
    CHECK_EQ(bad->eof, 1);
    CHECK_EQ(bad->in.len, 0);
    CHECK_EQ(mf_ffi_worker_connections(W), 1);
    send_bytes(good, part1.p + 20, part1.len - 20);
    settle();
    collect(&good->in, 1, &r);
    CHECK_EQ(r.ends, 1);
    CHECK(b_contains(&r.out, "uri=/good stdin=abc"));
    CHECK_EQ(good->eof, 0);
    resp_free(&r);

    /* A bad version after good records, with a request in flight on that connection. */
    {
        client_t *c3 = connect_client();
        req.len = 0;
        put_begin(&req, 1, MF_RESPONDER, MF_KEEP_CONN);
        put_record(&req, MF_PARAMS, 1, "\1\1ab", 4);
        put_record_ex(&req, 0, MF_STDIN, 1, NULL, 0, 0, 0, 0);
        send_b(c3, &req);
        settle();
        CHECK_EQ(c3->eof, 1);
        CHECK_EQ(mf_ffi_worker_connections(W), 1);
        CHECK_EQ(mf_ffi_worker_requests(W), 0);
    }
    /* An incomplete header with a bad version is not judged until it is whole. */
    {
        client_t *c4 = connect_client();
        send_bytes(c4, "\x00\x01\x00", 3);
        settle();
        CHECK_EQ(c4->eof, 0);
        send_bytes(c4, "\x01\x00\x00\x00\x00", 5);
        settle();
        CHECK_EQ(c4->eof, 1);
    }
    CHECK_EQ(role_answer(good, 2, MF_RESPONDER, MF_KEEP_CONN), MF_REQUEST_COMPLETE);
    b_free(&req);
    b_free(&part1);
    teardown();
}

static void begin_with_wrong_length_closes(void)
{
    static const size_t lens[] = {0, 7, 9, 16};
    uint8_t body[16] = {0, 1, 1};

    setup();
    for (size_t i = 0; i < 4; i++) {
        client_t *cl = connect_client();
        bytes_t req = {0};
        put_record(&req, MF_BEGIN_REQUEST, 1, body, lens[i]);
        send_b(cl, &req);
        settle();
        CHECK_EQ(cl->eof, 1);
        CHECK_EQ(cl->in.len, 0);
        b_free(&req);
    }
    CHECK_EQ(mf_ffi_worker_connections(W), 0);
    CHECK_EQ(mf_ffi_worker_requests(W), 0);
    teardown();
}

static void duplicate_begin_closes(void)
{
    bytes_t req = {0};
    client_t *cl;

    setup();
    cl = connect_client();
    put_begin(&req, 1, MF_RESPONDER, MF_KEEP_CONN);
    put_begin(&req, 2, MF_RESPONDER, MF_KEEP_CONN);
    put_record(&req, MF_PARAMS, 1, "\1\1ab", 4);
    send_b(cl, &req);
    settle();
    CHECK_EQ(cl->eof, 0);
    CHECK_EQ(mf_ffi_worker_requests(W), 2);
    req.len = 0;
    put_begin(&req, 2, MF_RESPONDER, MF_KEEP_CONN);
    send_b(cl, &req);
    settle();
    CHECK_EQ(cl->eof, 1);
    CHECK_EQ(mf_ffi_worker_requests(W), 0);
    CHECK_EQ(mf_ffi_worker_connections(W), 0);

    /* The same for a request whose handler runs: it is aborted, and finishable. */
    cl = connect_client();
    auto_app = 0;
    req.len = 0;
    put_request(&req, 1, MF_RESPONDER, MF_KEEP_CONN, NULL, NULL);
    put_begin(&req, 1, MF_RESPONDER, MF_KEEP_CONN);
    send_b(cl, &req);
    settle();
    CHECK_EQ(cl->eof, 1);
    CHECK(new_event(0) != NULL);
    if (new_event(0)) {
        mf_request_t *rq = new_event(0)->req;
        CHECK_EQ(mf_ffi_req_aborted(rq), 1);
        mf_ffi_req_finish(rq, 0, MF_FINISH_OK);
    }
    b_free(&req);
    teardown();
}

/* Records for ids that are not active are ignored (libfcgi broke on a late empty STDIN). */
static void records_for_inactive_ids_are_ignored(void)
{
    bytes_t req = {0}, ref, got;
    client_t *cl;

    setup();
    /* The reference answer, on its own connection. */
    cl = connect_client();
    put_request(&req, 1, MF_RESPONDER, MF_KEEP_CONN, "body", "REQUEST_URI", "/x", NULL);
    send_b(cl, &req);
    settle();
    ref = cl->in;
    cl->in = (bytes_t){0};

    cl = connect_client();
    send_b(cl, &req);
    settle();
    CHECK(b_eq(&cl->in, &ref));
    cl->in.len = 0;
    req.len = 0;
    /* Late records for the finished id 1, and records for ids never begun. */
    put_record(&req, MF_STDIN, 1, NULL, 0);
    put_record(&req, MF_STDIN, 1, "late", 4);
    put_record(&req, MF_PARAMS, 1, "\1\1ab", 4);
    put_record(&req, MF_PARAMS, 1, NULL, 0);
    put_record(&req, MF_DATA, 5, "data", 4);
    put_record(&req, MF_ABORT_REQUEST, 9, NULL, 0);
    put_record(&req, MF_STDOUT, 1, "out", 3);
    put_record(&req, MF_END_REQUEST, 1, "\0\0\0\0\0\0\0\0", 8);
    put_record(&req, MF_GET_VALUES, 3, NULL, 0);
    send_b(cl, &req);
    settle();
    CHECK_EQ(cl->in.len, 0);
    CHECK_EQ(count_events(MF_EV_NEW), 2);
    req.len = 0;
    put_request(&req, 1, MF_RESPONDER, MF_KEEP_CONN, "body", "REQUEST_URI", "/x", NULL);
    send_b(cl, &req);
    settle();
    got = cl->in;
    CHECK(b_eq(&got, &ref));
    CHECK_EQ(cl->eof, 0);
    b_free(&ref);
    b_free(&req);
    teardown();
}

static void abort_before_params_end(void)
{
    bytes_t req = {0};
    client_t *cl;
    resp_t r;

    setup();
    cl = connect_client();
    put_begin(&req, 4, MF_RESPONDER, MF_KEEP_CONN);
    put_record(&req, MF_PARAMS, 4, "\1\1ab", 4);
    send_b(cl, &req);
    settle();
    CHECK_EQ(mf_ffi_worker_requests(W), 1);
    CHECK_EQ(cl->in.len, 0);
    req.len = 0;
    put_record(&req, MF_ABORT_REQUEST, 4, NULL, 0);
    send_b(cl, &req);
    settle();
    collect(&cl->in, 4, &r);
    CHECK_EQ(r.ends, 1);
    CHECK_EQ(r.protocol_status, MF_REQUEST_COMPLETE);
    CHECK_EQ(r.out.len, 0);
    CHECK_EQ(r.stdout_empty, 0);
    resp_free(&r);
    CHECK_EQ(mf_ffi_worker_requests(W), 0);
    /* The rest of its params, a second ABORT: ignored, the id is not active any more. */
    cl->in.len = 0;
    req.len = 0;
    put_record(&req, MF_PARAMS, 4, NULL, 0);
    put_record(&req, MF_STDIN, 4, NULL, 0);
    put_record(&req, MF_ABORT_REQUEST, 4, NULL, 0);
    send_b(cl, &req);
    settle();
    CHECK_EQ(cl->in.len, 0);
    CHECK_EQ(count_events(MF_EV_NEW), 0);
    CHECK_EQ(role_answer(cl, 4, MF_RESPONDER, MF_KEEP_CONN), MF_REQUEST_COMPLETE);
    b_free(&req);
    teardown();
}

static void abort_after_the_handler_started(void)
{
    bytes_t req = {0};
    client_t *cl;
    mf_event_t *e;
    mf_request_t *rq;
    const char *p;
    size_t n;
    resp_t r;

    setup();
    auto_app = 0;
    cl = connect_client();
    put_begin(&req, 2, MF_RESPONDER, MF_KEEP_CONN);
    put_stream(&req, MF_PARAMS, 2, "\1\1ab", 4, 65528);
    send_b(cl, &req);
    settle();
    e = new_event(0);
    CHECK(e != NULL);
    if (!e)
        goto end;
    rq = e->req;
    CHECK_EQ(mf_ffi_req_aborted(rq), 0);
    /* The handler writes, then waits for stdin that never comes. */
    CHECK_EQ(mf_ffi_req_write(rq, "partial", 7), MF_OK);
    CHECK_EQ(mf_ffi_req_flush(rq), MF_WAIT);
    settle();
    CHECK_EQ(mf_ffi_req_read(rq, 0, 0, &p, &n), MF_WAIT);
    nevents = 0;
    req.len = 0;
    put_record(&req, MF_ABORT_REQUEST, 2, NULL, 0);
    send_b(cl, &req);
    settle();
    /* The waiting handler is woken and sees the abort. */
    CHECK_EQ(count_events(MF_EV_WAKE), 1);
    CHECK(nevents > 0 && events[0].req == rq && events[0].serial == e->serial);
    CHECK_EQ(mf_ffi_req_aborted(rq), 1);
    CHECK_EQ(mf_ffi_req_read(rq, 0, 0, &p, &n), MF_ABORTED);
    CHECK_EQ(mf_ffi_req_body(rq, 0, &p, &n), MF_ABORTED);
    CHECK_EQ(mf_ffi_req_write(rq, "more", 4), MF_ABORTED);
    CHECK_EQ(mf_ffi_req_flush(rq), MF_ABORTED);
    CHECK_EQ(mf_ffi_req_stderr(rq, "e", 1), MF_ABORTED);
    /* Nothing is sent for it until the handler is done, then one END_REQUEST. */
    collect(&cl->in, 2, &r);
    CHECK_EQ(r.ends, 0);
    resp_free(&r);
    mf_ffi_req_finish(rq, 3, MF_FINISH_ERROR);
    settle();
    collect(&cl->in, 2, &r);
    CHECK_EQ(r.ends, 1);
    CHECK_EQ(r.after_end, 0);
    CHECK_EQ(r.app_status, 3);
    CHECK_EQ(r.protocol_status, MF_REQUEST_COMPLETE);
    CHECK(b_starts(&r.out, "Status: 200 OK\r\n")); /* what was flushed before the abort */
    CHECK_EQ(r.stdout_empty, 0);
    resp_free(&r);
    CHECK_EQ(mf_ffi_worker_requests(W), 0);
    /* Go sent more output and a second END_REQUEST here; the id is inactive for us. */
    cl->in.len = 0;
    req.len = 0;
    put_record(&req, MF_ABORT_REQUEST, 2, NULL, 0);
    send_b(cl, &req);
    settle();
    CHECK_EQ(cl->in.len, 0);
    auto_app = 1;
    CHECK_EQ(role_answer(cl, 2, MF_RESPONDER, MF_KEEP_CONN), MF_REQUEST_COMPLETE);
end:
    b_free(&req);
    teardown();
}

/* The web server closes under a running request (what nginx does when its client leaves). */
static void connection_closed_under_a_running_request(void)
{
    bytes_t req = {0};
    client_t *cl;
    mf_event_t *e;
    const char *p;
    size_t n;

    setup();
    auto_app = 0;
    cl = connect_client();
    put_request(&req, 1, MF_RESPONDER, 0, NULL, "REQUEST_URI", "/slow", NULL);
    put_record(&req, MF_STDIN, 1, "par", 3);
    send_b(cl, &req);
    settle();
    e = new_event(0);
    CHECK(e != NULL);
    if (e) {
        mf_request_t *rq = e->req;
        CHECK_EQ(mf_ffi_req_read(rq, 0, 0, &p, &n), MF_OK);
        CHECK_EQ(n, 3);
        mf_ffi_req_consume(rq, 0, n);
        CHECK_EQ(mf_ffi_req_read(rq, 0, 0, &p, &n), MF_WAIT);
        nevents = 0;
        close_client(cl);
        settle();
        CHECK_EQ(mf_ffi_worker_connections(W), 0);
        CHECK_EQ(mf_ffi_worker_requests(W), 1); /* held by the handler */
        CHECK_EQ(count_events(MF_EV_WAKE), 1);
        CHECK_EQ(mf_ffi_req_aborted(rq), 1);
        CHECK_EQ(mf_ffi_req_read(rq, 0, 0, &p, &n), MF_ABORTED);
        CHECK_EQ(mf_ffi_req_write(rq, "x", 1), MF_ABORTED);
        CHECK_EQ(mf_ffi_req_raw_write(rq, "x", 1), MF_ABORTED);
        CHECK_EQ(mf_ffi_req_flush(rq), MF_ABORTED);
        CHECK_EQ(mf_ffi_req_writable(rq), MF_ABORTED);
        CHECK_EQ(mf_ffi_req_stderr(rq, "x", 1), MF_ABORTED);
        CHECK_EQ(mf_ffi_req_set_header(rq, "X-A", 3, "b", 1, 0), MF_OK);
        mf_ffi_req_consume(rq, 0, 10);
        CHECK_EQ(mf_ffi_req_param_count(rq), 1);
        mf_ffi_req_finish(rq, 0, MF_FINISH_ERROR);
        CHECK_EQ(mf_ffi_worker_requests(W), 0);
    }
    b_free(&req);
    teardown();
}

/*
 * PARAMS after the stream's end break the stream order: the connection closes at once, the
 * running handler sees the abort, and the params it has are not changed meanwhile.
 */
static void params_after_their_end_close_the_connection(void)
{
    bytes_t req = {0};
    client_t *cl;
    mf_event_t *e;

    setup();
    auto_app = 0;
    cl = connect_client();
    put_request(&req, 1, MF_RESPONDER, MF_KEEP_CONN, NULL, "A", "1", NULL);
    send_b(cl, &req);
    settle();
    e = new_event(0);
    CHECK(e != NULL);
    if (e) {
        mf_request_t *rq = e->req;
        const char *v;
        size_t n, before = rq->params.len;
        req.len = 0;
        put_stream(&req, MF_PARAMS, 1, "\1\1BC", 4, 65528);
        send_b(cl, &req);
        settle();
        CHECK_EQ(count_events(MF_EV_NEW), 1);
        CHECK_EQ(cl->eof, 1);
        CHECK_EQ(mf_ffi_worker_connections(W), 0);
        CHECK_EQ(mf_ffi_req_aborted(rq), 1);
        CHECK_EQ(mf_ffi_req_param_count(rq), 1);
        CHECK_EQ(rq->params.len, before);
        CHECK_EQ(mf_ffi_req_param(rq, "B", 1, &v, &n), MF_EOF);
        mf_ffi_req_finish(rq, 0, MF_FINISH_OK);
    }
    settle();
    CHECK_EQ(cl->in.len, 0);
    b_free(&req);
    teardown();
}

/* An authorizer that sets no status denies (docs/api.md); one that fails answers 500. */
static void authorizer_default_status(void)
{
    bytes_t req = {0};
    client_t *cl;
    resp_t r;

    setup();
    auto_app = 0;
    cl = connect_client();
    for (int id = 1; id <= 2; id++) {
        mf_event_t *e;
        nevents = 0;
        cl->in.len = 0;
        req.len = 0;
        put_request(&req, id, MF_AUTHORIZER, MF_KEEP_CONN, NULL, "REMOTE_USER", "x", NULL);
        send_b(cl, &req);
        settle();
        e = new_event(0);
        CHECK(e != NULL);
        if (!e)
            continue;
        CHECK_EQ(e->role, MF_AUTHORIZER);
        CHECK_EQ(e->keep_conn, 1);
        CHECK_EQ(e->id, id);
        mf_ffi_req_finish(e->req, 0, id == 1 ? MF_FINISH_OK : MF_FINISH_ERROR);
        settle();
        collect(&cl->in, (uint16_t)id, &r);
        CHECK_EQ(r.ends, 1);
        if (id == 1) {
            CHECK(b_starts(&r.out, "Status: 401 Unauthorized\r\n"));
            CHECK(!b_contains(&r.out, "Content-Type"));
        } else {
            CHECK(b_starts(&r.out, "Status: 500 Internal Server Error\r\n"));
        }
        resp_free(&r);
    }
    b_free(&req);
    teardown();
}

/*
 * The sweeps: params that do not arrive in --read-timeout get a 408; a read that waits longer
 * wakes with MF_TIMEOUT; a handler past --timeout gets MF_EV_TIMEOUT (and its 504); a
 * connection idle for --idle-timeout is closed.
 */
static void timeouts(void)
{
    mf_ffi_options_t o;
    bytes_t req = {0};
    client_t *slow, *handler, *idle;
    mf_event_t *e;
    resp_t r;

    memset(&o, 0, sizeof o);
    o.timeout = 0.6;
    o.idle_timeout = 0.45;
    o.read_timeout = 0.1;
    setup_opts(&o);
    auto_app = 0;
    slow = connect_client();
    handler = connect_client();
    idle = connect_client();
    put_begin(&req, 1, MF_RESPONDER, MF_KEEP_CONN);
    put_record(&req, MF_PARAMS, 1, "\1\1ab", 4);
    send_b(slow, &req);
    req.len = 0;
    put_request(&req, 2, MF_RESPONDER, MF_KEEP_CONN, NULL, "A", "1", NULL);
    send_b(handler, &req);
    settle();
    e = new_event(0);
    CHECK(e != NULL);
    if (e) {
        mf_request_t *rq = e->req;
        const char *p;
        size_t n;
        CHECK_EQ(mf_ffi_req_read(rq, 0, 0, &p, &n), MF_WAIT);
        run_for(0.25);
        /* The params never ended: 408, and the connection stays. */
        collect(&slow->in, 1, &r);
        CHECK_EQ(r.ends, 1);
        CHECK(b_starts(&r.out, "Status: 408 Request Timeout\r\n"));
        resp_free(&r);
        CHECK_EQ(slow->eof, 0);
        /* The read that waited is woken and times out; the next one waits again. */
        CHECK(count_events(MF_EV_WAKE) >= 1);
        CHECK_EQ(mf_ffi_req_read(rq, 0, 0, &p, &n), MF_TIMEOUT);
        CHECK_EQ(mf_ffi_req_read(rq, 0, 0, &p, &n), MF_WAIT);
        CHECK_EQ(count_events(MF_EV_TIMEOUT), 0);
        run_for(0.5);
        /* The handler ran past --timeout. */
        CHECK_EQ(count_events(MF_EV_TIMEOUT), 1);
        for (int i = 0; i < nevents; i++)
            if (events[i].type == MF_EV_TIMEOUT) {
                CHECK(events[i].req == rq);
                CHECK_EQ(events[i].serial, e->serial);
            }
        mf_ffi_req_finish(rq, 1, MF_FINISH_TIMEOUT);
        settle();
        collect(&handler->in, 2, &r);
        CHECK_EQ(r.ends, 1);
        CHECK_EQ(r.app_status, 1);
        CHECK(b_starts(&r.out, "Status: 504 Gateway Timeout\r\n"));
        resp_free(&r);
    }
    /* Nothing ever came on this one: it was closed once idle. */
    CHECK_EQ(idle->eof, 1);
    CHECK_EQ(idle->in.len, 0);
    b_free(&req);
    teardown();
}

/* A 200 KiB write leaves in records of at most 65528 bytes, padded to 8. */
static void output_is_framed(void)
{
    bytes_t req = {0};
    client_t *cl;
    rec_t *recs;
    size_t n, full = 0, body = 200 * 1024;
    resp_t r;

    setup();
    cl = connect_client();
    put_request(&req, 1, MF_RESPONDER, MF_KEEP_CONN, "", "BODY_SIZE", "204800", "FILL", "z", NULL);
    send_b(cl, &req);
    settle();
    n = decode(&cl->in, &recs);
    for (size_t i = 0; i < n; i++)
        full += recs[i].type == MF_STDOUT && recs[i].clen == MF_OUT_CONTENT_MAX;
    CHECK(full >= 3);
    free(recs);
    collect(&cl->in, 1, &r);
    CHECK_EQ(r.ends, 1);
    CHECK_EQ(r.stdout_empty, 1);
    CHECK(b_starts(&r.out, "Status: 200 OK\r\n"));
    CHECK(r.out.len > body);
    if (r.out.len > body) {
        const uint8_t *p = r.out.p + r.out.len - body;
        size_t wrong = 0;
        for (size_t i = 0; i < body; i++)
            wrong += p[i] != 'z';
        CHECK_EQ(wrong, 0);
        CHECK(memcmp(p - 4, "\r\n\r\n", 4) == 0);
    }
    resp_free(&r);

    /* Odd sizes and many small writes: the same invariants (checked by decode). */
    cl->in.len = 0;
    req.len = 0;
    put_request(&req, 2, MF_RESPONDER, MF_KEEP_CONN, "", "BODY_SIZE", "131057", "CHUNK", "1301",
                NULL);
    send_b(cl, &req);
    settle();
    collect(&cl->in, 2, &r);
    CHECK_EQ(r.ends, 1);
    CHECK(r.out.len > 131057);
    resp_free(&r);
    b_free(&req);
    teardown();
}

/* A web server that does not read: writes report MF_WAIT past 256 KiB; reading wakes. */
static void backpressure(void)
{
    bytes_t req = {0};
    client_t *cl;
    mf_event_t *e, ne;
    mf_conn_t *c;
    char *chunk = malloc(65536);
    int rc = MF_OK, writes = 0;
    size_t peak = 0, total;
    resp_t r;

    setup();
    auto_app = 0;
    cl = connect_client();
    c = W->conns;
    /* A small socket buffer, so that the queue drains in steps smaller than the low mark. */
    {
        int sz = 16384;
        CHECK_EQ(setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz), 0);
    }
    put_request(&req, 1, MF_RESPONDER, MF_KEEP_CONN, "", NULL);
    send_b(cl, &req);
    settle();
    e = new_event(0);
    CHECK(e != NULL);
    if (!e)
        goto end;
    ne = *e;
    memset(chunk, 'b', 65536);
    cl->paused = 1;
    while (writes < 200) {
        size_t q;
        rc = mf_ffi_req_write(ne.req, chunk, 65536);
        writes++;
        mf_ffi_worker_flush(W);
        q = evbuffer_get_length(c->out);
        if (q > peak)
            peak = q;
        if (rc != MF_OK)
            break;
        CHECK(q <= MF_OUT_HIGH);
    }
    CHECK_EQ(rc, MF_WAIT);
    CHECK(writes < 200);
    /* Bounded: the high-water mark plus one write and the record headers. */
    CHECK(peak > MF_OUT_HIGH);
    CHECK(peak <= MF_OUT_HIGH + 65536 + 65536);
    CHECK_EQ(c->reading, 0); /* no input is taken while output waits */
    CHECK_EQ(mf_ffi_req_writable(ne.req), MF_WAIT);
    nevents = 0;
    for (int i = 0; i < 10; i++)
        step();
    CHECK_EQ(count_events(MF_EV_WAKE), 0);
    CHECK(evbuffer_get_length(c->out) <= peak);
    /* The web server reads a little at a time: the writer is woken as soon as the queue is
     * below the low-water mark, before it is empty. */
    {
        uint8_t buf[4096];
        size_t at_wake = SIZE_MAX;
        for (int i = 0; i < 100000 && at_wake == SIZE_MAX; i++) {
            ssize_t k = read(cl->fd, buf, sizeof buf);
            if (k > 0)
                b_put(&cl->in, buf, (size_t)k);
            step(); /* the client is paused: step does not read for it */
            if (count_events(MF_EV_WAKE) > 0)
                at_wake = evbuffer_get_length(c->out);
        }
        CHECK(at_wake < MF_OUT_LOW);
        CHECK(at_wake > 0);
    }
    cl->paused = 0;
    settle();
    CHECK_EQ(count_events(MF_EV_WAKE), 1);
    if (nevents > 0) {
        CHECK(events[0].req == ne.req);
        CHECK_EQ(events[0].serial, ne.serial);
        CHECK_EQ(events[0].slot, ne.slot);
    }
    CHECK(evbuffer_get_length(c->out) < MF_OUT_LOW);
    CHECK_EQ(mf_ffi_req_writable(ne.req), MF_OK);
    CHECK_EQ(c->reading, 1);
    CHECK_EQ(mf_ffi_req_flush(ne.req), MF_WAIT);
    mf_ffi_req_finish(ne.req, 0, MF_FINISH_OK);
    settle();
    collect(&cl->in, 1, &r);
    total = (size_t)writes * 65536;
    CHECK_EQ(r.ends, 1);
    CHECK(r.out.len > total && r.out.len < total + 200);
    resp_free(&r);
end:
    free(chunk);
    b_free(&req);
    teardown();
}

/* Garbage in padding and reserved bytes, on every record type, changes nothing. */
static void garbage_padding_and_reserved_bytes(void)
{
    bytes_t clean = {0}, dirty = {0}, ref, q = {0};
    uint8_t begin[8] = {0, MF_RESPONDER, MF_KEEP_CONN | 0xfe, 0xde, 0xad, 0xbe, 0xef, 0x99};
    uint8_t fake[16];
    client_t *cl;
    char got[256];

    setup();
    put_request(&clean, 1, MF_RESPONDER, MF_KEEP_CONN, "stdin!", "REQUEST_URI", "/g", NULL);
    cl = connect_client();
    send_b(cl, &clean);
    settle();
    ref = cl->in;
    cl->in = (bytes_t){0};

    /* The empty PARAMS is padded with what looks like a whole BEGIN_REQUEST for id 2. */
    memset(fake, 0, sizeof fake);
    fake[0] = 1, fake[1] = MF_BEGIN_REQUEST, fake[3] = 2, fake[5] = 8, fake[9] = 1;
    put_record_ex(&dirty, 1, MF_BEGIN_REQUEST, 1, begin, 8, 255, 0xff, 0xff);
    {
        bytes_t params = {0};
        put_pair(&params, "REQUEST_URI", "/g");
        put_record_ex(&dirty, 1, MF_PARAMS, 1, params.p, params.len, 3, 0x01, 0x80);
        b_free(&params);
    }
    b_put(&dirty, "\x01\x04\x00\x01\x00\x00\x10\x7f", 8);
    b_put(&dirty, fake, 16);
    put_record_ex(&dirty, 1, MF_STDIN, 1, "std", 3, 200, 0x01, 0x01);
    put_record_ex(&dirty, 1, MF_STDIN, 1, "in!", 3, 1, 0x05, 0x05);
    put_record_ex(&dirty, 1, MF_STDIN, 1, NULL, 0, 255, 0x01, 0xaa);
    cl = connect_client();
    send_b(cl, &dirty);
    settle();
    CHECK(b_eq(&cl->in, &ref));
    CHECK_EQ(count_events(MF_EV_NEW), 2);

    /* Management records, an ABORT and an unknown type, all padded with garbage. */
    cl->in.len = 0;
    dirty.len = 0;
    put_pair(&q, "FCGI_MAX_REQS", "");
    put_record_ex(&dirty, 1, MF_GET_VALUES, 0, q.p, q.len, 255, 0x01, 0xff);
    put_record_ex(&dirty, 1, 77, 0, NULL, 0, 31, 0x09, 0xff);
    put_record_ex(&dirty, 1, MF_BEGIN_REQUEST, 3, begin, 8, 0, 0, 0x42);
    put_record_ex(&dirty, 1, MF_ABORT_REQUEST, 3, NULL, 0, 100, 0x01, 0x42);
    send_b(cl, &dirty);
    settle();
    CHECK_EQ(values_result(&cl->in, got, sizeof got), 1);
    CHECK(strcmp(got, "FCGI_MAX_REQS=1024;") == 0);
    CHECK_EQ(count_type(&cl->in, MF_UNKNOWN_TYPE), 1);
    {
        resp_t r;
        collect(&cl->in, 3, &r);
        CHECK_EQ(r.ends, 1);
        resp_free(&r);
    }
    CHECK_EQ(cl->eof, 0);

    /* A filter whose every record is padded with garbage, with the types only an application
     * sends (ignored) mixed in, also padded. */
    cl->in.len = 0;
    dirty.len = 0;
    begin[1] = MF_FILTER;
    put_record_ex(&dirty, 1, MF_BEGIN_REQUEST, 4, begin, 8, 7, 0x04, 0x04);
    put_record_ex(&dirty, 1, MF_PARAMS, 4, NULL, 0, 200, 0x04, 0x04);
    put_record_ex(&dirty, 1, MF_STDOUT, 4, "so", 2, 3, 0x06, 0x06);
    put_record_ex(&dirty, 1, MF_STDIN, 4, "si", 2, 9, 0x05, 0x05);
    put_record_ex(&dirty, 1, MF_STDERR, 4, "se", 2, 30, 0x07, 0x07);
    put_record_ex(&dirty, 1, MF_STDIN, 4, NULL, 0, 8, 0x05, 0x05);
    put_record_ex(&dirty, 1, MF_DATA, 4, "d1", 2, 255, 0x08, 0x08);
    put_record_ex(&dirty, 1, MF_END_REQUEST, 4, "\0\0\0\0\0\0\0\0", 8, 1, 0x03, 0x03);
    put_record_ex(&dirty, 1, MF_GET_VALUES_RESULT, 4, "\1\1ab", 4, 4, 0x0a, 0x0a);
    put_record_ex(&dirty, 1, MF_UNKNOWN_TYPE, 4, "\1", 1, 2, 0x0b, 0x0b);
    put_record_ex(&dirty, 1, MF_DATA, 4, "d2", 2, 16, 0x08, 0x08);
    put_record_ex(&dirty, 1, MF_DATA, 4, NULL, 0, 64, 0x08, 0x08);
    send_b(cl, &dirty);
    settle();
    {
        resp_t r;
        collect(&cl->in, 4, &r);
        CHECK_EQ(r.ends, 1);
        CHECK(b_contains(&r.out, "\r\n\r\nid=4 role=3 uri= stdin=si data=d1d2"));
        resp_free(&r);
    }
    CHECK_EQ(count_type(&cl->in, MF_UNKNOWN_TYPE), 0);
    CHECK_EQ(cl->eof, 0);
    b_free(&q);
    b_free(&ref);
    b_free(&clean);
    b_free(&dirty);
    teardown();
}

/* Without KEEP_CONN we close after END_REQUEST, and END_REQUEST is the last byte. */
static void closes_after_the_request_without_keep_conn(void)
{
    bytes_t req = {0};
    client_t *cl;
    rec_t *recs;
    size_t n;

    setup();
    cl = connect_client();
    put_request(&req, 1, MF_RESPONDER, 0, "", "REQUEST_URI", "/once", NULL);
    send_b(cl, &req);
    settle();
    CHECK_EQ(cl->eof, 1);
    n = decode(&cl->in, &recs);
    CHECK(n >= 3);
    if (n >= 3) {
        CHECK_EQ(recs[n - 1].type, MF_END_REQUEST);
        CHECK_EQ(recs[n - 2].type, MF_STDOUT);
        CHECK_EQ(recs[n - 2].clen, 0);
    }
    free(recs);
    b_free(&req);
    teardown();
}

static void authorizer_without_stdin(void)
{
    bytes_t req = {0};
    client_t *cl;
    resp_t r;

    setup();
    cl = connect_client();
    /* Apache's mod_authnz_fcgi: PARAMS and no STDIN at all. */
    put_request(&req, 1, MF_AUTHORIZER, 0, NULL, "REMOTE_USER", "bob", NULL);
    send_b(cl, &req);
    settle();
    CHECK_EQ(count_events(MF_EV_NEW), 1);
    collect(&cl->in, 1, &r);
    CHECK_EQ(r.ends, 1);
    CHECK(b_starts(&r.out, "Status: 200 OK\r\n"));
    resp_free(&r);
    b_free(&req);
    teardown();
}

/*
 * Steps of the wall clock, back and forward by an hour, fire no timeout and delay none: the
 * params timeout, a waiting read, the handler's --timeout and the idle close all follow the
 * monotonic clock. moonfcgi.now() (mf_ffi_worker_now) follows the wall clock.
 */
static void wall_clock_steps_fire_no_timeout(void)
{
    mf_ffi_options_t o;
    bytes_t req = {0};
    client_t *slow, *handler, *idle;
    mf_event_t *e;
    const char *p;
    size_t n;
    resp_t r;
    struct timespec wall;

    memset(&o, 0, sizeof o);
    o.timeout = 1.6;
    o.idle_timeout = 1.0;
    o.read_timeout = 1.0;
    setup_opts(&o);
    auto_app = 0;
    slow = connect_client();
    handler = connect_client();
    idle = connect_client();
    put_begin(&req, 1, MF_RESPONDER, MF_KEEP_CONN);
    put_record(&req, MF_PARAMS, 1, "\1\1ab", 4);
    send_b(slow, &req);
    req.len = 0;
    put_request(&req, 2, MF_RESPONDER, MF_KEEP_CONN, NULL, "A", "1", NULL);
    send_b(handler, &req);
    settle();
    e = new_event(0);
    CHECK(e != NULL);
    if (!e)
        goto end;
    CHECK_EQ(mf_ffi_req_read(e->req, 0, 0, &p, &n), MF_WAIT);
    wall_step = -3600;
    step();
    CHECK_EQ(mf_ffi_req_read(e->req, 0, 0, &p, &n), MF_WAIT); /* waits from a stepped time */
    run_for(0.15);
    wall_step = 3600;
    step();
    clock_gettime(CLOCK_REALTIME, &wall);
    CHECK(mf_ffi_worker_now(W) > (double)wall.tv_sec - 2);
    CHECK(mf_ffi_worker_now(W) < (double)wall.tv_sec + 2);
    run_for(0.15);
    /* Nothing fired: no 408, no read timeout, no handler timeout, no idle close. */
    CHECK_EQ(slow->in.len, 0);
    CHECK_EQ(count_events(MF_EV_WAKE), 0);
    CHECK_EQ(count_events(MF_EV_TIMEOUT), 0);
    CHECK_EQ(mf_ffi_req_read(e->req, 0, 0, &p, &n), MF_WAIT);
    CHECK_EQ(idle->eof, 0);
    CHECK_EQ(mf_ffi_worker_connections(W), 3);
    /* Nor were they delayed: each fires once its time has passed on the monotonic clock. */
    run_for(1.2);
    collect(&slow->in, 1, &r);
    CHECK_EQ(r.ends, 1);
    CHECK(b_starts(&r.out, "Status: 408 Request Timeout\r\n"));
    resp_free(&r);
    CHECK_EQ(idle->eof, 1);
    CHECK(count_events(MF_EV_WAKE) >= 1);
    CHECK_EQ(mf_ffi_req_read(e->req, 0, 0, &p, &n), MF_TIMEOUT);
    run_for(0.6);
    CHECK_EQ(count_events(MF_EV_TIMEOUT), 1);
    mf_ffi_req_finish(e->req, 1, MF_FINISH_TIMEOUT);
end:
    wall_step = 0;
    b_free(&req);
    teardown();
}

/* The loop's time is read once per turn; ngx.update_time (mf_ffi_worker_update_time) reads it
 * again. */
static void time_is_cached_per_turn(void)
{
    struct timespec t0, t;
    double a, b;

    setup();
    step();
    a = mf_ffi_worker_now(W);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do
        clock_gettime(CLOCK_MONOTONIC, &t);
    while ((double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9 < 0.02);
    CHECK(mf_ffi_worker_now(W) == a);
    mf_ffi_worker_update_time(W);
    b = mf_ffi_worker_now(W);
    CHECK(b >= a + 0.015);
    step();
    CHECK(mf_ffi_worker_now(W) >= b);
    teardown();
}

/*
 * libevent's allocations, through a counter that makes one of them fail on demand: the
 * allocation number fail_at since arm_failure() (counting from 0), while armed.
 */
static long allocs, fail_at = -1;

static void *t_malloc(size_t n)
{
    if (fail_at >= 0 && allocs++ == fail_at)
        return NULL;
    return malloc(n);
}

static void *t_realloc(void *p, size_t n)
{
    if (fail_at >= 0 && allocs++ == fail_at)
        return NULL;
    return realloc(p, n);
}

static void arm_failure(long at)
{
    allocs = 0;
    fail_at = at;
}

/* Disarms; returns whether the failure happened. */
static int disarm_failure(void)
{
    int failed = fail_at >= 0 && allocs > fail_at;

    fail_at = -1;
    return failed;
}

/*
 * An allocation failure while a response is added to a connection's output closes that
 * connection: what the web server got is whole records only (never a header without its
 * content), the referenced blocks are all released, and another connection goes on. Every
 * allocation of a large write is made to fail in turn, copied and referenced.
 */
static void out_of_memory_closes_only_that_connection(void)
{
    static char big[200000];
    int injected = 0;

    memset(big, 'y', sizeof big);
    for (int ref = 0; ref < 2; ref++) {
        for (long k = 0; k < 16; k++) {
            bytes_t req = {0};
            client_t *bad, *good;
            mf_event_t *e;
            uint64_t *tokens;
            uint32_t released = 0, n;
            int nrefs = 0, rc, failed;
            resp_t r;
            rec_t *recs;

            setup();
            mf_log_level = -1; /* the failures are expected */
            auto_app = 0;
            bad = connect_client();
            good = connect_client();
            put_request(&req, 1, MF_RESPONDER, MF_KEEP_CONN, "", "A", "1", NULL);
            send_b(bad, &req);
            settle();
            e = new_event(0);
            CHECK(e != NULL);
            if (!e) {
                b_free(&req);
                teardown();
                return;
            }
            CHECK_EQ(mf_ffi_req_write(e->req, "head", 4), MF_OK);
            arm_failure(k);
            rc = ref ? mf_ffi_req_write_ref(e->req, big, sizeof big, 7, &nrefs)
                     : mf_ffi_req_write(e->req, big, sizeof big);
            failed = disarm_failure();
            CHECK_EQ(rc, failed ? MF_NO_MEMORY : MF_OK);
            mf_ffi_req_finish(e->req, 0, failed ? MF_FINISH_ERROR : MF_FINISH_OK);
            settle();
            /* Whatever reached the web server is whole records (decode checks it). */
            decode(&bad->in, &recs);
            free(recs);
            collect(&bad->in, 1, &r);
            if (failed) {
                injected++;
                CHECK_EQ(bad->eof, 1);
                CHECK(r.ends <= 1);
            } else {
                CHECK_EQ(bad->eof, 0);
                CHECK_EQ(r.ends, 1);
                CHECK(b_contains(&r.out, "headyyyy"));
            }
            resp_free(&r);
            /* Every reference made is released once, by the write or by the close. */
            n = mf_ffi_worker_released(W, &tokens);
            for (uint32_t i = 0; i < n; i++) {
                CHECK_EQ(tokens[i], 7);
                released++;
            }
            CHECK_EQ(released, (uint32_t)nrefs);
            /* The other connection is served. */
            req.len = 0;
            put_request(&req, 2, MF_RESPONDER, MF_KEEP_CONN, "", "A", "1", NULL);
            send_b(good, &req);
            auto_app = 1;
            settle();
            e = new_event(1);
            CHECK(e != NULL);
            collect(&good->in, 2, &r);
            CHECK_EQ(r.ends, 1);
            CHECK(b_starts(&r.out, "Status: 200 OK\r\n"));
            CHECK_EQ(good->eof, 0);
            resp_free(&r);
            b_free(&req);
            teardown();
            if (!failed)
                break; /* past the last allocation the write makes */
        }
    }
    CHECK(injected >= 4);
}

int main(void)
{
    static const struct unit_test tests[] = {
        {"every_split_gives_the_same_response", every_split_gives_the_same_response},
        {"filter_one_byte_at_a_time", filter_one_byte_at_a_time},
        {"long_params_record_with_255_padding", long_params_record_with_255_padding},
        {"multiplexed_requests", multiplexed_requests},
        {"get_values", get_values},
        {"unknown_management_type", unknown_management_type},
        {"unknown_role", unknown_role},
        {"roles_the_app_lacks", roles_the_app_lacks},
        {"overloaded_past_max_reqs", overloaded_past_max_reqs},
        {"max_params_boundary", max_params_boundary},
        {"malformed_params_get_400", malformed_params_get_400},
        {"bad_version_closes_only_that_connection", bad_version_closes_only_that_connection},
        {"begin_with_wrong_length_closes", begin_with_wrong_length_closes},
        {"duplicate_begin_closes", duplicate_begin_closes},
        {"records_for_inactive_ids_are_ignored", records_for_inactive_ids_are_ignored},
        {"abort_before_params_end", abort_before_params_end},
        {"abort_after_the_handler_started", abort_after_the_handler_started},
        {"connection_closed_under_a_running_request", connection_closed_under_a_running_request},
        {"output_is_framed", output_is_framed},
        {"backpressure", backpressure},
        {"garbage_padding_and_reserved_bytes", garbage_padding_and_reserved_bytes},
        {"closes_after_the_request_without_keep_conn", closes_after_the_request_without_keep_conn},
        {"authorizer_without_stdin", authorizer_without_stdin},
        {"params_after_their_end_close_the_connection",
         params_after_their_end_close_the_connection},
        {"authorizer_default_status", authorizer_default_status},
        {"timeouts", timeouts},
        {"out_of_memory_closes_only_that_connection", out_of_memory_closes_only_that_connection},
        {"wall_clock_steps_fire_no_timeout", wall_clock_steps_fire_no_timeout},
        {"time_is_cached_per_turn", time_is_cached_per_turn},
        {NULL, NULL},
    };

    /* Before libevent allocates anything: the allocation failures are injected there. */
    event_set_mem_functions(t_malloc, t_realloc, free);
    /* A web server that went away must not kill the test with SIGPIPE (main.c does this). */
    signal(SIGPIPE, SIG_IGN);
    return unit_run(tests);
}
