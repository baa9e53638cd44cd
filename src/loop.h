/*
 * The state one worker's event loop shares with its connections and requests: the loop, its
 * clock, the queue of events Lua takes in mf_ffi_worker_poll(), and the tokens of referenced
 * blocks libevent let go. Connections (conn.c), protocols and requests include this, never
 * worker.h: the worker drives them, they do not call up into it.
 */
#ifndef MF_LOOP_H
#define MF_LOOP_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "config.h"
#include "ffi.h"
#include "resolver.h"
#include "status.h"

typedef struct mf_conn mf_conn_t;
typedef struct mf_listener mf_listener_t;

/* Output above this many bytes on a connection suspends writers and input parsing. */
#define MF_OUT_HIGH (256 * 1024)
/* Writers suspended by MF_OUT_HIGH resume when output falls below this. */
#define MF_OUT_LOW (64 * 1024)
/*
 * A batch whose finished answers hold this much output writes them as each request ends,
 * not at the end of the batch: small answers still leave in one write per connection, large
 * ones reach the web server while the rest of the batch runs.
 */
#define MF_FLUSH_EARLY (32 * 1024)
/* Unread STDIN or DATA above this on a request stops reading from its connection. */
#define MF_IN_HIGH (1024 * 1024)
/* The worker's scratch buffer, for reads. */
#define MF_SCRATCH (64 * 1024)

typedef struct mf_timer {
    struct event ev;
    mf_worker_t *w;
    uint64_t token;
    struct mf_timer *next_free;
    struct mf_timer *next_all; /* every timer ever made, pooled or pending: freed at the end */
} mf_timer_t;

/* A block of Lua string that a connection's output references instead of copying. */
typedef struct mf_ref {
    mf_worker_t *w;
    uint64_t token;
    struct mf_ref *next_free;
    struct mf_ref *next_all;
} mf_ref_t;

typedef struct mf_event_queue {
    mf_event_t *ev;
    uint32_t len;
    uint32_t cap;
} mf_event_queue_t;

struct mf_worker {
    struct event_base *base;
    mf_config_t cfg;
    int number;
    int app_version;

    mf_listener_t *listeners;
    int accept_paused; /* listeners disabled at --max-conns */

    mf_conn_t *conns; /* all open connections */
    unsigned nconns;
    mf_conn_t *dirty; /* connections with output to write before the loop sleeps */
    size_t unflushed; /* bytes added to the dirty connections' output since their last write */

    /* Requests by slot; slot numbers are the Lua scheduler's keys. */
    mf_request_t **slots;
    uint32_t nslots;
    uint32_t *free_slots;
    uint32_t nfree_slots;
    uint32_t serial;
    unsigned nreqs; /* requests in flight, for --max-reqs */
    mf_request_t *req_pool;
    mf_request_t *reqs; /* all requests, for the timeout sweep */

    mf_timer_t *timer_pool;
    mf_timer_t *timers; /* all of them, through next_all */
    mf_ref_t *ref_pool;
    mf_ref_t *refs;                    /* all of them, through next_all */
    uint64_t *released, *released_lua; /* tokens of referenced blocks libevent let go */
    uint32_t nreleased, released_cap, released_lua_cap;

    mf_event_queue_t pending;   /* filled by callbacks */
    mf_event_queue_t delivered; /* read by Lua after a poll */

    struct event tick;      /* periodic sweep of timeouts */
    struct event poll_wake; /* bounds a poll with a timeout */
    struct event sigterm, sigint, sighup;

    unsigned roles; /* bit (1 << role) for each role the app defines */
    int stopping;   /* graceful stop: no new connections or requests */
    double stop_deadline;
    int killed;    /* in-flight requests were told to end */
    char *scratch; /* 64 KiB for management records */

    uint64_t served;        /* requests completed, for status */
    uint64_t accepted;      /* connections accepted */
    int local_version;      /* app versions loaded, when there is no master */
    mf_shared_t *shared;    /* the master's shared area, or NULL (tests) */
    mf_worker_slot_t *slot; /* this worker's slot in it */
    double rss_checked;
    size_t params_pending;   /* params bytes held by requests whose params are unfinished */
    size_t body_reserved;    /* bytes unfinished bodies reserved ahead of their arrival */
    double now, wall;        /* mf_worker_now and mf_worker_wall of this turn */
    int now_valid;           /* now and wall were read in this turn */
    mf_resolver_t *resolver; /* started by the first name look-up (resolver.c) */
    char *resolver_servers;  /* cfg.resolver's copy when set by mf_ffi_resolver_configure */
    struct mf_sock *socks;   /* outbound sockets not yet closed (socket.c) */
    unsigned nsocks;         /* those with an fd, for --max-sockets */
    void *ssl_ctx;           /* the TLS client context (SSL_CTX), made by the first handshake */

    /* Called when a connection goes away (set by worker.c: accepting resumes under
     * --max-conns); the connection layer does not know who listens. */
    void (*conn_closed)(mf_worker_t *w);
};

/* Appends an event for Lua (the request's fields are the caller's to fill, see
 * mf__request_push); NULL when out of memory. */
mf_event_t *mf__worker_event(mf_worker_t *w, int type, uint64_t token);

/* Records that a referenced block was let go; Lua unpins it at its next step. */
void mf__worker_released(mf_worker_t *w, uint64_t token);

/*
 * The loop's time in seconds, read once per turn of the loop (the first call after the turn
 * began reads the clock, the others reuse it). CLOCK_MONOTONIC: every timeout and idle time is
 * measured with it, so a step of the wall clock neither fires nor delays any of them.
 */
double mf_worker_now(mf_worker_t *w);

/* The wall clock (seconds since the epoch) read at the same moment: moonfcgi.now(). */
double mf_worker_wall(mf_worker_t *w);

/* A new turn of the loop begins: the next mf_worker_now reads the clocks again. */
void mf__worker_new_turn(mf_worker_t *w);

#endif
