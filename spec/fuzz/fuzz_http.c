/*
 * libFuzzer target for an HTTP connection (--http), through the real worker and without Lua.
 *
 * Input: as fuzz_conn's (4 bytes that split the stream into writes, 4 that choose what the
 * handlers do, 1 of flags), then the bytes an HTTP client sends. Per input, a new socketpair
 * connection of the HTTP protocol (http.c, libhttp-parser) gets the stream in chunks while
 * the worker is polled; every request handed over is played by a C handler chosen from the
 * input bits: it reads the body, writes (small, or past one block so the answer goes
 * chunked), writes its own CGI header block (sometimes a malformed one), sets headers,
 * flushes, finishes normally or with an error, or waits for the client to go away. Then the
 * client end is closed and the worker polled until it holds no connection and no request.
 *
 * Aborts when: the worker keeps a request or a connection after that (a leak), or what the
 * client read does not begin with an HTTP/1.1 status line. Every loop is bounded.
 */
#include "conn.h"
#include "http.h"
#include "ffi.h"
#include "log.h"
#include "record.h"
#include "request.h"
#include "worker.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ASSERT(c)                                                                                  \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_http: %s:%d: %s\n", __FILE__, __LINE__, #c);                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define MAX_HANDLERS 1024
#define MAX_STEPS    4000
#define QUIET_STEPS  3

enum { H_ECHO, H_NOW_OK, H_NOW_ERROR, H_TIMEOUT, H_UNTIL_CLOSED, H_BODY, H_BIG, H_HEADERS };

typedef struct handler {
    mf_request_t *r;
    uint8_t bits;
    uint8_t role;
    int done;
    int eof[2];
    size_t got;
} handler_t;

static mf_worker_t *W;
static handler_t handlers[MAX_HANDLERS];
static int nhandlers, nnew;
static const uint8_t *behaviour;

/* What the client end read. */
static uint8_t *out;
static size_t out_len, out_cap;
static int client_fd = -1, client_eof, client_paused;

/* The 9 bytes before the stream: 4 split, 4 behaviour, 1 of flags. */
#define HEAD 9
enum { F_CLIENT_SLOW = 1, F_RESPONDER_ONLY = 2, F_HALF_CLOSE = 4 };
static uint8_t flags;

static void finish(handler_t *h, int how)
{
    mf_ffi_req_finish(h->r, h->bits & 0x20 ? 1 : 0, how);
    h->done = 1;
}

/* Reads one stream to its end; 1 when done, 0 to come back later, -1 when aborted. */
static int read_stream(handler_t *h, int s)
{
    for (int i = 0; i < 64 && !h->eof[s]; i++) {
        const char *p;
        size_t n;
        int rc = mf_ffi_req_read(h->r, s, h->bits & 0x40 ? 3 : 0, &p, &n);
        if (rc == MF_OK) {
            ASSERT(n > 0);
            h->got += n;
            /* Touch the bytes: ASan checks they are ours to read. */
            if (p[0] == 0 && p[n - 1] == 0)
                h->got++;
            mf_ffi_req_consume(h->r, s, h->bits & 0x40 ? 1 : n);
        } else if (rc == MF_EOF || rc == MF_BAD_STATE || rc == MF_TOO_LARGE || rc == MF_TIMEOUT) {
            h->eof[s] = 1;
        } else if (rc == MF_ABORTED) {
            return -1;
        } else {
            ASSERT(rc == MF_WAIT);
            return 0;
        }
    }
    return h->eof[s];
}

static void start(const mf_event_t *e)
{
    handler_t *h = NULL;
    uint8_t b = behaviour[nnew % 4];

    b = (uint8_t)(b >> (nnew / 4 % 8) | b << (8 - nnew / 4 % 8));
    nnew++;
    for (int i = 0; i < nhandlers; i++)
        if (handlers[i].done) {
            h = &handlers[i];
            break;
        }
    if (!h) {
        ASSERT(nhandlers < MAX_HANDLERS);
        h = &handlers[nhandlers++];
    }
    memset(h, 0, sizeof *h);
    h->r = e->req;
    h->bits = b;
    h->role = e->role;
    h->eof[1] = !(b & 0x10);
    ASSERT(e->role >= MF_RESPONDER && e->role <= MF_FILTER);
    /* Every param lies in the request's memory. */
    for (int i = 0, n = mf_ffi_req_param_count(h->r); i < n; i++) {
        const char *name, *value;
        size_t nl, vl;
        ASSERT(mf_ffi_req_param_at(h->r, i, &name, &nl, &value, &vl) == MF_OK);
        if (nl && vl && name[0] == value[vl - 1])
            h->got++;
    }
    ASSERT(mf_ffi_req_param_at(h->r, -1, NULL, NULL, NULL, NULL) == MF_BAD_VALUE);
}

static void write_some(handler_t *h, size_t n)
{
    static char buf[70000];
    int rc;

    memset(buf, 'a' + h->bits % 26, n < sizeof buf ? n : sizeof buf);
    rc = mf_ffi_req_write(h->r, buf, n < sizeof buf ? n : sizeof buf);
    ASSERT(rc == MF_OK || rc == MF_WAIT || rc == MF_ABORTED || rc == MF_BAD_STATE);
    if (h->bits & 0x08)
        mf_ffi_req_flush(h->r);
}

/* One turn of a handler; returns 1 when it did something. */
static int run(handler_t *h)
{
    int aborted = mf_ffi_req_aborted(h->r);

    switch (h->bits & 7) {
    case H_ECHO: {
        int a = read_stream(h, 0), b = a > 0 ? read_stream(h, 1) : a;
        if (a < 0 || b < 0) {
            finish(h, MF_FINISH_OK);
            return 1;
        }
        if (!b)
            return 0;
        write_some(h, h->got + 1);
        finish(h, h->bits & 0x20 ? MF_FINISH_ERROR : MF_FINISH_OK);
        return 1;
    }
    case H_NOW_OK: finish(h, MF_FINISH_OK); return 1;
    case H_NOW_ERROR: finish(h, MF_FINISH_ERROR); return 1;
    case H_TIMEOUT:
        write_some(h, 1);
        finish(h, MF_FINISH_TIMEOUT);
        return 1;
    case H_UNTIL_CLOSED:
        if (!aborted) {
            if (!h->got++)
                mf_ffi_req_writable(h->r);
            return 0;
        }
        finish(h, h->bits & 0x20 ? MF_FINISH_ERROR : MF_FINISH_OK);
        return 1;
    case H_BODY: {
        const char *p;
        size_t n;
        int rc = mf_ffi_req_body(h->r, 0, &p, &n);
        if (rc == MF_WAIT)
            return 0;
        if (rc == MF_OK) {
            static const char good[] = "Status: 201 Created\r\nX-Raw: 1\r\n\r\n";
            static const char bad[] = "no colon here\r\n\r\n";
            const char *head = h->bits & 0x40 ? bad : good;
            ASSERT(mf_ffi_req_raw_write(h->r, head, strlen(head)) != MF_BAD_STATE);
            mf_ffi_req_raw_write(h->r, p, n);
            ASSERT(mf_ffi_req_write(h->r, "x", 1) == MF_BAD_STATE || aborted);
        }
        finish(h, h->bits & 0x20 ? MF_FINISH_ERROR : MF_FINISH_OK);
        return 1;
    }
    case H_BIG:
        /* Just over one record, so the framing splits it. */
        write_some(h, MF_OUT_CONTENT_MAX + 1 + (h->bits >> 3));
        finish(h, MF_FINISH_OK);
        return 1;
    case H_HEADERS: {
        char reason[3] = {'O', (h->bits & 0x40) ? '\n' : 'K', 0};
        mf_ffi_req_set_status(h->r, 100 + h->bits * 4, reason, 2);
        mf_ffi_req_set_header(h->r, "X-Fuzz", 6, "1", 1, h->bits & 0x10);
        mf_ffi_req_set_header(h->r, "X-Fuzz", 6, "2", 1, 1);
        ASSERT(mf_ffi_req_set_header(h->r, "Bad Name", 8, "v", 1, 0) != MF_OK);
        ASSERT(mf_ffi_req_set_header(h->r, "X-Crlf", 6, "a\r\nb", 4, 0) != MF_OK);
        mf_ffi_req_set_header(h->r, "Content-Type", 12, NULL, 0, 0);
        mf_ffi_req_stderr(h->r, "err", 3);
        write_some(h, 5);
        if (h->bits & 0x08)
            ASSERT(mf_ffi_req_headers_sent(h->r) || aborted);
        finish(h, MF_FINISH_OK);
        return 1;
    }
    }
    return 0;
}

/* One turn of the loop: poll, hand over, run the handlers, write, read the client end. */
static int step(void)
{
    mf_event_t *ev;
    int n = mf_ffi_worker_poll(W, 0, &ev), progress = n > 0;

    for (int i = 0; i < n; i++)
        if (ev[i].type == MF_EV_NEW)
            start(&ev[i]);
    for (int i = 0; i < nhandlers; i++)
        if (!handlers[i].done)
            progress |= run(&handlers[i]);
    mf_ffi_worker_flush(W);
    while (client_fd >= 0 && !client_eof && !client_paused) {
        ssize_t k;
        if (out_cap - out_len < 65536) {
            out_cap = out_cap ? out_cap * 2 : 1 << 20;
            out = realloc(out, out_cap);
            ASSERT(out != NULL);
        }
        k = read(client_fd, out + out_len, out_cap - out_len);
        if (k > 0) {
            out_len += (size_t)k;
            progress = 1;
        } else {
            client_eof = k == 0;
            progress |= client_eof;
            break;
        }
    }
    return progress;
}

static void settle(void)
{
    for (int i = 0, quiet = 0; i < MAX_STEPS && quiet < QUIET_STEPS; i++)
        quiet = step() ? 0 : quiet + 1;
}

/* What the client read: HTTP/1.1 status lines, the first one at the start. */
static void check_output(void)
{
    static const char want[] = "HTTP/1.1 ";

    if (out_len == 0)
        return;
    ASSERT(out_len >= sizeof want - 1 && memcmp(out, want, sizeof want - 1) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t zeros[HEAD];
    uint8_t head[HEAD];
    const uint8_t *split, *stream;
    size_t len, off = 0;
    int chunk_no = 0, i;

    if (!W) {
        mf_ffi_options_t o;
        memset(&o, 0, sizeof o);
        o.max_reqs = 64; /* small enough that OVERLOADED is reachable */
        o.max_params = 4096;
        o.max_body = 2048;
        o.log_level = MF_LOG_ERROR;
        signal(SIGPIPE, SIG_IGN);
        W = mf_ffi_worker_new(&o);
        ASSERT(W != NULL);
    }
    memcpy(head, zeros, HEAD);
    if (size > 0)
        memcpy(head, data, size < HEAD ? size : HEAD);
    split = head;
    behaviour = head + 4;
    flags = head[8];
    stream = size > HEAD ? data + HEAD : zeros;
    len = size > HEAD ? size - HEAD : 0;
    mf_ffi_worker_set_roles(W, flags & F_RESPONDER_ONLY ? 0x2 : 0xe);
    nhandlers = nnew = 0;
    out_len = 0;
    client_eof = 0;
    client_paused = (flags & F_CLIENT_SLOW) != 0;
    {
        int sv[2];
        ASSERT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
        ASSERT(mf_http_conn_new(W, sv[0]) != NULL);
        client_fd = sv[1];
    }

    while (off < len) {
        /* Chunk sizes cycle through the split bytes: 1..127 bytes, 64..8192, 0 the rest. */
        uint8_t s = split[chunk_no++ % 4];
        size_t n = s == 0 ? len - off : s < 128 ? s : (size_t)(s - 127) * 64;
        if (n > len - off)
            n = len - off;
        for (int tries = 0; n > 0 && tries < 1000; tries++) {
            ssize_t k = write(client_fd, stream + off, n);
            if (k > 0) {
                off += (size_t)k;
                n -= (size_t)k;
            } else if (k < 0 && errno != EAGAIN && errno != EINTR) {
                off = len; /* the worker closed on us: the rest is not sent */
                break;
            } else {
                /* The worker does not read while its output is over the high-water mark. */
                client_paused = 0;
                step();
            }
        }
        step();
    }
    settle();
    if (client_paused) {
        /* A web server that read nothing until now: the output waited in the worker. */
        client_paused = 0;
        settle();
    }

    /* The web server goes away (or first half-closes); the worker must let go of everything. */
    if (flags & F_HALF_CLOSE) {
        shutdown(client_fd, SHUT_WR);
        settle();
    }
    close(client_fd);
    client_fd = -1;
    for (i = 0; i < MAX_STEPS; i++) {
        int busy = 0;
        for (int j = 0; j < nhandlers; j++)
            busy |= !handlers[j].done;
        step();
        if (!busy && mf_ffi_worker_connections(W) == 0 && mf_ffi_worker_requests(W) == 0)
            break;
    }
    if (mf_ffi_worker_connections(W) != 0 || mf_ffi_worker_requests(W) != 0) {
        fprintf(stderr, "fuzz_http: %u connections and %u requests left after the close\n",
                mf_ffi_worker_connections(W), mf_ffi_worker_requests(W));
        abort();
    }
    for (int j = 0; j < nhandlers; j++)
        ASSERT(handlers[j].done);

    check_output();
    if (getenv("FUZZ_HTTP_TRACE"))
        fprintf(stderr, "fuzz_http: %zu bytes in, %d handed over, %zu bytes out\n", len, nnew,
                out_len);
    return 0;
}
