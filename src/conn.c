/*
 * A connection from a web server. Input is parsed a whole record at a time (record.c), so any
 * split of the byte stream is handled the same way. Output is appended a whole record at a
 * time to one evbuffer and written at the end of each batch of work, one write per
 * connection, so records of different requests never interleave and a partial write never
 * loses bytes.
 */
#include "conn.h"
#include "log.h"
#include "record.h"
#include "request.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/event.h>

/* How long a closing connection reads and discards input before it is closed for good. */
#define LINGER_SECONDS 2.0
/* The most read in one go; bounds the input buffered beyond the records being parsed. */
#define READ_CHUNK (1024 * 1024)

static void on_read(evutil_socket_t fd, short what, void *arg);
static ssize_t send_output(mf_conn_t *c, size_t max);
static void on_write(evutil_socket_t fd, short what, void *arg);

mf_conn_t *mf_conn_new(mf_worker_t *w, int fd)
{
    mf_conn_t *c = calloc(1, sizeof *c);

    if (!c || !(c->in = evbuffer_new()) || !(c->out = evbuffer_new())) {
        if (c) {
            if (c->in)
                evbuffer_free(c->in);
            free(c);
        }
        close(fd);
        mf_log_error("out of memory for a new connection");
        return NULL;
    }
    c->w = w;
    c->fd = fd;
    event_assign(&c->rev, w->base, fd, EV_READ | EV_PERSIST, on_read, c);
    event_assign(&c->wev, w->base, fd, EV_WRITE | EV_PERSIST, on_write, c);
    c->last_active = mf_worker_now(w);
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    if (w->slot)
        w->slot->conns = w->nconns; /* other workers balance accepts on it */
    mf__conn_update_reading(c);
    return c;
}

static void unlink_dirty(mf_conn_t *c)
{
    mf_conn_t **pp = &c->w->dirty;

    if (!c->is_dirty)
        return;
    while (*pp && *pp != c)
        pp = &(*pp)->dirty_next;
    if (*pp)
        *pp = c->dirty_next;
    c->is_dirty = 0;
}

void mf_conn_destroy(mf_conn_t *c)
{
    mf_worker_t *w = c->w;

    for (int i = 0; i < MF_CONN_BUCKETS; i++) {
        mf_request_t *r = c->buckets[i], *next;
        for (; r; r = next) {
            next = r->hnext;
            r->hnext = NULL;
            mf_request_conn_lost(r);
        }
        c->buckets[i] = NULL;
    }
    event_del(&c->rev);
    event_del(&c->wev);
    unlink_dirty(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->nconns--;
    if (w->slot)
        w->slot->conns = w->nconns;
    close(c->fd);
    evbuffer_free(c->in);
    evbuffer_free(c->out);
    free(c);
    mf__worker_conn_closed(w);
}

void mf__conn_update_reading(mf_conn_t *c)
{
    int want = c->shut || (c->in_stalled == 0 && evbuffer_get_length(c->out) < MF_OUT_HIGH);

    if (want && !c->reading)
        event_add(&c->rev, NULL);
    else if (!want && c->reading)
        event_del(&c->rev);
    c->reading = (unsigned)want;
}

/* Half-closes and lingers: closing with unread input would make the kernel send a reset. */
static void start_shutdown(mf_conn_t *c)
{
    shutdown(c->fd, SHUT_WR);
    c->shut = 1;
    c->last_active = mf_worker_now(c->w);
    evbuffer_drain(c->in, evbuffer_get_length(c->in));
    mf__conn_update_reading(c);
}

void mf_conn_close_when_done(mf_conn_t *c)
{
    c->closing = 1;
    if (c->nreqs == 0 && !c->shut)
        mf_conn_output_added(c); /* the flush starts the shutdown once output is written */
}

void mf_conn_output_added(mf_conn_t *c)
{
    if (c->is_dirty)
        return;
    c->is_dirty = 1;
    c->dirty_next = c->w->dirty;
    c->w->dirty = c;
}

/* Wakes handlers waiting for room (write) or for their bytes to be written (flush). */
static void wake_writers(mf_conn_t *c, size_t left)
{
    int still = 0;

    if (!c->has_waiters)
        return;
    for (int i = 0; i < MF_CONN_BUCKETS; i++)
        for (mf_request_t *r = c->buckets[i]; r; r = r->hnext) {
            if ((r->waiting & MF_WAIT_WRITE) && left < MF_OUT_LOW)
                mf_request_wake(r, MF_WAIT_WRITE);
            if ((r->waiting & MF_WAIT_FLUSH) && c->out_written >= r->flush_target)
                mf_request_wake(r, MF_WAIT_FLUSH);
            if (r->waiting & (MF_WAIT_WRITE | MF_WAIT_FLUSH))
                still = 1;
        }
    c->has_waiters = (unsigned)still;
}

/*
 * One sendmsg of as much of the first max bytes of the output as fits in a batch of iovecs.
 * MSG_NOSIGNAL: a peer that went away must not kill a process that embeds the core and never
 * ignored SIGPIPE (the busted harness, for one).
 */
static ssize_t send_output(mf_conn_t *c, size_t max)
{
    struct evbuffer_iovec v[64];
    struct iovec iov[64];
    struct msghdr msg;
    int n = evbuffer_peek(c->out, -1, NULL, v, 64);
    ssize_t sent;

    if (n > 64)
        n = 64;
    for (int i = 0; i < n; i++) {
        size_t len = v[i].iov_len < max ? v[i].iov_len : max;
        iov[i].iov_base = v[i].iov_base;
        iov[i].iov_len = len;
        max -= len;
        if (max == 0) {
            n = i + 1;
            break;
        }
    }
    if (n <= 0 || iov[n - 1].iov_len == 0)
        return 0;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = iov;
    msg.msg_iovlen = (size_t)n;
    sent = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
    if (sent > 0)
        evbuffer_drain(c->out, (size_t)sent);
    return sent;
}

/* The output up to the last whole record added; a broken connection's ends there. */
static size_t whole_output(const mf_conn_t *c)
{
    return c->broken ? (size_t)(c->out_added - c->out_written) : SIZE_MAX;
}

/* Writes what it can. Returns -1 when the connection was destroyed. */
static int conn_write(mf_conn_t *c)
{
    size_t left = evbuffer_get_length(c->out);

    if (c->broken) {
        /* Out of memory for its output: what is whole goes out if the socket takes it now. */
        ssize_t n = send_output(c, whole_output(c));
        if (n > 0)
            c->out_written += (uint64_t)n;
        mf_conn_destroy(c);
        return -1;
    }
    if (left > 0) {
        ssize_t n = send_output(c, SIZE_MAX);
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            mf_log_debug("write to fd %d failed: %s", c->fd, strerror(errno));
            mf_conn_destroy(c);
            return -1;
        }
        if (n > 0)
            c->out_written += (uint64_t)n;
        left = evbuffer_get_length(c->out);
    }
    if (left > 0 && !c->writing) {
        event_add(&c->wev, NULL);
        c->writing = 1;
    } else if (left == 0 && c->writing) {
        event_del(&c->wev);
        c->writing = 0;
    }
    wake_writers(c, left);
    if (left == 0 && c->closing && c->nreqs == 0 && !c->shut)
        start_shutdown(c);
    mf__conn_update_reading(c);
    return 0;
}

void mf_conn_flush_dirty(mf_worker_t *w)
{
    mf_conn_t *c;

    w->unflushed = 0;
    while ((c = w->dirty) != NULL) {
        w->dirty = c->dirty_next;
        c->is_dirty = 0;
        conn_write(c);
    }
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_write(arg);
}

/* Records up to this size are assembled on the stack and added in one piece. */
#define GATHER_MAX 512

static void counted(mf_conn_t *c, size_t n)
{
    c->out_added += n;
    c->w->unflushed += n;
    mf_conn_output_added(c);
}

/* An append failed: see mf_conn_add_record in conn.h. */
static int out_failed(mf_conn_t *c)
{
    if (!c->broken)
        mf_log_error("fd %d: out of memory for output; closing the connection", c->fd);
    c->broken = 1;
    mf_conn_output_added(c); /* the flush destroys it */
    return -1;
}

int mf_conn_add_record2(mf_conn_t *c, uint8_t type, uint16_t id, const void *a, size_t alen,
                        const void *b, size_t blen)
{
    static const uint8_t zeros[8];
    uint8_t h[MF_HEADER_LEN];
    size_t len = alen + blen;
    uint8_t pad = mf_record_padding(len);
    size_t size = sizeof h + len + pad;

    if (c->broken)
        return -1;
    mf_record_header_encode(h, type, id, (uint16_t)len, pad);
    if (size <= GATHER_MAX) {
        /* A small record (an answer's end, a short body): one evbuffer_add, not four. */
        uint8_t rec[GATHER_MAX];
        memcpy(rec, h, sizeof h);
        if (alen)
            memcpy(rec + sizeof h, a, alen);
        if (blen)
            memcpy(rec + sizeof h + alen, b, blen);
        memset(rec + sizeof h + len, 0, pad);
        if (evbuffer_add(c->out, rec, size) < 0)
            return out_failed(c);
        counted(c, size);
        return 0;
    }
    /* The parts are added before anything else can run; a failure among them leaves a
     * partial record, which out_failed keeps from ever being written. */
    if (evbuffer_add(c->out, h, sizeof h) < 0 || (alen && evbuffer_add(c->out, a, alen) < 0) ||
        (blen && evbuffer_add(c->out, b, blen) < 0) ||
        (pad && evbuffer_add(c->out, zeros, pad) < 0))
        return out_failed(c);
    counted(c, size);
    return 0;
}

/* libevent is done with a referenced block: tell Lua (through the worker) it may let go. */
static void on_ref_done(const void *data, size_t len, void *arg)
{
    mf_ref_t *ref = arg;
    mf_worker_t *w = ref->w;

    (void)data;
    (void)len;
    mf__worker_released(w, ref->token);
    ref->next_free = w->ref_pool;
    w->ref_pool = ref;
}

int mf_conn_add_record_ref(mf_conn_t *c, uint8_t type, uint16_t id, const void *a, size_t alen,
                           const void *b, size_t blen, uint64_t token, int *nrefs)
{
    static const uint8_t zeros[8];
    mf_worker_t *w = c->w;
    uint8_t h[MF_HEADER_LEN];
    size_t len = alen + blen;
    uint8_t pad = mf_record_padding(len);
    mf_ref_t *ref = w->ref_pool;
    int added;

    if (c->broken)
        return -1;
    if (ref) {
        w->ref_pool = ref->next_free;
    } else {
        if (!(ref = malloc(sizeof *ref)))
            return out_failed(c);
        ref->next_all = w->refs;
        w->refs = ref;
    }
    ref->w = w;
    ref->token = token;
    mf_record_header_encode(h, type, id, (uint16_t)len, pad);
    if (alen && alen <= GATHER_MAX - sizeof h) {
        /* The header and a short head (an answer's header block) in one piece. */
        uint8_t head[GATHER_MAX];
        memcpy(head, h, sizeof h);
        memcpy(head + sizeof h, a, alen);
        added = evbuffer_add(c->out, head, sizeof h + alen) == 0;
    } else {
        added =
            evbuffer_add(c->out, h, sizeof h) == 0 && (!alen || evbuffer_add(c->out, a, alen) == 0);
    }
    if (!added || evbuffer_add_reference(c->out, b, blen, on_ref_done, ref) < 0) {
        ref->next_free = w->ref_pool; /* never handed to libevent */
        w->ref_pool = ref;
        return out_failed(c);
    }
    /* From here libevent releases the reference, whatever happens to the record. */
    (*nrefs)++;
    if (pad && evbuffer_add(c->out, zeros, pad) < 0)
        return out_failed(c);
    counted(c, sizeof h + len + pad);
    return 0;
}

int mf_conn_add_record(mf_conn_t *c, uint8_t type, uint16_t id, const void *content, size_t len)
{
    return mf_conn_add_record2(c, type, id, content, len, NULL, 0);
}

mf_request_t *mf__conn_find(mf_conn_t *c, uint16_t id)
{
    mf_request_t *r = c->buckets[id % MF_CONN_BUCKETS];

    while (r && r->id != id)
        r = r->hnext;
    return r;
}

void mf__conn_request_gone(mf_conn_t *c, mf_request_t *r)
{
    mf_request_t **pp = &c->buckets[r->id % MF_CONN_BUCKETS];

    while (*pp && *pp != r)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = r->hnext;
    r->hnext = NULL;
    c->nreqs--;
    if (r->stalled) {
        r->stalled = 0;
        c->in_stalled--;
        mf__conn_update_reading(c);
    }
    if (!r->keep_conn || c->w->stopping)
        c->closing = 1; /* during a graceful stop, a connection closes with its last request */
    if (c->nreqs == 0)
        c->last_active = mf_worker_now(c->w); /* idle counts from the end of the last request */
    if (c->closing && c->nreqs == 0)
        mf_conn_output_added(c);
}

/* FCGI_GET_VALUES [section 4.1]: answer the known names asked for, each once. */
static void get_values(mf_conn_t *c, const uint8_t *content, size_t len)
{
    static const char *const names[] = {"FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"};
    unsigned values[3] = {c->w->cfg.max_conns, c->w->cfg.max_reqs, 1};
    int done[3] = {0, 0, 0};
    uint8_t out[128];
    size_t off = 0, olen = 0;
    mf_nv_t nv;

    /* A malformed tail ends the query; the names decoded before it are still answered. */
    while (mf_nv_next(content, len, &off, &nv) == MF_NV_PAIR) {
        for (int i = 0; i < 3; i++) {
            char val[16];
            int vlen;
            if (done[i] || nv.name_len != strlen(names[i]) ||
                memcmp(nv.name, names[i], nv.name_len) != 0)
                continue;
            done[i] = 1;
            vlen = snprintf(val, sizeof val, "%u", values[i]);
            olen += mf_nv_encode(out + olen, names[i], nv.name_len, val, (size_t)vlen);
        }
    }
    mf_conn_add_record(c, MF_GET_VALUES_RESULT, 0, out, olen);
}

static void unknown_type(mf_conn_t *c, uint8_t type)
{
    uint8_t body[8] = {type, 0, 0, 0, 0, 0, 0, 0};

    mf_conn_add_record(c, MF_UNKNOWN_TYPE, 0, body, sizeof body);
}

/*
 * Handles one whole record. Its content is at content, except a STDIN or DATA record's when
 * src is given: then the content is the front of src, and the request takes it from there.
 * The caller removes the record from its buffer. Returns -1 when the connection must close.
 */
static int handle_record(mf_conn_t *c, const mf_record_header_t *h, const uint8_t *content,
                         struct evbuffer *src)
{
    size_t len = h->content_len;
    mf_request_t *r;

    if (h->id == 0) {
        /* Management records [section 4]. */
        if (h->type == MF_GET_VALUES)
            get_values(c, content, len);
        else
            unknown_type(c, h->type);
        return 0;
    }
    switch (h->type) {
    case MF_BEGIN_REQUEST:
        if (len != 8) {
            mf_log_warn("fd %d: BEGIN_REQUEST with %zu content bytes; closing", c->fd, len);
            return -1;
        }
        if (mf__conn_find(c, h->id)) {
            mf_log_warn("fd %d: BEGIN_REQUEST for active request %u; closing", c->fd, h->id);
            return -1;
        }
        c->requests++;
        /* During a graceful stop, requests on open connections are served until the
         * deadline; a connection that has said it closes takes no more. */
        if (c->closing || c->w->killed)
            mf_request_refuse(c, h->id, MF_OVERLOADED);
        else
            mf_request_begin(c, h->id, (uint16_t)((content[0] << 8) | content[1]), content[2]);
        return 0;
    case MF_ABORT_REQUEST:
        if ((r = mf__conn_find(c, h->id)) != NULL)
            mf_request_abort(r);
        return 0;
    case MF_PARAMS:
        if ((r = mf__conn_find(c, h->id)) != NULL)
            mf_request_params(r, content, len);
        return 0;
    case MF_STDIN:
    case MF_DATA:
        if ((r = mf__conn_find(c, h->id)) != NULL)
            mf_request_input(r, h->type == MF_DATA, content, src, len);
        else if (src)
            evbuffer_drain(src, len);
        return 0;
    case MF_END_REQUEST:
    case MF_STDOUT:
    case MF_STDERR:
    case MF_GET_VALUES:
    case MF_GET_VALUES_RESULT:
    case MF_UNKNOWN_TYPE:
        /* Records only an application sends, or management types on a request id. */
        return 0;
    default: unknown_type(c, h->type); return 0;
    }
}

/* A bad record: answers to the requests before it still go out, if they can. */
static void fail_input(mf_conn_t *c)
{
    send_output(c, whole_output(c));
    mf_conn_destroy(c);
}

static int bad_version(mf_conn_t *c, const mf_record_header_t *h)
{
    if (h->version == MF_FCGI_VERSION)
        return 0;
    /* Never resynchronise: nothing after a bad header can be trusted. */
    mf_log_warn("fd %d: record with version %u; closing", c->fd, h->version);
    fail_input(c);
    return 1;
}

/*
 * A stream record out of its role's order (STDIN before the end of PARAMS, a record after
 * its stream's end, DATA outside the filter role...) is a protocol error: nothing after it
 * can be trusted, so the connection closes, as for a bad version (docs/protocol.md). It is
 * caught at its header, before its content is waited for.
 */
static int out_of_order(mf_conn_t *c, const mf_record_header_t *h)
{
    const char *why;
    mf_request_t *r;

    if (h->id == 0 || (h->type != MF_PARAMS && h->type != MF_STDIN && h->type != MF_DATA) ||
        !(r = mf__conn_find(c, h->id)) || !(why = mf_request_out_of_order(r, h->type)))
        return 0;
    mf_log_warn("fd %d: request %u: %s; closing", c->fd, h->id, why);
    fail_input(c);
    return 1;
}

/*
 * A STDIN or DATA record of a request that gathers its body, of which only got bytes (the
 * header and maybe some content and padding) have arrived: the record becomes the part in
 * progress, so that the rest can be read straight into the body block, and *content says
 * how much of its content is among the got bytes, for the caller to hand over now. Returns
 * 0 when the record does not qualify (the caller buffers its bytes as usual).
 */
static int start_part(mf_conn_t *c, const mf_record_header_t *h, size_t got, uint16_t *content)
{
    int stream = h->type == MF_DATA;
    mf_request_t *r;

    if (h->id == 0 || (h->type != MF_STDIN && h->type != MF_DATA) || h->content_len == 0)
        return 0;
    r = mf__conn_find(c, h->id);
    if (!r || !mf_request_body_room(r, stream, h->content_len))
        return 0;
    got -= MF_HEADER_LEN;
    *content = (uint16_t)(got < h->content_len ? got : h->content_len);
    c->part_id = h->id;
    c->part_type = h->type;
    c->part_pad = h->padding_len;
    c->part_left = h->content_len - *content;
    c->skip = c->part_left ? 0 : h->padding_len - (got - *content);
    return 1;
}

/* Gives the part in progress, then its padding, what they need of the n bytes at p;
 * returns the bytes used. */
static size_t feed_part(mf_conn_t *c, const uint8_t *p, size_t n)
{
    size_t used = 0;

    if (c->part_left > 0 && n > 0) {
        size_t k = n < c->part_left ? n : c->part_left;
        mf_request_t *r = mf__conn_find(c, c->part_id);
        if (r)
            mf_request_input(r, c->part_type == MF_DATA, p, NULL, k);
        c->part_left -= k;
        used = k;
        if (c->part_left == 0)
            c->skip = c->part_pad;
    }
    if (c->part_left == 0 && c->skip > 0 && used < n) {
        size_t k = n - used < c->skip ? n - used : c->skip;
        c->skip -= k;
        used += k;
    }
    return used;
}

static int part_pending(const mf_conn_t *c)
{
    return c->part_left > 0 || c->skip > 0;
}

/*
 * Handles the whole records at the front of the n bytes at p without copying them anywhere
 * first: the usual case, where a read brings whole records and nothing is buffered.
 * Returns the bytes used, or -1 when the connection was destroyed.
 */
static ssize_t process_block(mf_conn_t *c, const uint8_t *p, size_t n)
{
    size_t off = 0;

    while (n - off >= MF_HEADER_LEN) {
        mf_record_header_t h;
        size_t size;

        mf_record_header_decode(p + off, &h);
        if (bad_version(c, &h) || out_of_order(c, &h))
            return -1;
        size = mf_record_size(&h);
        if (n - off < size) {
            mf_record_header_t part = h;
            if (start_part(c, &h, n - off, &part.content_len)) {
                if (part.content_len > 0)
                    handle_record(c, &part, p + off + MF_HEADER_LEN, NULL);
                off = n; /* the padding read so far is dropped too */
            }
            break;
        }
        if (handle_record(c, &h, p + off + MF_HEADER_LEN, NULL) < 0) {
            fail_input(c);
            return -1;
        }
        off += size;
    }
    return (ssize_t)off;
}

/* Handles the whole records in the connection's buffer. Returns -1 when it was destroyed. */
static int process_buffered(mf_conn_t *c)
{
    for (;;) {
        size_t avail = evbuffer_get_length(c->in);
        mf_record_header_t h;
        size_t size;

        if (avail < MF_HEADER_LEN)
            return 0;
        mf_record_header_decode(evbuffer_pullup(c->in, MF_HEADER_LEN), &h);
        if (bad_version(c, &h) || out_of_order(c, &h))
            return -1;
        size = mf_record_size(&h);
        if (avail < size) {
            mf_record_header_t part = h;
            if (start_part(c, &h, avail, &part.content_len)) {
                evbuffer_drain(c->in, MF_HEADER_LEN);
                if (part.content_len > 0)
                    handle_record(c, &part, NULL, c->in);
                evbuffer_drain(c->in, evbuffer_get_length(c->in)); /* padding read so far */
            }
            return 0;
        }
        if (h.id != 0 && (h.type == MF_STDIN || h.type == MF_DATA)) {
            /* Body bytes move to the request without being made contiguous first. */
            evbuffer_drain(c->in, MF_HEADER_LEN);
            if (handle_record(c, &h, NULL, c->in) < 0)
                break;
            evbuffer_drain(c->in, h.padding_len);
        } else {
            const uint8_t *rec = evbuffer_pullup(c->in, (ssize_t)size);
            if (!rec || handle_record(c, &h, rec + MF_HEADER_LEN, NULL) < 0)
                break;
            evbuffer_drain(c->in, size);
        }
    }
    fail_input(c);
    return -1;
}

/*
 * One read. While a record of a request that gathers its body is in progress, its content
 * goes straight into the body block and what follows into the worker's scratch buffer;
 * otherwise all of it goes into the scratch buffer (evbuffer_read would first ask the
 * kernel how much is readable, an ioctl per read). Returns the bytes read into the scratch
 * buffer through *len, and the read's result.
 */
static ssize_t read_some(mf_conn_t *c, size_t *len)
{
    uint8_t *buf = (uint8_t *)c->w->scratch;
    mf_request_t *r;
    uint8_t *dst;
    ssize_t n;

    *len = 0;
    if (c->part_left > 0 && !c->shut && (r = mf__conn_find(c, c->part_id)) != NULL &&
        (dst = mf_request_body_room(r, c->part_type == MF_DATA, c->part_left)) != NULL) {
        struct iovec iov[2] = {{dst, c->part_left}, {buf, MF_SCRATCH}};
        size_t direct;

        n = readv(c->fd, iov, 2);
        if (n <= 0)
            return n;
        direct = (size_t)n < c->part_left ? (size_t)n : c->part_left;
        mf_request_body_filled(r, c->part_type == MF_DATA, direct);
        c->part_left -= direct;
        if (c->part_left == 0)
            c->skip = c->part_pad;
        *len = (size_t)n - direct;
        return n;
    }
    n = read(c->fd, buf, MF_SCRATCH);
    if (n > 0)
        *len = (size_t)n;
    return n;
}

/*
 * Reads and handles the whole records read; only what follows them is kept in the
 * connection's buffer. Returns the bytes read, 0 at EOF, -1 on an error (errno), or -2 when
 * the connection was destroyed.
 */
static int read_input(mf_conn_t *c)
{
    const uint8_t *buf = (const uint8_t *)c->w->scratch;
    size_t len, used = 0;
    ssize_t n = read_some(c, &len);

    if (n <= 0 || c->shut)
        return (int)n; /* a lingering close drops what comes: the linger stays bounded */
    c->last_active = mf_worker_now(c->w);
    if (evbuffer_get_length(c->in) == 0) {
        used = feed_part(c, buf, len);
        if (!part_pending(c)) {
            ssize_t k = process_block(c, buf + used, len - used);
            if (k < 0)
                return -2;
            used += (size_t)k;
        }
    }
    if (used < len && evbuffer_add(c->in, buf + used, len - used) < 0) {
        errno = ENOMEM;
        return -1;
    }
    if (len == MF_SCRATCH && !part_pending(c)) {
        /* A bulk transfer not going straight into a body block: read the rest into the
         * buffer, where the ioctl that sizes the read is paid once for a large read. */
        int more = evbuffer_read(c->in, c->fd, READ_CHUNK - MF_SCRATCH);
        if (more > 0)
            n += more;
    }
    if (!part_pending(c) && process_buffered(c) < 0)
        return -2;
    return (int)n;
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    mf_conn_t *c = arg;
    int n;

    (void)what;
    n = read_input(c);
    if (n == -2)
        return;
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        /* The peer closed or reset: requests in flight are aborted (docs/protocol.md). */
        mf_log_debug("fd %d: peer closed (%d requests in flight)", (int)fd, c->nreqs);
        mf_conn_destroy(c);
        return;
    }
    if (n > 0 && !c->shut)
        mf__conn_update_reading(c);
}

void mf__conn_sweep(mf_worker_t *w, double now)
{
    mf_conn_t *c, *next;

    for (c = w->conns; c; c = next) {
        next = c->next;
        if (c->shut) {
            if (now - c->last_active > LINGER_SECONDS)
                mf_conn_destroy(c);
        } else if (c->nreqs == 0 && (w->stopping || now - c->last_active > w->cfg.idle_timeout)) {
            mf_conn_close_when_done(c);
        }
    }
}
