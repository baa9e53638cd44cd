/*
 * One connection, whatever its protocol: the socket, its input and output buffers, the table
 * of the requests attached to it, backpressure, the graceful close and the deferred one.
 *
 * A connection knows its protocol through a table of operations (mf_proto_t, in the manner
 * of redis's ConnectionType): how input is parsed into requests, how a request's output is
 * framed and how it ends. fcgi.c and http.c provide the two tables; the request object calls
 * the mf_conn_* functions below and never learns which protocol it is on.
 *
 * Closing is deferred while the connection is in use (redis's CONN_FLAG_CLOSE_SCHEDULED):
 * a callback holds the connection (mf_conn_hold), anything it calls may close it
 * (mf_conn_close), and the memory goes when the last hold is released. A closed connection
 * reads, writes and parses nothing more; code that loops over input checks mf_conn_closed().
 */
#ifndef MF_CONN_H
#define MF_CONN_H

#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/event_struct.h>

#include "loop.h"

#define MF_CONN_BUCKETS 16

/* What a connection tells the requests attached to it (mf_conn_link_t.notify). */
enum {
    MF_CONN_LOST = 1,    /* the connection is gone: the link is already detached */
    MF_CONN_ROOM = 2,    /* output fell below MF_OUT_LOW (asked for by mf_conn_wait_room) */
    MF_CONN_FLUSHED = 4, /* everything up to the flush target was written */
};

/* What a request is to its connection; embedded in the request. */
typedef struct mf_conn_link {
    struct mf_conn_link *next; /* chain in the connection's table */
    mf_request_t *req;
    void (*notify)(struct mf_conn_link *l, unsigned what);
    uint64_t flush_target; /* mf_conn_wait_flushed waits until out_written reaches it */
    uint16_t id;
    unsigned waits : 3;   /* MF_CONN_ROOM | MF_CONN_FLUSHED still to report */
    unsigned stalled : 1; /* counted in in_stalled */
} mf_conn_link_t;

typedef struct mf_proto {
    const char *name;
    /* Bytes of a connection of this protocol (an mf_conn_t first, the protocol's state after). */
    size_t conn_size;
    /*
     * The socket is readable: read and handle what came. Returns what read(2) did: bytes read,
     * 0 at EOF, -1 with errno. The connection closes on EOF and on errors other than EAGAIN.
     */
    ssize_t (*read)(mf_conn_t *c);
    /*
     * Output of a request on stream MF_STDOUT or MF_STDERR: a then b. With a token, b is
     * referenced instead of copied (mf_conn_add_ref) and *nrefs counts each reference made,
     * even when the output then failed: its release comes all the same. Returns 0, or -1 when
     * out of memory (the protocol then calls mf_conn_out_failed).
     */
    int (*output)(mf_conn_t *c, mf_conn_link_t *l, int stream, const void *a, size_t alen,
                  const void *b, size_t blen, uint64_t token, int *nrefs);
    /* The handler flushes: output the protocol holds back goes into the output buffer. */
    int (*commit)(mf_conn_t *c, mf_conn_link_t *l);
    /*
     * The request is complete: its end goes out and it is detached. output_done says whether
     * its output stream is to be closed (0 for a request aborted before it answered).
     */
    void (*end)(mf_conn_t *c, mf_conn_link_t *l, uint32_t app_status, int output_done);
    /* The protocol's own timeouts (a request head that does not arrive); may be NULL. */
    void (*tick)(mf_conn_t *c, double now);
    /* Frees the protocol's state; the requests are already detached. May be NULL. */
    void (*free)(mf_conn_t *c);
} mf_proto_t;

struct mf_conn {
    mf_worker_t *w;
    const mf_proto_t *proto;
    int fd;
    struct event rev, wev;
    struct evbuffer *in, *out;

    mf_conn_link_t *buckets[MF_CONN_BUCKETS]; /* attached requests by id */
    unsigned nreqs;
    unsigned in_stalled; /* requests whose unread input is over MF_IN_HIGH */
    unsigned refs;       /* holds: the memory stays until the last is released */

    unsigned reading : 1;     /* rev is added */
    unsigned writing : 1;     /* wev is added */
    unsigned is_dirty : 1;    /* on w->dirty */
    unsigned closing : 1;     /* close once the requests in flight are done */
    unsigned shut : 1;        /* SHUT_WR sent; input is read and discarded until EOF */
    unsigned has_waiters : 1; /* some request waits for room or for a flush */
    unsigned closed : 1;      /* mf_conn_close ran; freed when the last hold goes */
    unsigned paused : 1;      /* the protocol takes no more input for now */
    unsigned broken : 1;      /* an append to out failed: the connection closes at the flush */

    double last_active;
    mf_conn_t *next, *prev; /* w->conns */
    mf_conn_t *dirty_next;
    uint64_t requests;    /* requests begun on this connection */
    uint64_t out_added;   /* bytes ever appended to out, in whole protocol units */
    uint64_t out_written; /* bytes ever written from out */
};

/* Takes ownership of fd (a connected, non-blocking socket). NULL on failure (fd is closed). */
mf_conn_t *mf_conn_new(mf_worker_t *w, int fd, const mf_proto_t *proto);

/*
 * Closes at once: attached requests are told MF_CONN_LOST (those owned by Lua see aborted()).
 * While the connection is held, only its memory waits for the last mf_conn_release.
 */
void mf_conn_close(mf_conn_t *c);

/* Holds the connection across a call that may close it; release frees it if it closed. */
void mf_conn_hold(mf_conn_t *c);
void mf_conn_release(mf_conn_t *c);

static inline int mf_conn_closed(const mf_conn_t *c)
{
    return c->closed;
}

/* Stops taking requests and closes gracefully once those in flight are done. */
void mf_conn_close_when_done(mf_conn_t *c);

/* Marks output to be written before the loop sleeps. */
void mf_conn_output_added(mf_conn_t *c);

/* Writes the output of every dirty connection; called before the loop blocks. */
void mf_conn_flush_dirty(mf_worker_t *w);

/* Writes what the output buffer holds now, once, without waiting (before a close). */
void mf_conn_send_now(mf_conn_t *c);

/*
 * Appends n bytes to the output; -1 when out of memory. Any failure to append breaks the
 * connection (mf_conn_out_failed): nothing more is added to it, what was counted before the
 * failure (whole records, whole answers) is written if the socket takes it at once, and it
 * is closed at the next flush (never in the caller's hands), so a record header never goes
 * out without its content, and the other connections go on.
 */
int mf_conn_add(mf_conn_t *c, const void *p, size_t n);

/* An append to the output failed: breaks the connection as above; returns -1. */
int mf_conn_out_failed(mf_conn_t *c);

/* Moves all of src to the output; -1 when out of memory (the connection breaks). */
int mf_conn_add_buffer(mf_conn_t *c, struct evbuffer *src);

/*
 * Appends a reference to the n bytes at p to dst (the output, or a buffer that later moves
 * to it): the caller keeps p alive until the worker reports token as released
 * (mf_ffi_worker_released), once libevent is done with it. Bytes added to the output this
 * way are counted by mf_conn_counted, not here. -1 when out of memory (the reference was not
 * made; the caller breaks the connection if dst is the output).
 */
int mf_conn_add_ref(mf_conn_t *c, struct evbuffer *dst, const void *p, size_t n, uint64_t token);

/* n bytes were appended to the output by hand (evbuffer_add on c->out). */
void mf_conn_counted(mf_conn_t *c, size_t n);

/* The request output functions: they go through the protocol (mf_proto_t). */
int mf_conn_output(mf_conn_t *c, mf_conn_link_t *l, int stream, const void *a, size_t alen,
                   const void *b, size_t blen, uint64_t token, int *nrefs);
void mf_conn_end(mf_conn_t *c, mf_conn_link_t *l, uint32_t app_status, int output_done);

/*
 * Backpressure. wait_room: MF_OK when the output is under MF_OUT_HIGH, else MF_WAIT and the
 * link is told MF_CONN_ROOM later. wait_flushed: MF_OK when everything appended so far is
 * written (after the protocol's commit), else MF_WAIT and MF_CONN_FLUSHED later; -1 (out of
 * memory) from the commit. stall: whether the link's unread input is over MF_IN_HIGH; while
 * any link stalls, the connection does not read.
 */
int mf_conn_wait_room(mf_conn_t *c, mf_conn_link_t *l);
int mf_conn_wait_flushed(mf_conn_t *c, mf_conn_link_t *l);
void mf_conn_stall(mf_conn_t *c, mf_conn_link_t *l, int on);

/* Attaches a request under an id that is not attached; detaches it. */
void mf_conn_attach(mf_conn_t *c, mf_conn_link_t *l, uint16_t id);
void mf_conn_detach(mf_conn_t *c, mf_conn_link_t *l);

/* Looks up an attached request; NULL if the id is not attached. */
mf_conn_link_t *mf_conn_find(mf_conn_t *c, uint16_t id);

/* Re-evaluates whether the connection should read (stalls, output, the protocol's pause). */
void mf_conn_update_reading(mf_conn_t *c);

/* Sweeps idle connections, lingering closes and the protocols' timeouts. */
void mf_conn_sweep(mf_worker_t *w, double now);

#endif
