/*
 * libFuzzer target for a connection, through the real worker and without Lua.
 *
 * Input: 4 bytes that decide how the stream is split into writes, 4 bytes that decide what
 * the handlers do, 1 byte of flags (the client reads only once all is sent, the app is a
 * responder only, the client half-closes before it closes), then the bytes a web server
 * sends; spec/fuzz/make-corpus.lua documents the bits. Per input, a new socketpair
 * connection gets the stream in chunks while the worker is polled; every request handed over
 * (MF_EV_NEW) is played by a C handler chosen from the input bits: it reads STDIN and DATA,
 * reads the body whole, writes, sets headers, flushes, writes to STDERR, finishes normally,
 * with an error or a timeout, or waits for the connection to go away and finishes then.
 * Then the client end is closed and the worker polled until it holds no connection and no
 * request.
 *
 * Aborts when: the worker keeps a request or a connection after that (a leak), a record we
 * emit breaks the framing rules (version 1, content at most 65528, content + padding a
 * multiple of 8 and at most 65535), a request id gets more END_REQUESTs than the input had
 * BEGIN_REQUESTs for it, or output for an id follows its last possible END_REQUEST. Every
 * loop is bounded: an input never hangs. FUZZ_CONN_TRACE=1 prints what an input did.
 */
#include "conn.h"
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
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ASSERT(c)                                                                                  \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_conn: %s:%d: %s\n", __FILE__, __LINE__, #c);                     \
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
            static const char head[] = "Status: 201 Created\r\nX-Raw: 1\r\n\r\n";
            ASSERT(mf_ffi_req_raw_write(h->r, head, sizeof head - 1) != MF_BAD_STATE);
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

/* Per request id: BEGINs in the input (an upper bound of what the worker saw), ENDs out. */
static uint16_t begins[65536], ends[65536];
static uint16_t touched[65536];
static size_t ntouched;

static void touch(uint16_t id)
{
    if (!begins[id] && !ends[id] && ntouched < 65536)
        touched[ntouched++] = id;
}

static void count_begins(const uint8_t *p, size_t len)
{
    size_t off = 0;
    mf_record_header_t h;

    while (mf_record_parse(p + off, len - off, &h) == MF_RECORD_OK) {
        if (h.type == MF_BEGIN_REQUEST && h.id != 0 && h.content_len == 8) {
            touch(h.id);
            if (begins[h.id] < UINT16_MAX)
                begins[h.id]++;
        }
        off += mf_record_size(&h);
    }
}

/* Checks what we sent: framing, and no answer for an id beyond the BEGINs it had. */
static void check_output(void)
{
    size_t off = 0;

    while (out_len - off >= 8) {
        const uint8_t *p = out + off;
        uint8_t type = p[1];
        uint16_t id = (uint16_t)(p[2] << 8 | p[3]);
        size_t clen = (size_t)(p[4] << 8 | p[5]), plen = p[6];

        if (out_len - off < 8 + clen + plen)
            break; /* cut by a close after a protocol error */
        ASSERT(p[0] == 1 && p[7] == 0);
        ASSERT(clen <= MF_OUT_CONTENT_MAX && clen + plen <= 65535 && (clen + plen) % 8 == 0);
        switch (type) {
        case MF_GET_VALUES_RESULT: ASSERT(id == 0); break;
        case MF_UNKNOWN_TYPE: ASSERT(id == 0 && clen == 8); break;
        case MF_STDOUT:
        case MF_STDERR:
            ASSERT(id != 0);
            ASSERT(ends[id] < begins[id]); /* nothing after the last END_REQUEST */
            break;
        case MF_END_REQUEST:
            ASSERT(id != 0 && clen == 8);
            ASSERT(p[8 + 4] == MF_REQUEST_COMPLETE || p[8 + 4] == MF_OVERLOADED ||
                   p[8 + 4] == MF_UNKNOWN_ROLE);
            touch(id);
            ends[id]++;
            ASSERT(ends[id] <= begins[id]); /* exactly one per BEGIN, never two */
            break;
        default: ASSERT(!"a record type we never send");
        }
        off += 8 + clen + plen;
    }
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
    ASSERT(mf_ffi_worker_pair(W, &client_fd) == 0);

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
        fprintf(stderr, "fuzz_conn: %u connections and %u requests left after the close\n",
                mf_ffi_worker_connections(W), mf_ffi_worker_requests(W));
        abort();
    }
    for (int j = 0; j < nhandlers; j++)
        ASSERT(handlers[j].done);

    count_begins(stream, len);
    check_output();
    if (getenv("FUZZ_CONN_TRACE")) {
        /* For reproducing a finding: what this input did. */
        unsigned nb = 0, ne = 0;
        for (size_t t = 0; t < ntouched; t++)
            nb += begins[touched[t]], ne += ends[touched[t]];
        fprintf(stderr,
                "fuzz_conn: %zu bytes in, %d handed over, %zu bytes out, %u BEGIN, %u END\n", len,
                nnew, out_len, nb, ne);
    }
    for (size_t t = 0; t < ntouched; t++)
        begins[touched[t]] = ends[touched[t]] = 0;
    ntouched = 0;
    return 0;
}
