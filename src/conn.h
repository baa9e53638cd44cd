/*
 * One connection from a web server: its input and output buffers, the table of its active
 * request ids, keep-conn, backpressure and the graceful close.
 */
#ifndef MF_CONN_H
#define MF_CONN_H

#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/event_struct.h>

#include "worker.h"

#define MF_CONN_BUCKETS 16

struct mf_conn {
    mf_worker_t *w;
    int fd;
    struct event rev, wev;
    struct evbuffer *in, *out;

    mf_request_t *buckets[MF_CONN_BUCKETS]; /* active requests by id */
    unsigned nreqs;
    unsigned in_stalled; /* requests whose unread input is over MF_IN_HIGH */

    unsigned reading : 1;     /* rev is added */
    unsigned writing : 1;     /* wev is added */
    unsigned is_dirty : 1;    /* on w->dirty */
    unsigned closing : 1;     /* close once the requests in flight are done */
    unsigned shut : 1;        /* SHUT_WR sent; input is read and discarded until EOF */
    unsigned has_waiters : 1; /* some request waits for room or for a flush */
    unsigned broken : 1;      /* an append to out failed: the connection closes at the flush */

    /*
     * A STDIN or DATA record of a request that gathers its body, whose header has been
     * handled but whose content is still arriving: the rest is read straight into the
     * request's body block (read_input). Nothing is buffered in `in` meanwhile.
     */
    size_t part_left; /* content bytes of it still to come */
    size_t skip;      /* padding bytes still to drop, once part_left is 0 */
    uint16_t part_id;
    uint8_t part_type;
    uint8_t part_pad;

    double last_active;
    mf_conn_t *next, *prev; /* w->conns */
    mf_conn_t *dirty_next;
    uint64_t requests;    /* requests begun on this connection */
    uint64_t out_added;   /* bytes ever appended to out, in whole records */
    uint64_t out_written; /* bytes ever written from out */
};

/* Takes ownership of fd (a connected, non-blocking socket). NULL on failure (fd is closed). */
mf_conn_t *mf_conn_new(mf_worker_t *w, int fd);

/* Closes at once: requests owned by Lua are detached and see aborted(); the rest are freed. */
void mf_conn_destroy(mf_conn_t *c);

/* Stops taking requests and closes gracefully once those in flight are done. */
void mf_conn_close_when_done(mf_conn_t *c);

/* Marks output to be written before the loop sleeps. */
void mf_conn_output_added(mf_conn_t *c);

/* Writes the output of every dirty connection; called before the loop blocks. */
void mf_conn_flush_dirty(mf_worker_t *w);

/*
 * Appends one whole record (header, content, padding) to the output; -1 when out of memory.
 * Any failure to append breaks the connection: nothing more is added to it, the whole records
 * before the failure are written if the socket takes them at once, and it is destroyed at the
 * next flush (never in the caller's hands), so a record header never goes out without its
 * content, and the other connections go on.
 */
int mf_conn_add_record(mf_conn_t *c, uint8_t type, uint16_t id, const void *content, size_t len);

/* The same with content in two parts (a then b), alen + blen <= MF_MAX_CONTENT. */
int mf_conn_add_record2(mf_conn_t *c, uint8_t type, uint16_t id, const void *a, size_t alen,
                        const void *b, size_t blen);

/*
 * The same, with b referenced instead of copied: the caller keeps b alive until the worker
 * reports token as released (mf_ffi_worker_released), once libevent is done with it. *nrefs
 * is incremented when the reference was made, even if the record then failed: its release
 * comes all the same.
 */
int mf_conn_add_record_ref(mf_conn_t *c, uint8_t type, uint16_t id, const void *a, size_t alen,
                           const void *b, size_t blen, uint64_t token, int *nrefs);

/* Called by request.c when a request is removed from the connection. */
void mf__conn_request_gone(mf_conn_t *c, mf_request_t *r);

/* Re-evaluates whether the connection should read (input stalls, output backpressure). */
void mf__conn_update_reading(mf_conn_t *c);

/* Looks up an active request; NULL if the id is not active. */
mf_request_t *mf__conn_find(mf_conn_t *c, uint16_t id);

/* Sweeps idle connections and lingering closes. */
void mf__conn_sweep(mf_worker_t *w, double now);

#endif
