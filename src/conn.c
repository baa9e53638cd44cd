/*
 * A connection, whatever its protocol (conn.h). Output is appended to one evbuffer and
 * written at the end of each batch of work, one write per connection, so the answers of
 * different requests never interleave and a partial write never loses bytes.
 */
#include "conn.h"
#include "log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/event.h>

/* How long a closing connection reads and discards input before it is closed for good. */
#define LINGER_SECONDS 2.0

static void on_read(evutil_socket_t fd, short what, void *arg);
static void on_write(evutil_socket_t fd, short what, void *arg);

mf_conn_t *mf_conn_new(mf_worker_t *w, int fd, const mf_proto_t *proto)
{
    mf_conn_t *c = calloc(1, proto->conn_size);

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
    c->proto = proto;
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
    mf_conn_update_reading(c);
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

static void destroy(mf_conn_t *c)
{
    evbuffer_free(c->in);
    evbuffer_free(c->out);
    free(c);
}

void mf_conn_close(mf_conn_t *c)
{
    mf_worker_t *w = c->w;

    if (c->closed)
        return;
    c->closed = 1;
    c->closing = 1;
    event_del(&c->rev);
    event_del(&c->wev);
    c->reading = c->writing = 0;
    unlink_dirty(c);
    for (int i = 0; i < MF_CONN_BUCKETS; i++) {
        mf_conn_link_t *l = c->buckets[i], *next;
        c->buckets[i] = NULL;
        for (; l; l = next) {
            next = l->next;
            l->next = NULL;
            l->stalled = 0;
            l->waits = 0;
            c->nreqs--;
            l->notify(l, MF_CONN_LOST);
        }
    }
    if (c->proto->free)
        c->proto->free(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
    w->nconns--;
    if (w->slot)
        w->slot->conns = w->nconns;
    close(c->fd);
    c->fd = -1;
    /* Output still referencing Lua strings lets them go now, not when the memory goes. */
    evbuffer_drain(c->out, evbuffer_get_length(c->out));
    evbuffer_drain(c->in, evbuffer_get_length(c->in));
    if (c->refs == 0)
        destroy(c);
    if (w->conn_closed)
        w->conn_closed(w);
}

void mf_conn_hold(mf_conn_t *c)
{
    c->refs++;
}

void mf_conn_release(mf_conn_t *c)
{
    if (--c->refs == 0 && c->closed)
        destroy(c);
}

void mf_conn_update_reading(mf_conn_t *c)
{
    int want = !c->closed && (c->shut || (c->in_stalled == 0 && !c->paused &&
                                          evbuffer_get_length(c->out) < MF_OUT_HIGH));

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
    mf_conn_update_reading(c);
}

void mf_conn_close_when_done(mf_conn_t *c)
{
    c->closing = 1;
    if (c->nreqs == 0 && !c->shut)
        mf_conn_output_added(c); /* the flush starts the shutdown once output is written */
}

void mf_conn_output_added(mf_conn_t *c)
{
    if (c->is_dirty || c->closed)
        return;
    c->is_dirty = 1;
    c->dirty_next = c->w->dirty;
    c->w->dirty = c;
}

/* Tells waiting requests about room (write) or about their bytes being written (flush). */
static void wake_writers(mf_conn_t *c, size_t left)
{
    int still = 0;

    if (!c->has_waiters)
        return;
    for (int i = 0; i < MF_CONN_BUCKETS; i++)
        for (mf_conn_link_t *l = c->buckets[i]; l; l = l->next) {
            unsigned what = 0;
            if ((l->waits & MF_CONN_ROOM) && left < MF_OUT_LOW)
                what |= MF_CONN_ROOM;
            if ((l->waits & MF_CONN_FLUSHED) && c->out_written >= l->flush_target)
                what |= MF_CONN_FLUSHED;
            l->waits &= ~what;
            if (l->waits)
                still = 1;
            if (what)
                l->notify(l, what);
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
    if (sent > 0) {
        evbuffer_drain(c->out, (size_t)sent);
        c->out_written += (uint64_t)sent;
    }
    return sent;
}

/* The output up to the last whole unit counted; a broken connection's ends there. */
static size_t whole_output(const mf_conn_t *c)
{
    return c->broken ? (size_t)(c->out_added - c->out_written) : SIZE_MAX;
}

void mf_conn_send_now(mf_conn_t *c)
{
    if (!c->closed && evbuffer_get_length(c->out) > 0)
        send_output(c, whole_output(c));
}

/* Writes what it can; the caller holds the connection (a failed write closes it). */
static void conn_write(mf_conn_t *c)
{
    size_t left = evbuffer_get_length(c->out);

    if (c->closed)
        return;
    if (c->broken) {
        /* Out of memory for its output: what is whole goes out if the socket takes it now. */
        send_output(c, whole_output(c));
        mf_conn_close(c);
        return;
    }
    if (left > 0) {
        ssize_t n = send_output(c, SIZE_MAX);
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            mf_log_debug("write to fd %d failed: %s", c->fd, strerror(errno));
            mf_conn_close(c);
            return;
        }
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
    if (c->closed)
        return;
    if (left == 0 && c->closing && c->nreqs == 0 && !c->shut)
        start_shutdown(c);
    mf_conn_update_reading(c);
}

void mf_conn_flush_dirty(mf_worker_t *w)
{
    mf_conn_t *c;

    w->unflushed = 0;
    while ((c = w->dirty) != NULL) {
        w->dirty = c->dirty_next;
        c->is_dirty = 0;
        mf_conn_hold(c);
        conn_write(c);
        mf_conn_release(c);
    }
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    mf_conn_t *c = arg;

    (void)fd;
    (void)what;
    mf_conn_hold(c);
    conn_write(c);
    mf_conn_release(c);
}

void mf_conn_counted(mf_conn_t *c, size_t n)
{
    c->out_added += n;
    c->w->unflushed += n;
    mf_conn_output_added(c);
}

int mf_conn_out_failed(mf_conn_t *c)
{
    if (!c->broken)
        mf_log_error("fd %d: out of memory for output; closing the connection", c->fd);
    c->broken = 1;
    mf_conn_output_added(c); /* the flush closes it */
    return -1;
}

int mf_conn_add(mf_conn_t *c, const void *p, size_t n)
{
    if (c->broken)
        return -1;
    if (n == 0)
        return 0;
    if (evbuffer_add(c->out, p, n) < 0)
        return mf_conn_out_failed(c);
    mf_conn_counted(c, n);
    return 0;
}

int mf_conn_add_buffer(mf_conn_t *c, struct evbuffer *src)
{
    size_t n = evbuffer_get_length(src);

    if (c->broken)
        return -1;
    if (n == 0)
        return 0;
    if (evbuffer_add_buffer(c->out, src) < 0)
        return mf_conn_out_failed(c);
    mf_conn_counted(c, n);
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

int mf_conn_add_ref(mf_conn_t *c, struct evbuffer *dst, const void *p, size_t n, uint64_t token)
{
    mf_worker_t *w = c->w;
    mf_ref_t *ref = w->ref_pool;

    if (c->broken)
        return -1;
    if (ref) {
        w->ref_pool = ref->next_free;
    } else {
        if (!(ref = malloc(sizeof *ref)))
            return -1;
        ref->next_all = w->refs;
        w->refs = ref;
    }
    ref->w = w;
    ref->token = token;
    if (evbuffer_add_reference(dst, p, n, on_ref_done, ref) < 0) {
        ref->next_free = w->ref_pool;
        w->ref_pool = ref;
        return -1;
    }
    return 0;
}

int mf_conn_output(mf_conn_t *c, mf_conn_link_t *l, int stream, const void *a, size_t alen,
                   const void *b, size_t blen, uint64_t token, int *nrefs)
{
    if (c->broken)
        return -1;
    return c->proto->output(c, l, stream, a, alen, b, blen, token, nrefs);
}

void mf_conn_end(mf_conn_t *c, mf_conn_link_t *l, uint32_t app_status, int output_done)
{
    mf_conn_hold(c);
    c->proto->end(c, l, app_status, output_done);
    mf_conn_release(c);
}

int mf_conn_wait_room(mf_conn_t *c, mf_conn_link_t *l)
{
    if (evbuffer_get_length(c->out) <= MF_OUT_HIGH)
        return MF_OK;
    l->waits |= MF_CONN_ROOM;
    c->has_waiters = 1;
    return MF_WAIT;
}

int mf_conn_wait_flushed(mf_conn_t *c, mf_conn_link_t *l)
{
    if (c->proto->commit && c->proto->commit(c, l) < 0)
        return -1;
    /* Everything appended so far, this request's bytes among them, must be written. */
    if (!(l->waits & MF_CONN_FLUSHED) && l->flush_target < c->out_added)
        l->flush_target = c->out_added;
    if (c->out_written >= l->flush_target)
        return MF_OK;
    l->waits |= MF_CONN_FLUSHED;
    c->has_waiters = 1;
    return MF_WAIT;
}

void mf_conn_stall(mf_conn_t *c, mf_conn_link_t *l, int on)
{
    if (on == (int)l->stalled)
        return;
    l->stalled = (unsigned)on;
    if (on)
        c->in_stalled++;
    else
        c->in_stalled--;
    mf_conn_update_reading(c);
}

mf_conn_link_t *mf_conn_find(mf_conn_t *c, uint16_t id)
{
    mf_conn_link_t *l = c->buckets[id % MF_CONN_BUCKETS];

    while (l && l->id != id)
        l = l->next;
    return l;
}

void mf_conn_attach(mf_conn_t *c, mf_conn_link_t *l, uint16_t id)
{
    l->id = id;
    l->waits = 0;
    l->stalled = 0;
    l->flush_target = 0;
    l->next = c->buckets[id % MF_CONN_BUCKETS];
    c->buckets[id % MF_CONN_BUCKETS] = l;
    c->nreqs++;
}

void mf_conn_detach(mf_conn_t *c, mf_conn_link_t *l)
{
    mf_conn_link_t **pp = &c->buckets[l->id % MF_CONN_BUCKETS];

    while (*pp && *pp != l)
        pp = &(*pp)->next;
    if (*pp)
        *pp = l->next;
    l->next = NULL;
    l->waits = 0;
    c->nreqs--;
    if (l->stalled) {
        l->stalled = 0;
        c->in_stalled--;
        mf_conn_update_reading(c);
    }
    if (c->w->stopping)
        c->closing = 1; /* during a graceful stop, a connection closes with its last request */
    if (c->nreqs == 0)
        c->last_active = mf_worker_now(c->w); /* idle counts from the end of the last request */
    if (c->closing && c->nreqs == 0)
        mf_conn_output_added(c);
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    mf_conn_t *c = arg;
    ssize_t n;

    (void)what;
    mf_conn_hold(c);
    if (c->shut) {
        /* A lingering close drops what comes: the linger stays bounded. */
        n = read(fd, c->w->scratch, MF_SCRATCH);
    } else {
        n = c->proto->read(c);
        if (n > 0)
            c->last_active = mf_worker_now(c->w);
    }
    if (!c->closed) {
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            /* The peer closed or reset: requests in flight are aborted (docs/protocol.md). */
            mf_log_debug("fd %d: peer closed (%u requests in flight)", (int)fd, c->nreqs);
            mf_conn_close(c);
        } else if (n > 0 && !c->shut) {
            mf_conn_update_reading(c);
        }
    }
    mf_conn_release(c);
}

void mf_conn_sweep(mf_worker_t *w, double now)
{
    mf_conn_t *c, *next;

    for (c = w->conns; c; c = next) {
        next = c->next; /* closing c leaves the others in place */
        mf_conn_hold(c);
        if (c->shut) {
            if (now - c->last_active > LINGER_SECONDS)
                mf_conn_close(c);
        } else {
            if (c->proto->tick)
                c->proto->tick(c, now);
            if (!c->closed && c->nreqs == 0 &&
                (w->stopping || now - c->last_active > w->cfg.idle_timeout))
                mf_conn_close_when_done(c);
        }
        mf_conn_release(c);
    }
}
