/*
 * One request's state machine: params, the STDIN and DATA streams, the response (status,
 * CGI header block, body, handed to the connection's protocol to frame: STDOUT records for
 * FastCGI, an HTTP response for --http) and its single end.
 *
 * Ownership: a request belongs to its connection until its params are complete and a NEW
 * event hands it to Lua (r->lua). From then on only mf_request_finish(), called when the
 * handler is done, frees it; if the connection goes away first, the request is detached
 * (r->conn == NULL) and every read or write reports MF_ABORTED.
 */
#ifndef MF_REQUEST_H
#define MF_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>

#include "buf.h"
#include "conn.h"
#include "loop.h"
#include "record.h"

typedef struct mf_param {
    uint32_t name_off, name_len, value_off, value_len;
} mf_param_t;

enum { MF_WAIT_READ = 1, MF_WAIT_DATA = 2, MF_WAIT_WRITE = 4, MF_WAIT_FLUSH = 8 };

struct mf_request {
    mf_worker_t *w;
    mf_conn_t *conn;
    mf_conn_link_t link;       /* what the request is to its connection */
    mf_request_t *next, *prev; /* w->reqs */
    mf_request_t *next_free;

    uint32_t slot, serial;
    uint16_t id;
    uint8_t role;
    uint8_t keep_conn;

    unsigned lua : 1; /* handed to Lua; only mf_request_finish frees it */
    unsigned params_done : 1;
    unsigned stdin_eof : 1;
    unsigned data_eof : 1;
    unsigned aborted : 1;
    unsigned timed_out : 1; /* a TIMEOUT event was sent */
    unsigned read_timed_out : 1;
    unsigned headers_sent : 1; /* the header block is in out */
    unsigned framed : 1;       /* STDOUT bytes reached the connection */
    unsigned status_set : 1;
    unsigned raw : 1;
    unsigned cooked : 1;    /* set_status/set_header/write used */
    unsigned body_mode : 2; /* bit 0: STDIN, bit 1: DATA is read whole by body() */
    unsigned discard : 2;   /* bit 0: STDIN, bit 1: DATA past --max-body is dropped */
    unsigned waiting : 4;   /* MF_WAIT_* the handler waits for */
    unsigned ct_set : 1;    /* a Content-Type header was set */
    unsigned ended : 2;     /* bit 0: STDIN, bit 1: DATA: the peer sent the empty record */

    double begun;   /* BEGIN_REQUEST arrived */
    double started; /* the handler started */
    double wait_since;

    mf_buf_t params;
    mf_param_t *pairs;
    uint32_t npairs, pairs_cap;

    struct evbuffer *in[2]; /* unread STDIN and DATA */
    mf_buf_t whole[2];      /* STDIN and DATA gathered for body() and data() */
    size_t ahead[2];        /* of whole[], reserved from the announced length, not yet filled */

    int status;
    char reason[64];
    mf_buf_t hdrs; /* "Name: value\r\n" lines set by the handler */
    mf_buf_t out;  /* STDOUT bytes not yet framed */
};

/*
 * A new request on c under an id that is not attached, for the given role; its params come
 * next (mf_request_params). NULL when it cannot be taken, with the protocol status in *why
 * (MF_UNKNOWN_ROLE, MF_OVERLOADED); the protocol answers the refusal.
 */
mf_request_t *mf_request_new(mf_conn_t *c, uint16_t id, uint16_t role, int *why);

/*
 * Whether a PARAMS, STDIN or DATA record may come now, in the role's stream order
 * (docs/protocol.md): NULL when it may, else what is wrong with it, for the log. The caller
 * closes the connection on a record out of order: a broken stream is never resynchronised.
 */
const char *mf_request_out_of_order(const mf_request_t *r, uint8_t type);

/*
 * Handles a PARAMS record for an active request; content is len bytes. Params that pass
 * --max-params (or the worker's cap on unfinished params) end the request at once with a
 * 431: the rest of its records are then those of an inactive id, dropped as they come.
 */
void mf_request_params(mf_request_t *r, const uint8_t *content, size_t len);
/* Takes the len content bytes of a STDIN (stream 0) or DATA (stream 1) record: moved from
 * the front of src when src is given, else copied from p. */
void mf_request_input(mf_request_t *r, int stream, const uint8_t *p, struct evbuffer *src,
                      size_t len);
/*
 * Where the next n bytes of stream 0 (STDIN) or 1 (DATA) can be read straight into the block
 * body() gathers; NULL when they cannot (the stream is not gathered, has ended or is being
 * dropped, or n is past --max-body): the caller then passes them to mf_request_input.
 */
uint8_t *mf_request_body_room(mf_request_t *r, int stream, size_t n);
/* n bytes were read into the room mf_request_body_room gave. */
void mf_request_body_filled(mf_request_t *r, int stream, size_t n);

/*
 * Sizes the block body() gathers stream 0 or 1 in, which holds `have` bytes so far: for the
 * announced length `want` when it is within --max-body and the worker's unfinished bodies
 * have not reserved more than max(64 MiB, 4 x --max-body) ahead of their bytes; otherwise
 * for what is there, and the block grows as the bytes arrive. -1 when out of memory.
 */
int mf__request_reserve_body(mf_request_t *r, int stream, size_t have, size_t want);
void mf_request_abort(mf_request_t *r);

/* The connection is gone: detach or free. */
void mf_request_conn_lost(mf_request_t *r);

/* Wakes the handler if it waits for any of the MF_WAIT_* bits in what. */
void mf_request_wake(mf_request_t *r, unsigned what);

/* Ends the request: frames what is left, STDOUT end, END_REQUEST; frees it. */
void mf_request_finish(mf_request_t *r, uint32_t app_status, int how);

/* Sends a complete small response (status, plain-text body) and ends the request. */
void mf_request_reject(mf_request_t *r, int status, const char *body);

/* Timeouts: params (--read-timeout), handler (--timeout), req:read (--read-timeout). */
void mf__request_sweep(mf_worker_t *w, double now);

/* Queues an event about the request for Lua; -1 when out of memory. */
int mf__request_push(mf_request_t *r, int type);

/* Output helpers for ffi.c. */
int mf__request_emit_headers(mf_request_t *r);
int mf__request_frame(mf_request_t *r, uint8_t type, const char *p, size_t len);
int mf__request_frame_out(mf_request_t *r);
/*
 * Adds body bytes; MF_OK, MF_WAIT (taken, but the connection is over its high-water mark).
 * With a non-zero token, whole records are referenced from p instead of copied, and *nrefs
 * counts the references made: p must stay valid until each is released (worker.h).
 */
int mf__request_out_append(mf_request_t *r, const char *p, size_t len, uint64_t token, int *nrefs);

/* Frees every pooled request (worker shutdown). */
void mf__request_pool_free(mf_worker_t *w);

#endif
