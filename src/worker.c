/*
 * The worker's event loop as seen from Lua: mf_ffi_worker_poll() writes pending output, runs
 * the loop once and hands over the events that callbacks queued (new requests, wake-ups,
 * timeouts, timers). The scheduler in lua/moonfcgi/runtime.lua drives it.
 */
#include "worker.h"
#include "conn.h"
#include "listener.h"
#include "log.h"
#include "request.h"
#include "socket.h"

#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <event2/event.h>

mf_worker_t *mf_worker_current;

static struct timeval to_timeval(double seconds)
{
    struct timeval tv;

    tv.tv_sec = (time_t)seconds;
    tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
    return tv;
}

/* At the graceful stop's deadline, requests still running are told to end. */
static void kill_requests(mf_worker_t *w)
{
    mf_request_t *r, *next;

    w->killed = 1;
    for (r = w->reqs; r; r = next) {
        next = r->next;
        if (r->lua)
            mf__request_push(r, MF_EV_KILL);
        else if (r->conn)
            mf_request_reject(r, 503, "server stopping\n");
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    mf_worker_t *w = arg;
    double now = mf_worker_now(w);

    (void)fd;
    (void)what;
    mf__request_sweep(w, now);
    mf_conn_sweep(w, now);
    if (w->slot) {
        /* The heartbeat: the master replaces a worker whose loop stops ticking. */
        w->slot->heartbeat = mf_status_clock();
        w->slot->served = w->served;
        w->slot->accepted = w->accepted;
        w->slot->in_flight = w->nreqs;
        w->slot->conns = w->nconns;
        w->slot->app_version = w->app_version;
        if (now - w->rss_checked >= 1.0) {
            w->rss_checked = now;
            w->slot->rss_kib = mf_status_rss_kib();
        }
    }
    if (w->stopping && !w->killed && now >= w->stop_deadline)
        kill_requests(w);
}

static void on_poll_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    mf_worker_t *w = arg;

    (void)what;
    if (sig == SIGHUP) {
        mf__worker_event(w, MF_EV_RELOAD, 0);
        return;
    }
    mf_log_info("signal %d: stopping gracefully (%u requests in flight)", (int)sig, w->nreqs);
    mf_worker_stop(w);
}

/* A connection went away: resume accepting if --max-conns paused it. */
static void on_conn_closed(mf_worker_t *w)
{
    if (w->accept_paused && w->nconns < w->cfg.max_conns && !w->stopping) {
        w->accept_paused = 0;
        mf_listener_enable_all(w, 1);
    }
}

mf_worker_t *mf_worker_new(const mf_config_t *cfg, int number)
{
    mf_worker_t *w = calloc(1, sizeof *w);
    struct event_config *ecfg;
    double shortest, interval;
    struct timeval tv;

    if (!w)
        return NULL;
    w->cfg = *cfg;
    w->number = number;
    /* The precise (CLOCK_MONOTONIC) timer: with the coarse clock, a 10 ms sleep woke up to
     * 4 ms early here and waited again, adding about 2 ms to every moonfcgi.sleep. */
    if ((ecfg = event_config_new()) != NULL) {
        event_config_set_flag(ecfg, EVENT_BASE_FLAG_PRECISE_TIMER);
        w->base = event_base_new_with_config(ecfg);
        event_config_free(ecfg);
    }
    w->scratch = malloc(MF_SCRATCH);
    if (!w->base || !w->scratch) {
        mf_worker_free(w);
        return NULL;
    }
    w->roles = 0xe; /* all three until the app says otherwise */
    w->conn_closed = on_conn_closed;
    /* Timeouts are checked by a sweep: no timer per request on the hot path. */
    shortest = fmin(cfg->timeout, fmin(cfg->idle_timeout, cfg->read_timeout));
    interval = fmax(0.02, fmin(1.0, shortest / 4));
    tv = to_timeval(interval);
    event_assign(&w->tick, w->base, -1, EV_PERSIST, on_tick, w);
    event_add(&w->tick, &tv);
    evtimer_assign(&w->poll_wake, w->base, on_poll_wake, w);
    return w;
}

int mf_worker_catch_signals(mf_worker_t *w)
{
    evsignal_assign(&w->sigterm, w->base, SIGTERM, on_signal, w);
    evsignal_assign(&w->sigint, w->base, SIGINT, on_signal, w);
    evsignal_assign(&w->sighup, w->base, SIGHUP, on_signal, w);
    if (evsignal_add(&w->sigterm, NULL) < 0 || evsignal_add(&w->sigint, NULL) < 0 ||
        evsignal_add(&w->sighup, NULL) < 0)
        return -1;
    return 0;
}

void mf_worker_stop(mf_worker_t *w)
{
    if (w->stopping)
        return;
    w->stopping = 1;
    w->stop_deadline = mf_worker_now(w) + w->cfg.timeout;
    mf_listener_close_all(w);
    for (mf_conn_t *c = w->conns; c; c = c->next)
        if (c->nreqs == 0)
            mf_conn_close_when_done(c);
}

void mf_worker_close(mf_worker_t *w)
{
    mf_listener_close_all(w);
    while (w->conns)
        mf_conn_close(w->conns);
    mf_socket_close_all(w);
    /* Requests still owned by Lua are not freed by their connection: end them here. */
    while (w->reqs)
        mf_request_finish(w->reqs, 0, MF_FINISH_OK);
}

void mf_worker_free(mf_worker_t *w)
{
    if (!w)
        return;
    mf_worker_close(w);
    mf__request_pool_free(w);
    while (w->refs) {
        mf_ref_t *ref = w->refs;
        w->refs = ref->next_all;
        free(ref);
    }
    free(w->released);
    free(w->released_lua);
    /* Before the base: evdns's events live on it. */
    mf_resolver_free(w);
    free(w->resolver_servers);
    /* Pending timers too: a handler may have been sleeping when the worker ended. */
    while (w->timers) {
        mf_timer_t *t = w->timers;
        w->timers = t->next_all;
        if (w->base)
            evtimer_del(&t->ev);
        free(t);
    }
    if (w->base) {
        event_del(&w->tick);
        event_del(&w->poll_wake);
        if (w->sigterm.ev_base) {
            event_del(&w->sigterm);
            event_del(&w->sigint);
            event_del(&w->sighup);
        }
        event_base_free(w->base);
    }
    free(w->pending.ev);
    free(w->delivered.ev);
    free(w->slots);
    free(w->free_slots);
    free(w->scratch);
    if (mf_worker_current == w)
        mf_worker_current = NULL;
    free(w);
}

/* The worker is done when it stops and nothing is left in flight or open. */
static int finished(mf_worker_t *w)
{
    return w->stopping && w->nreqs == 0 && w->nconns == 0 && w->pending.len == 0;
}

int mf_ffi_worker_poll(mf_worker_t *w, int timeout_ms, mf_event_t **events)
{
    mf_event_queue_t tmp;

    /* Output produced by the last batch leaves now, one write per connection. */
    mf_conn_flush_dirty(w);
    if (finished(w)) {
        *events = NULL;
        return -1;
    }
    /* One turn: its callbacks, then the handlers Lua runs on its events, share one time. */
    mf__worker_new_turn(w);
    if (w->pending.len > 0 || timeout_ms == 0) {
        event_base_loop(w->base, EVLOOP_NONBLOCK);
    } else {
        if (timeout_ms > 0) {
            struct timeval tv = to_timeval(timeout_ms / 1000.0);
            evtimer_add(&w->poll_wake, &tv);
        }
        event_base_loop(w->base, EVLOOP_ONCE);
        if (timeout_ms > 0)
            evtimer_del(&w->poll_wake);
    }
    /* Callbacks may have queued output (management answers, refusals): send it too. */
    mf_conn_flush_dirty(w);
    tmp = w->delivered;
    w->delivered = w->pending;
    w->pending = tmp;
    w->pending.len = 0;
    *events = w->delivered.ev;
    return (int)w->delivered.len;
}

uint32_t mf_ffi_worker_released(mf_worker_t *w, uint64_t **tokens)
{
    uint64_t *t = w->released_lua;
    uint32_t cap = w->released_lua_cap, n = w->nreleased;

    /* Lua reads this batch while new releases go to the other array. */
    w->released_lua = w->released;
    w->released_lua_cap = w->released_cap;
    w->released = t;
    w->released_cap = cap;
    w->nreleased = 0;
    *tokens = w->released_lua;
    return n;
}

void mf_ffi_worker_flush(mf_worker_t *w)
{
    mf_conn_flush_dirty(w);
}

void mf_ffi_worker_stop(mf_worker_t *w)
{
    mf_worker_stop(w);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    mf_timer_t *t = arg;
    mf_worker_t *w = t->w;

    (void)fd;
    (void)what;
    mf__worker_event(w, MF_EV_TIMER, t->token);
    t->next_free = w->timer_pool;
    w->timer_pool = t;
}

void *mf_ffi_timer_start(mf_worker_t *w, double seconds, uint64_t token)
{
    mf_timer_t *t = w->timer_pool;
    struct timeval tv;

    if (t) {
        w->timer_pool = t->next_free;
    } else {
        if (!(t = malloc(sizeof *t)))
            return NULL;
        t->next_all = w->timers;
        w->timers = t;
    }
    t->w = w;
    t->token = token;
    t->next_free = NULL;
    if (!(seconds >= 0))
        seconds = 0;
    if (seconds > 1e8)
        seconds = 1e8;
    tv = to_timeval(seconds);
    evtimer_assign(&t->ev, w->base, on_timer, t);
    evtimer_add(&t->ev, &tv);
    return t;
}

void mf_ffi_timer_cancel(mf_worker_t *w, void *timer, uint64_t token)
{
    mf_timer_t *t = timer;

    /* A timer that fired is back in the pool and may serve another token by now. */
    if (!t || t->token != token || !evtimer_pending(&t->ev, NULL))
        return;
    evtimer_del(&t->ev);
    t->next_free = w->timer_pool;
    w->timer_pool = t;
}
