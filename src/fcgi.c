/*
 * FastCGI on a connection. Input is parsed a whole record at a time by mf_record_parse
 * (record.c), so any split of the byte stream is handled the same way; output is appended a
 * whole record at a time, so records of different requests never interleave.
 */
#include "fcgi.h"
#include "log.h"
#include "record.h"
#include "request.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

/* The most read in one go; bounds the input buffered beyond the records being parsed. */
#define READ_CHUNK (1024 * 1024)
/* Records up to this size are assembled on the stack and added in one piece. */
#define GATHER_MAX 512

typedef struct fcgi_conn {
    mf_conn_t c;
    /*
     * A STDIN or DATA record of a request that gathers its body, whose header has been
     * handled but whose content is still arriving: the rest is read straight into the
     * request's body block (read_some). Nothing is buffered in `in` meanwhile.
     */
    size_t part_left; /* content bytes of it still to come */
    size_t skip;      /* padding bytes still to drop, once part_left is 0 */
    uint16_t part_id;
    uint8_t part_type;
    uint8_t part_pad;
} fcgi_conn_t;

static mf_request_t *find(mf_conn_t *c, uint16_t id)
{
    mf_conn_link_t *l = mf_conn_find(c, id);

    return l ? l->req : NULL;
}

mf_conn_t *mf_fcgi_conn_new(mf_worker_t *w, int fd)
{
    return mf_conn_new(w, fd, &mf_fcgi_proto);
}

/* Output */

/*
 * One whole record of at most MF_OUT_CONTENT_MAX content: a copied, b referenced if token
 * (*nrefs counts the reference once made). A failure breaks the connection (conn.h): the
 * partial record is never written.
 */
static int add_record(mf_conn_t *c, uint8_t type, uint16_t id, const void *a, size_t alen,
                      const void *b, size_t blen, uint64_t token, int *nrefs)
{
    static const uint8_t zeros[8];
    uint8_t h[MF_HEADER_LEN];
    size_t len = alen + blen;
    uint8_t pad = mf_record_padding(len);
    size_t size = sizeof h + len + pad;

    if (c->broken)
        return -1;
    mf_record_header_encode(h, type, id, (uint16_t)len, pad);
    if (size <= GATHER_MAX && !token) {
        /* A small record (an answer's end, a short body): one evbuffer_add, not four. */
        uint8_t rec[GATHER_MAX];
        memcpy(rec, h, sizeof h);
        if (alen)
            memcpy(rec + sizeof h, a, alen);
        if (blen)
            memcpy(rec + sizeof h + alen, b, blen);
        memset(rec + sizeof h + len, 0, pad);
        if (evbuffer_add(c->out, rec, size) < 0)
            return mf_conn_out_failed(c);
        mf_conn_counted(c, size);
        return 0;
    }
    if (alen && alen <= GATHER_MAX - sizeof h) {
        /* The header and a short head (an answer's header block) in one piece. */
        uint8_t head[GATHER_MAX];
        memcpy(head, h, sizeof h);
        memcpy(head + sizeof h, a, alen);
        if (evbuffer_add(c->out, head, sizeof h + alen) < 0)
            return mf_conn_out_failed(c);
    } else if (evbuffer_add(c->out, h, sizeof h) < 0 ||
               (alen && evbuffer_add(c->out, a, alen) < 0)) {
        return mf_conn_out_failed(c);
    }
    /* The parts are added before anything else can run: the record stays whole, or the
     * connection breaks and the partial record is never written. */
    if (blen && token) {
        if (mf_conn_add_ref(c, c->out, b, blen, token) < 0)
            return mf_conn_out_failed(c);
        (*nrefs)++; /* from here libevent releases it, whatever happens to the record */
    } else if (blen && evbuffer_add(c->out, b, blen) < 0) {
        return mf_conn_out_failed(c);
    }
    if (pad && evbuffer_add(c->out, zeros, pad) < 0)
        return mf_conn_out_failed(c);
    mf_conn_counted(c, size);
    return 0;
}

/* Frames a then b as records of at most MF_OUT_CONTENT_MAX. */
static int output(mf_conn_t *c, mf_conn_link_t *l, int stream, const void *a, size_t alen,
                  const void *b, size_t blen, uint64_t token, int *nrefs)
{
    const uint8_t *pa = a, *pb = b;

    while (alen + blen > 0) {
        size_t na = alen < MF_OUT_CONTENT_MAX ? alen : MF_OUT_CONTENT_MAX;
        size_t nb = blen < MF_OUT_CONTENT_MAX - na ? blen : MF_OUT_CONTENT_MAX - na;
        if (add_record(c, (uint8_t)stream, l->id, pa, na, pb, nb, nb ? token : 0, nrefs) < 0)
            return -1;
        /* No arithmetic on a NULL part (an empty a or b). */
        if (na)
            pa += na, alen -= na;
        if (nb)
            pb += nb, blen -= nb;
    }
    return 0;
}

static void end(mf_conn_t *c, mf_conn_link_t *l, uint32_t app_status, int output_done)
{
    uint8_t body[8];

    if (output_done)
        add_record(c, MF_STDOUT, l->id, NULL, 0, NULL, 0, 0, NULL);
    mf_record_end_body(body, app_status, MF_REQUEST_COMPLETE);
    add_record(c, MF_END_REQUEST, l->id, body, sizeof body, NULL, 0, 0, NULL);
    if (!l->req->keep_conn)
        c->closing = 1;
    mf_conn_detach(c, l);
}

/* END_REQUEST with a protocol status and no output, for a request never allocated. */
static void refuse(mf_conn_t *c, uint16_t id, uint8_t protocol_status)
{
    uint8_t body[8];

    mf_record_end_body(body, 0, protocol_status);
    add_record(c, MF_END_REQUEST, id, body, sizeof body, NULL, 0, 0, NULL);
}

/* Input */

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
    add_record(c, MF_GET_VALUES_RESULT, 0, out, olen, NULL, 0, 0, NULL);
}

static void unknown_type(mf_conn_t *c, uint8_t type)
{
    uint8_t body[8] = {type, 0, 0, 0, 0, 0, 0, 0};

    add_record(c, MF_UNKNOWN_TYPE, 0, body, sizeof body, NULL, 0, 0, NULL);
}

static void begin(mf_conn_t *c, uint16_t id, const uint8_t *content)
{
    uint16_t role = (uint16_t)((content[0] << 8) | content[1]);
    uint8_t flags = content[2];
    mf_request_t *r;
    int why = MF_OVERLOADED;

    c->requests++;
    /* During a graceful stop, requests on open connections are served until the deadline;
     * a connection that has said it closes takes no more. */
    if (!c->closing && !c->w->killed && (r = mf_request_new(c, id, role, &why)) != NULL) {
        r->keep_conn = flags & MF_KEEP_CONN;
        return;
    }
    refuse(c, id, (uint8_t)why);
    if (!(flags & MF_KEEP_CONN))
        mf_conn_close_when_done(c);
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
        if (mf_conn_find(c, h->id)) {
            mf_log_warn("fd %d: BEGIN_REQUEST for active request %u; closing", c->fd, h->id);
            return -1;
        }
        begin(c, h->id, content);
        return 0;
    case MF_ABORT_REQUEST:
        if ((r = find(c, h->id)) != NULL)
            mf_request_abort(r);
        return 0;
    case MF_PARAMS:
        if ((r = find(c, h->id)) != NULL)
            mf_request_params(r, content, len);
        return 0;
    case MF_STDIN:
    case MF_DATA:
        if ((r = find(c, h->id)) != NULL)
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
    mf_conn_send_now(c);
    mf_conn_close(c);
}

/*
 * Parses the front of a stream with the codec. Returns MF_RECORD_OK (a whole record),
 * MF_RECORD_NEED_MORE (*h is valid when len >= MF_HEADER_LEN), or -1 after closing the
 * connection on a bad version: nothing after a bad header can be trusted, so it never
 * resynchronises.
 */
static int parse(mf_conn_t *c, const uint8_t *p, size_t len, mf_record_header_t *h)
{
    int rc = mf_record_parse(p, len, h);

    if (rc != MF_RECORD_BAD_VERSION)
        return rc;
    mf_log_warn("fd %d: record with version %u; closing", c->fd, h->version);
    fail_input(c);
    return -1;
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
        !(r = find(c, h->id)) || !(why = mf_request_out_of_order(r, h->type)))
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
static int start_part(fcgi_conn_t *fc, const mf_record_header_t *h, size_t got, uint16_t *content)
{
    int stream = h->type == MF_DATA;
    mf_request_t *r;

    if (h->id == 0 || (h->type != MF_STDIN && h->type != MF_DATA) || h->content_len == 0)
        return 0;
    r = find(&fc->c, h->id);
    if (!r || !mf_request_body_room(r, stream, h->content_len))
        return 0;
    got -= MF_HEADER_LEN;
    *content = (uint16_t)(got < h->content_len ? got : h->content_len);
    fc->part_id = h->id;
    fc->part_type = h->type;
    fc->part_pad = h->padding_len;
    fc->part_left = h->content_len - *content;
    fc->skip = fc->part_left ? 0 : h->padding_len - (got - *content);
    return 1;
}

/* Gives the part in progress, then its padding, what they need of the n bytes at p;
 * returns the bytes used. */
static size_t feed_part(fcgi_conn_t *fc, const uint8_t *p, size_t n)
{
    size_t used = 0;

    if (fc->part_left > 0 && n > 0) {
        size_t k = n < fc->part_left ? n : fc->part_left;
        mf_request_t *r = find(&fc->c, fc->part_id);
        if (r)
            mf_request_input(r, fc->part_type == MF_DATA, p, NULL, k);
        fc->part_left -= k;
        used = k;
        if (fc->part_left == 0)
            fc->skip = fc->part_pad;
    }
    if (fc->part_left == 0 && fc->skip > 0 && used < n) {
        size_t k = n - used < fc->skip ? n - used : fc->skip;
        fc->skip -= k;
        used += k;
    }
    return used;
}

static int part_pending(const fcgi_conn_t *fc)
{
    return fc->part_left > 0 || fc->skip > 0;
}

/*
 * Handles the whole records at the front of the n bytes at p without copying them anywhere
 * first: the usual case, where a read brings whole records and nothing is buffered.
 * Returns the bytes used (the connection may have closed).
 */
static size_t process_block(fcgi_conn_t *fc, const uint8_t *p, size_t n)
{
    mf_conn_t *c = &fc->c;
    size_t off = 0;

    while (n - off >= MF_HEADER_LEN && !mf_conn_closed(c)) {
        mf_record_header_t h;
        int rc = parse(c, p + off, n - off, &h);

        if (rc < 0 || out_of_order(c, &h))
            break;
        if (rc == MF_RECORD_NEED_MORE) {
            mf_record_header_t part = h;
            if (start_part(fc, &h, n - off, &part.content_len)) {
                if (part.content_len > 0)
                    handle_record(c, &part, p + off + MF_HEADER_LEN, NULL);
                off = n; /* the padding read so far is dropped too */
            }
            break;
        }
        if (handle_record(c, &h, p + off + MF_HEADER_LEN, NULL) < 0) {
            fail_input(c);
            break;
        }
        off += mf_record_size(&h);
    }
    return off;
}

/* Handles the whole records in the connection's buffer. */
static void process_buffered(fcgi_conn_t *fc)
{
    mf_conn_t *c = &fc->c;

    while (!mf_conn_closed(c)) {
        size_t avail = evbuffer_get_length(c->in);
        mf_record_header_t h;
        int rc;

        if (avail < MF_HEADER_LEN)
            return;
        /* The header alone tells the record's size; only then is the record made whole. */
        rc = parse(c, evbuffer_pullup(c->in, MF_HEADER_LEN), MF_HEADER_LEN, &h);
        if (rc < 0 || out_of_order(c, &h))
            return;
        if (avail < mf_record_size(&h)) {
            mf_record_header_t part = h;
            if (start_part(fc, &h, avail, &part.content_len)) {
                evbuffer_drain(c->in, MF_HEADER_LEN);
                if (part.content_len > 0)
                    handle_record(c, &part, NULL, c->in);
                evbuffer_drain(c->in, evbuffer_get_length(c->in)); /* padding read so far */
            }
            return;
        }
        if (h.id != 0 && (h.type == MF_STDIN || h.type == MF_DATA)) {
            /* Body bytes move to the request without being made contiguous first. */
            evbuffer_drain(c->in, MF_HEADER_LEN);
            if (handle_record(c, &h, NULL, c->in) < 0)
                break;
            evbuffer_drain(c->in, h.padding_len);
        } else {
            size_t size = mf_record_size(&h);
            const uint8_t *rec = evbuffer_pullup(c->in, (ssize_t)size);
            if (!rec || parse(c, rec, size, &h) != MF_RECORD_OK ||
                handle_record(c, &h, rec + MF_HEADER_LEN, NULL) < 0)
                break;
            evbuffer_drain(c->in, size);
        }
    }
    fail_input(c);
}

/*
 * One read. While a record of a request that gathers its body is in progress, its content
 * goes straight into the body block and what follows into the worker's scratch buffer;
 * otherwise all of it goes into the scratch buffer (evbuffer_read would first ask the
 * kernel how much is readable, an ioctl per read). Returns the bytes read into the scratch
 * buffer through *len, and the read's result.
 */
static ssize_t read_some(fcgi_conn_t *fc, size_t *len)
{
    mf_conn_t *c = &fc->c;
    uint8_t *buf = (uint8_t *)c->w->scratch;
    mf_request_t *r;
    uint8_t *dst;
    ssize_t n;

    *len = 0;
    if (fc->part_left > 0 && (r = find(c, fc->part_id)) != NULL &&
        (dst = mf_request_body_room(r, fc->part_type == MF_DATA, fc->part_left)) != NULL) {
        struct iovec iov[2] = {{dst, fc->part_left}, {buf, MF_SCRATCH}};
        size_t direct;

        n = readv(c->fd, iov, 2);
        if (n <= 0)
            return n;
        direct = (size_t)n < fc->part_left ? (size_t)n : fc->part_left;
        mf_request_body_filled(r, fc->part_type == MF_DATA, direct);
        fc->part_left -= direct;
        if (fc->part_left == 0)
            fc->skip = fc->part_pad;
        *len = (size_t)n - direct;
        return n;
    }
    n = read(c->fd, buf, MF_SCRATCH);
    if (n > 0)
        *len = (size_t)n;
    return n;
}

/* Reads and handles the whole records read; only what follows them is kept in the
 * connection's buffer. */
static ssize_t on_readable(mf_conn_t *c)
{
    fcgi_conn_t *fc = (fcgi_conn_t *)c;
    const uint8_t *buf = (const uint8_t *)c->w->scratch;
    size_t len, used = 0;
    ssize_t n = read_some(fc, &len);

    if (n <= 0)
        return n;
    if (evbuffer_get_length(c->in) == 0) {
        used = feed_part(fc, buf, len);
        if (!part_pending(fc))
            used += process_block(fc, buf + used, len - used);
        if (mf_conn_closed(c))
            return n;
    }
    if (used < len && evbuffer_add(c->in, buf + used, len - used) < 0) {
        errno = ENOMEM;
        return -1;
    }
    if (len == MF_SCRATCH && !part_pending(fc)) {
        /* A bulk transfer not going straight into a body block: read the rest into the
         * buffer, where the ioctl that sizes the read is paid once for a large read. */
        int more = evbuffer_read(c->in, c->fd, READ_CHUNK - MF_SCRATCH);
        if (more > 0)
            n += more;
    }
    if (!part_pending(fc))
        process_buffered(fc);
    return n;
}

const mf_proto_t mf_fcgi_proto = {
    .name = "fastcgi",
    .conn_size = sizeof(fcgi_conn_t),
    .read = on_readable,
    .output = output,
    .commit = NULL,
    .end = end,
    .tick = NULL,
    .free = NULL,
};
