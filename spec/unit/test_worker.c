/*
 * Unit tests of src/worker.c: the event queue that mf_ffi_worker_poll hands to Lua, timers,
 * and the graceful stop (docs/api.md: no new connections, requests in flight finish, those still
 * running at the deadline are told to end).
 */
#include "conn.h"
#include "ffi.h"
#include "log.h"
#include "record.h"
#include "request.h"
#include "worker.h"
#include "unit.h"

#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 2048

static mf_worker_t *W;
static mf_event_t events[MAX_EVENTS];
static int nevents;
static int finished_poll; /* mf_ffi_worker_poll said the worker is done */

static void setup(double timeout)
{
    mf_ffi_options_t o;

    memset(&o, 0, sizeof o);
    o.timeout = timeout;
    o.log_level = MF_LOG_ERROR;
    W = mf_ffi_worker_new(&o);
    if (!W)
        abort();
    nevents = 0;
    finished_poll = 0;
}

static int poll_once(int timeout_ms)
{
    mf_event_t *ev;
    int n = mf_ffi_worker_poll(W, timeout_ms, &ev);

    if (n < 0) {
        finished_poll = 1;
        return 0;
    }
    for (int i = 0; i < n && nevents < MAX_EVENTS; i++)
        events[nevents++] = ev[i];
    return n;
}

static double now(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Polls for a while (sleeping in the poll), or until the worker says it is done. */
static void run_for(double seconds)
{
    double end = now() + seconds;

    while (now() < end && !finished_poll)
        poll_once(5);
}

static int count(int type)
{
    int k = 0;

    for (int i = 0; i < nevents; i++)
        k += events[i].type == type;
    return k;
}

static mf_event_t *nth(int type, int n)
{
    for (int i = 0; i < nevents; i++)
        if (events[i].type == type && n-- == 0)
            return &events[i];
    return NULL;
}

/* A connection and what its client end read. */
typedef struct client {
    int fd;
    int eof;
    uint8_t in[65536];
    size_t len;
} client_t;

static void connect_client(client_t *cl)
{
    memset(cl, 0, sizeof *cl);
    if (mf_ffi_worker_pair(W, &cl->fd) != 0)
        abort();
}

static void drain(client_t *cl)
{
    ssize_t k;

    while (!cl->eof && (k = read(cl->fd, cl->in + cl->len, sizeof cl->in - cl->len)) >= 0) {
        if (k == 0)
            cl->eof = 1;
        cl->len += (size_t)k;
        if (cl->len == sizeof cl->in)
            break;
    }
}

static void send_raw(client_t *cl, const void *p, size_t n)
{
    CHECK_EQ(write(cl->fd, p, n), (ssize_t)n);
}

static void send_record(client_t *cl, int type, int id, const void *content, size_t len)
{
    uint8_t h[8] = {1,
                    (uint8_t)type,
                    (uint8_t)(id >> 8),
                    (uint8_t)id,
                    0,
                    (uint8_t)len,
                    (uint8_t)((8 - (len & 7)) & 7),
                    0};
    static const uint8_t pad[8];

    send_raw(cl, h, 8);
    send_raw(cl, content, len);
    send_raw(cl, pad, h[6]);
}

static void send_begin(client_t *cl, int id)
{
    static const uint8_t body[8] = {0, MF_RESPONDER, MF_KEEP_CONN};
    send_record(cl, MF_BEGIN_REQUEST, id, body, 8);
}

/* A whole request: BEGIN, empty params, empty stdin. */
static void send_request(client_t *cl, int id)
{
    send_begin(cl, id);
    send_record(cl, MF_PARAMS, id, NULL, 0);
    send_record(cl, MF_STDIN, id, NULL, 0);
}

/* The protocol status of id's END_REQUEST in what cl read, or -1; *stdout_bytes its output. */
static int end_status(const client_t *cl, int id, const char **out, size_t *out_len)
{
    static char buf[65536];
    size_t off = 0, olen = 0;
    int ps = -1;

    while (cl->len - off >= 8) {
        const uint8_t *h = cl->in + off;
        size_t clen = (size_t)(h[4] << 8 | h[5]), total = 8 + clen + h[6];
        if (cl->len - off < total)
            break;
        if ((h[2] << 8 | h[3]) == id) {
            if (h[1] == MF_END_REQUEST && clen == 8)
                ps = h[8 + 4];
            if (h[1] == MF_STDOUT && olen + clen <= sizeof buf) {
                memcpy(buf + olen, h + 8, clen);
                olen += clen;
            }
        }
        off += total;
    }
    if (out) {
        *out = buf;
        *out_len = olen;
    }
    return ps;
}

static int starts(const char *p, size_t n, const char *prefix)
{
    return n >= strlen(prefix) && memcmp(p, prefix, strlen(prefix)) == 0;
}

static void timers(void)
{
    void *t1, *t2, *t3;

    setup(0);
    t1 = mf_ffi_timer_start(W, 0.01, 1);
    t2 = mf_ffi_timer_start(W, 0.01, 2);
    t3 = mf_ffi_timer_start(W, 0.02, 3);
    CHECK(t1 && t2 && t3 && t1 != t2 && t2 != t3);
    mf_ffi_timer_cancel(W, t2, 2);
    run_for(0.1);
    CHECK_EQ(count(MF_EV_TIMER), 2);
    CHECK(nth(MF_EV_TIMER, 0) && nth(MF_EV_TIMER, 0)->token == 1);
    CHECK(nth(MF_EV_TIMER, 1) && nth(MF_EV_TIMER, 1)->token == 3);
    CHECK(nth(MF_EV_TIMER, 0) && nth(MF_EV_TIMER, 0)->req == NULL);

    /* A fired timer's memory serves the next one: cancelling the old token does nothing. */
    nevents = 0;
    t1 = mf_ffi_timer_start(W, 0.01, 10);
    run_for(0.05);
    CHECK_EQ(count(MF_EV_TIMER), 1);
    t2 = mf_ffi_timer_start(W, 0.03, 11);
    CHECK(t2 == t1); /* reused from the pool */
    mf_ffi_timer_cancel(W, t1, 10);
    mf_ffi_timer_cancel(W, NULL, 11);
    run_for(0.08);
    CHECK_EQ(count(MF_EV_TIMER), 2);
    CHECK(nth(MF_EV_TIMER, 1) && nth(MF_EV_TIMER, 1)->token == 11);

    /* Negative, NaN and huge delays are clamped, not undefined. */
    nevents = 0;
    t1 = mf_ffi_timer_start(W, -5, 20);
    t2 = mf_ffi_timer_start(W, NAN, 21);
    t3 = mf_ffi_timer_start(W, 1e300, 22);
    run_for(0.03);
    CHECK_EQ(count(MF_EV_TIMER), 2);
    mf_ffi_timer_cancel(W, t3, 22);
    mf_ffi_worker_free(W);
}

/* More events in one poll than the queue's first allocation (256). */
static void event_queue_grows(void)
{
    int seen[600] = {0}, dup = 0, missing = 0;

    setup(0);
    for (int i = 0; i < 600; i++)
        mf_ffi_timer_start(W, 0, (uint64_t)i);
    for (int i = 0; i < 20 && count(MF_EV_TIMER) < 600; i++)
        poll_once(10);
    CHECK_EQ(count(MF_EV_TIMER), 600);
    for (int i = 0; i < nevents; i++)
        if (events[i].type == MF_EV_TIMER && events[i].token < 600)
            dup += seen[events[i].token]++ > 0;
    for (int i = 0; i < 600; i++)
        missing += !seen[i];
    CHECK_EQ(dup, 0);
    CHECK_EQ(missing, 0);
    mf_ffi_worker_free(W);
}

/*
 * A pending timer when the worker is freed: its memory must go with the worker (the
 * sanitizer build's leak check fails otherwise).
 */
static void pending_timer_freed_with_the_worker(void)
{
    setup(0);
    CHECK(mf_ffi_timer_start(W, 100, 1) != NULL);
    mf_ffi_worker_free(W);
}

static void graceful_stop(void)
{
    client_t busy, idle, slow;
    mf_event_t *e1, *e2;
    const char *out;
    size_t olen;

    setup(0.3); /* --timeout: the stop's deadline */
    connect_client(&busy);
    connect_client(&idle);
    connect_client(&slow);
    send_request(&busy, 1);
    send_begin(&slow, 1); /* params never end */
    run_for(0.02);
    e1 = nth(MF_EV_NEW, 0);
    CHECK(e1 != NULL);
    if (!e1)
        goto end;
    CHECK_EQ(mf_ffi_worker_requests(W), 2);

    mf_ffi_worker_stop(W);
    run_for(0.05);
    drain(&idle);
    drain(&busy);
    CHECK_EQ(idle.eof, 1); /* nothing in flight: closed at once */
    CHECK_EQ(busy.eof, 0);
    /* Before the deadline, requests on open connections are still served. */
    send_request(&busy, 2);
    run_for(0.02);
    e2 = nth(MF_EV_NEW, 1);
    CHECK(e2 != NULL);
    mf_ffi_req_finish(e1->req, 0, MF_FINISH_OK);
    run_for(0.02);
    drain(&busy);
    CHECK_EQ(end_status(&busy, 1, NULL, NULL), MF_REQUEST_COMPLETE);
    CHECK_EQ(count(MF_EV_KILL), 0);

    /* At the deadline: the handler still running is told to end, params still coming get a
     * 503, and a new request is refused. */
    run_for(0.4);
    CHECK_EQ(count(MF_EV_KILL), 1);
    if (e2 && nth(MF_EV_KILL, 0)) {
        CHECK(nth(MF_EV_KILL, 0)->req == e2->req);
        CHECK_EQ(nth(MF_EV_KILL, 0)->serial, e2->serial);
    }
    drain(&slow);
    CHECK_EQ(end_status(&slow, 1, &out, &olen), MF_REQUEST_COMPLETE);
    CHECK(starts(out, olen, "Status: 503 Service Unavailable\r\n"));
    send_request(&busy, 3);
    run_for(0.02);
    drain(&busy);
    CHECK_EQ(end_status(&busy, 3, NULL, NULL), MF_OVERLOADED);
    CHECK_EQ(count(MF_EV_NEW), 2);
    if (e2)
        mf_ffi_req_finish(e2->req, 0, MF_FINISH_TIMEOUT);
    run_for(0.05);
    drain(&busy);
    CHECK_EQ(end_status(&busy, 2, &out, &olen), MF_REQUEST_COMPLETE);
    CHECK(starts(out, olen, "Status: 504 Gateway Timeout\r\n"));
    CHECK_EQ(mf_ffi_worker_requests(W), 0);
    /* Idle connections are closed; once the web server closes too, the worker is done. */
    run_for(1.2);
    drain(&busy);
    drain(&slow);
    CHECK_EQ(busy.eof, 1);
    CHECK_EQ(slow.eof, 1);
    CHECK_EQ(finished_poll, 0);
end:
    close(busy.fd);
    close(idle.fd);
    close(slow.fd);
    run_for(0.5);
    CHECK_EQ(mf_ffi_worker_connections(W), 0);
    CHECK_EQ(finished_poll, 1);
    mf_ffi_worker_free(W);
}

/* Freeing a worker with requests and connections in flight ends them all. */
static void free_with_work_in_flight(void)
{
    client_t a, b;

    setup(0);
    connect_client(&a);
    connect_client(&b);
    send_request(&a, 1);
    send_begin(&b, 7);
    run_for(0.02);
    CHECK_EQ(count(MF_EV_NEW), 1);
    CHECK_EQ(mf_ffi_worker_requests(W), 2);
    CHECK_EQ(mf_ffi_worker_connections(W), 2);
    CHECK_EQ(mf_ffi_worker_number(W), 1);
    CHECK(mf_ffi_worker_now(W) > 1e9);
    mf_ffi_worker_free(W);
    drain(&a);
    drain(&b);
    CHECK_EQ(a.eof, 1);
    CHECK_EQ(b.eof, 1);
    close(a.fd);
    close(b.fd);
}

int main(void)
{
    static const struct unit_test tests[] = {
        {"timers", timers},
        {"event_queue_grows", event_queue_grows},
        {"pending_timer_freed_with_the_worker", pending_timer_freed_with_the_worker},
        {"graceful_stop", graceful_stop},
        {"free_with_work_in_flight", free_with_work_in_flight},
        {NULL, NULL},
    };

    signal(SIGPIPE, SIG_IGN);
    return unit_run(tests);
}
