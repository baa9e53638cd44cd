/*
 * One request, from its beginning to its single end [FastCGI 1.0, sections 5 and 6]. The
 * request speaks to its connection only through conn.h: the protocol under it (FastCGI or
 * HTTP) frames what it writes and answers its end.
 */
#include "request.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Buffers of a pooled request keep up to this much memory for the next request. */
#define KEEP_BUFFER (16 * 1024)

static const char *reason_phrase(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 203: return "Non-Authoritative Information";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 207: return "Multi-Status";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 402: return "Payment Required";
    case 407: return "Proxy Authentication Required";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 418: return "I'm a teapot";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 423: return "Locked";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 507: return "Insufficient Storage";
    case 511: return "Network Authentication Required";
    default: return "Unknown";
    }
}

static mf_request_t *req_alloc(mf_worker_t *w)
{
    mf_request_t *r = w->req_pool;
    mf_buf_t params, hdrs, out, whole0, whole1;
    mf_param_t *pairs;
    uint32_t pairs_cap;
    struct evbuffer *in0, *in1;

    if (!r)
        return calloc(1, sizeof *r);
    w->req_pool = r->next_free;
    /* Keep the buffers' memory; everything else starts from zero. */
    params = r->params, hdrs = r->hdrs, out = r->out;
    whole0 = r->whole[0], whole1 = r->whole[1];
    pairs = r->pairs, pairs_cap = r->pairs_cap;
    in0 = r->in[0], in1 = r->in[1];
    memset(r, 0, sizeof *r);
    r->params = params, r->hdrs = hdrs, r->out = out;
    r->whole[0] = whole0, r->whole[1] = whole1;
    r->pairs = pairs, r->pairs_cap = pairs_cap;
    r->in[0] = in0, r->in[1] = in1;
    return r;
}

/* Returns the request to the pool. It must no longer be on a connection. */
static void release(mf_request_t *r)
{
    mf_worker_t *w = r->w;

    if (r->prev)
        r->prev->next = r->next;
    else
        w->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    w->nreqs--;
    if (!r->params_done)
        w->params_pending -= r->params.len;
    w->body_reserved -= r->ahead[0] + r->ahead[1];
    w->slots[r->slot] = NULL;
    w->free_slots[w->nfree_slots++] = r->slot;

    mf_buf_reset(&r->params, KEEP_BUFFER);
    mf_buf_reset(&r->hdrs, KEEP_BUFFER);
    mf_buf_reset(&r->out, KEEP_BUFFER);
    mf_buf_reset(&r->whole[0], KEEP_BUFFER);
    mf_buf_reset(&r->whole[1], KEEP_BUFFER);
    if (r->pairs_cap > 256) {
        free(r->pairs);
        r->pairs = NULL;
        r->pairs_cap = 0;
    }
    for (int i = 0; i < 2; i++)
        if (r->in[i])
            evbuffer_drain(r->in[i], evbuffer_get_length(r->in[i]));
    r->conn = NULL;
    r->next_free = w->req_pool;
    w->req_pool = r;
}

void mf__request_pool_free(mf_worker_t *w)
{
    mf_request_t *r;

    while ((r = w->req_pool) != NULL) {
        w->req_pool = r->next_free;
        mf_buf_free(&r->params);
        mf_buf_free(&r->hdrs);
        mf_buf_free(&r->out);
        mf_buf_free(&r->whole[0]);
        mf_buf_free(&r->whole[1]);
        free(r->pairs);
        for (int i = 0; i < 2; i++)
            if (r->in[i])
                evbuffer_free(r->in[i]);
        free(r);
    }
}

/* Gives the request a slot; grows the slot table when all are in use. */
static int take_slot(mf_worker_t *w, mf_request_t *r)
{
    if (w->nfree_slots == 0) {
        uint32_t n = w->nslots ? w->nslots * 2 : 64;
        mf_request_t **slots = realloc(w->slots, n * sizeof *slots);
        uint32_t *free_slots;
        if (!slots)
            return -1;
        w->slots = slots;
        free_slots = realloc(w->free_slots, n * sizeof *free_slots);
        if (!free_slots)
            return -1;
        w->free_slots = free_slots;
        for (uint32_t i = n; i > w->nslots; i--)
            w->free_slots[w->nfree_slots++] = i - 1;
        w->nslots = n;
    }
    r->slot = w->free_slots[--w->nfree_slots];
    w->slots[r->slot] = r;
    return 0;
}

int mf__request_push(mf_request_t *r, int type)
{
    mf_event_t *e = mf__worker_event(r->w, type, 0);

    if (!e)
        return -1;
    e->req = r;
    e->slot = r->slot;
    e->serial = r->serial;
    e->id = r->id;
    e->role = r->role;
    e->keep_conn = r->keep_conn;
    return 0;
}

/* What the connection tells the request (conn.h). */
static void on_conn_event(mf_conn_link_t *l, unsigned what)
{
    mf_request_t *r = l->req;

    if (what & MF_CONN_LOST) {
        mf_request_conn_lost(r);
        return;
    }
    if (what & MF_CONN_ROOM)
        mf_request_wake(r, MF_WAIT_WRITE);
    if (what & MF_CONN_FLUSHED)
        mf_request_wake(r, MF_WAIT_FLUSH);
}

mf_request_t *mf_request_new(mf_conn_t *c, uint16_t id, uint16_t role, int *why)
{
    mf_worker_t *w = c->w;
    mf_request_t *r = NULL;

    if (role < MF_RESPONDER || role > MF_FILTER || !(w->roles & (1u << role))) {
        if (role == MF_AUTHORIZER)
            mf_log_warn("an authorizer request reached an app with no authorize handler; "
                        "answering UNKNOWN_ROLE (some web servers grant access on it)");
        *why = MF_UNKNOWN_ROLE;
        return NULL;
    }
    if (w->nreqs >= w->cfg.max_reqs) {
        *why = MF_OVERLOADED;
        return NULL;
    }
    if (!(r = req_alloc(w)) || take_slot(w, r) < 0) {
        if (r) {
            r->next_free = w->req_pool;
            w->req_pool = r;
        }
        mf_log_error("out of memory for a request");
        *why = MF_OVERLOADED;
        return NULL;
    }
    r->w = w;
    r->conn = c;
    r->id = id;
    r->role = (uint8_t)role;
    r->keep_conn = 1;
    r->serial = ++w->serial;
    r->status = 200;
    r->begun = mf_worker_now(w);
    r->link.req = r;
    r->link.notify = on_conn_event;
    mf_conn_attach(c, &r->link, id);
    r->next = w->reqs;
    if (w->reqs)
        w->reqs->prev = r;
    w->reqs = r;
    w->nreqs++;
    return r;
}

/* Indexes the params stream; returns -1 when it is not a sequence of whole pairs. */
static int index_params(mf_request_t *r)
{
    const uint8_t *buf = (const uint8_t *)r->params.p;
    size_t off = 0;
    mf_nv_t nv;
    int rc;

    r->npairs = 0;
    while ((rc = mf_nv_next(buf, r->params.len, &off, &nv)) == MF_NV_PAIR) {
        mf_param_t *p;
        if (r->npairs == r->pairs_cap) {
            uint32_t n = r->pairs_cap ? r->pairs_cap * 2 : 32;
            mf_param_t *pairs = realloc(r->pairs, n * sizeof *pairs);
            if (!pairs)
                return -1;
            r->pairs = pairs;
            r->pairs_cap = n;
        }
        /* Offsets fit in 32 bits: --max-params is at most 2^31 - 1. */
        p = &r->pairs[r->npairs++];
        p->name_off = (uint32_t)(nv.name - buf);
        p->name_len = (uint32_t)nv.name_len;
        p->value_off = (uint32_t)(nv.value - buf);
        p->value_len = (uint32_t)nv.value_len;
    }
    return rc == MF_NV_END ? 0 : -1;
}

/* The most params bytes all unfinished requests of a worker may hold together. */
static size_t params_cap(const mf_worker_t *w)
{
    size_t cap = 64 * 1024 * 1024;

    return w->cfg.max_params * 4 > cap ? w->cfg.max_params * 4 : cap;
}

const char *mf_request_out_of_order(const mf_request_t *r, uint8_t type)
{
    switch (type) {
    case MF_PARAMS: return r->params_done ? "PARAMS after the end of PARAMS" : NULL;
    case MF_STDIN:
        if (!r->params_done)
            return "STDIN before the end of PARAMS";
        return (r->ended & 1) ? "STDIN after the end of STDIN" : NULL;
    case MF_DATA:
        if (r->role != MF_FILTER)
            return "DATA in a role without it";
        if (!(r->ended & 1))
            return "DATA before the end of STDIN";
        return (r->ended & 2) ? "DATA after the end of DATA" : NULL;
    default: return NULL;
    }
}

void mf_request_params(mf_request_t *r, const uint8_t *content, size_t len)
{
    if (r->params_done)
        return;
    if (len == 0) {
        r->params_done = 1;
        r->w->params_pending -= r->params.len;
        if (index_params(r) < 0) {
            mf_log_warn("request %u: malformed params; answering 400", r->id);
            mf_request_reject(r, 400, "malformed FastCGI params\n");
        } else {
            /* An authorizer has no body: Apache sends no STDIN at all, lighttpd an empty
             * one. Its input ends here, so a read never waits for a stream that won't come. */
            if (r->role == MF_AUTHORIZER)
                r->stdin_eof = 1;
            r->lua = 1;
            r->started = mf_worker_now(r->w);
            mf__request_push(r, MF_EV_NEW);
        }
        return;
    }
    /* params.len never exceeds max_params, so the subtraction cannot wrap. Unfinished
     * params of all requests together are capped too: many requests that never finish their
     * params must not hold --max-reqs times --max-params of memory. The answer comes at the
     * record that crosses the limit, not at the end of the stream: a sender that never ends
     * it must not be read into memory until --read-timeout. */
    if (len > r->w->cfg.max_params - r->params.len ||
        r->w->params_pending + len > params_cap(r->w) || mf_buf_append(&r->params, content, len)) {
        mf_log_info("request %u: params past %zu bytes; answering 431", r->id,
                    r->w->cfg.max_params);
        r->params_done = 1;
        r->w->params_pending -= r->params.len;
        r->params.len = 0;
        mf_request_reject(r, 431, "request params too large\n");
        return;
    }
    r->w->params_pending += len;
}

/* Recounts whether this request's unread input should stop its connection reading. */
static void update_stall(mf_request_t *r)
{
    int over = 0;

    for (int i = 0; i < 2; i++)
        if (r->in[i] && evbuffer_get_length(r->in[i]) > MF_IN_HIGH)
            over = 1;
    if (r->conn)
        mf_conn_stall(r->conn, &r->link, over);
}

/* The reservation of a stream that ended or is dropped is no longer needed ahead. */
static void unreserve(mf_request_t *r, int stream)
{
    r->w->body_reserved -= r->ahead[stream];
    r->ahead[stream] = 0;
}

/* The most the unfinished bodies of a worker reserve ahead of their bytes. */
static size_t body_reserve_cap(const mf_worker_t *w)
{
    size_t cap = 64 * 1024 * 1024;

    return w->cfg.max_body * 4 > cap ? w->cfg.max_body * 4 : cap;
}

int mf__request_reserve_body(mf_request_t *r, int stream, size_t have, size_t want)
{
    mf_worker_t *w = r->w;
    size_t size = have, ahead = 0;

    /* 1,000 requests announcing 16 MiB each must not take 16 GB before a byte arrives:
     * past the cap a body is not reserved ahead, and grows as it comes. body_reserved never
     * exceeds the cap, so the subtraction cannot wrap. */
    if (want > have && want <= w->cfg.max_body && !(stream ? r->data_eof : r->stdin_eof) &&
        want - have <= body_reserve_cap(w) - w->body_reserved) {
        ahead = want - have;
        size = want;
    }
    if (mf_buf_reserve(&r->whole[stream], size) < 0)
        return -1;
    r->ahead[stream] = ahead;
    w->body_reserved += ahead;
    return 0;
}

/* Drops input that nobody will read: only bytes still in the connection's buffer need it. */
static void drop_input(struct evbuffer *src, size_t len)
{
    if (src)
        evbuffer_drain(src, len);
}

void mf_request_input(mf_request_t *r, int stream, const uint8_t *p, struct evbuffer *src,
                      size_t len)
{
    unsigned bit = 1u << stream;
    int eof = stream ? r->data_eof : r->stdin_eof;
    unsigned wait = stream ? MF_WAIT_DATA : MF_WAIT_READ;

    if (len == 0) {
        r->ended |= bit; /* for the stream order, whatever happens to the bytes */
        unreserve(r, stream);
    }
    if (eof || (r->discard & bit)) {
        drop_input(src, len);
        return;
    }
    if (len == 0) {
        if (stream)
            r->data_eof = 1;
        else
            r->stdin_eof = 1;
        mf_request_wake(r, wait);
        return;
    }
    if (r->body_mode & bit) {
        /* body() gathers the stream in one contiguous block, so that handing it to Lua is
         * the only copy left. Past --max-body, body() answers "too large" and the rest of
         * the stream is dropped as it comes. */
        uint8_t *dst = mf_request_body_room(r, stream, len);
        if (!dst) {
            r->discard |= bit;
            unreserve(r, stream);
            mf_buf_reset(&r->whole[stream], KEEP_BUFFER);
            drop_input(src, len);
            mf_request_wake(r, wait);
        } else {
            /* No wake-up per record: body() only needs the end. Progress still counts
             * against --read-timeout (mf_request_body_filled). */
            if (src)
                evbuffer_remove(src, dst, len);
            else
                memcpy(dst, p, len);
            mf_request_body_filled(r, stream, len);
        }
        return;
    }
    if (!r->in[stream] && !(r->in[stream] = evbuffer_new())) {
        drop_input(src, len);
        r->discard |= bit;
        return;
    }
    if (src) {
        evbuffer_remove_buffer(src, r->in[stream], len);
    } else if (evbuffer_add(r->in[stream], p, len) < 0) {
        /* Bytes lost to a failed allocation: reads report "too large" rather than a hole. */
        r->discard |= bit;
    }
    update_stall(r);
    mf_request_wake(r, wait);
}

uint8_t *mf_request_body_room(mf_request_t *r, int stream, size_t n)
{
    unsigned bit = 1u << stream;
    mf_buf_t *whole = &r->whole[stream];

    if (!(r->body_mode & bit) || (r->discard & bit) || (stream ? r->data_eof : r->stdin_eof))
        return NULL;
    if (n > r->w->cfg.max_body - whole->len || mf_buf_reserve(whole, n) < 0)
        return NULL;
    return (uint8_t *)whole->p + whole->len;
}

void mf_request_body_filled(mf_request_t *r, int stream, size_t n)
{
    size_t k = n < r->ahead[stream] ? n : r->ahead[stream];

    r->ahead[stream] -= k;
    r->w->body_reserved -= k;
    r->whole[stream].len += n;
    r->wait_since = mf_worker_now(r->w);
}

void mf_request_wake(mf_request_t *r, unsigned what)
{
    if (!r->lua || !(r->waiting & what))
        return;
    r->waiting = 0;
    mf__request_push(r, MF_EV_WAKE);
}

/* Takes the request off its connection and sends its END_REQUEST. */
static void end_request(mf_request_t *r, uint32_t app_status, int output_done)
{
    mf_conn_t *c = r->conn;

    if (!c)
        return;
    r->conn = NULL;
    mf_conn_end(c, &r->link, app_status, output_done);
}

void mf_request_abort(mf_request_t *r)
{
    if (!r->lua) {
        /* The handler never started: the request ends here [section 5.4]. */
        end_request(r, 0, 0);
        release(r);
        return;
    }
    mf_log_debug("request %u: FCGI_ABORT_REQUEST while its handler runs", r->id);
    r->aborted = 1;
    mf_request_wake(r, MF_WAIT_READ | MF_WAIT_DATA | MF_WAIT_WRITE | MF_WAIT_FLUSH);
}

void mf_request_conn_lost(mf_request_t *r)
{
    r->conn = NULL;
    if (!r->lua) {
        release(r);
        return;
    }
    r->aborted = 1;
    mf_request_wake(r, MF_WAIT_READ | MF_WAIT_DATA | MF_WAIT_WRITE | MF_WAIT_FLUSH);
}

/* Appends the CGI header block to out; the body follows it. */
/* Appends the Location lines of the header block to out and removes them from it. */
static int move_location(mf_request_t *r)
{
    mf_buf_t *h = &r->hdrs;
    size_t off = 0;

    while (off < h->len) {
        char *line = h->p + off;
        char *end = memchr(line, '\n', h->len - off);
        size_t llen = end ? (size_t)(end - line) + 1 : h->len - off;
        if (llen > 9 && strncasecmp(line, "Location:", 9) == 0) {
            if (mf_buf_append(&r->out, line, llen) < 0)
                return -1;
            memmove(line, line + llen, h->len - off - llen);
            h->len -= llen;
        } else {
            off += llen;
        }
    }
    return 0;
}

int mf__request_emit_headers(mf_request_t *r)
{
    char line[128];
    int status = r->status;
    const char *reason;
    size_t n, rlen;

    if (r->role == MF_AUTHORIZER && !r->status_set)
        status = 401; /* docs/api.md: an authorizer that sets no status denies */
    reason = r->reason[0] ? r->reason : reason_phrase(status);
    rlen = strlen(reason);
    /* Built by hand: this runs once per response, and printf showed in profiles. The status
     * is 100..999 (set_status checks it) and the reason at most 63 bytes. */
    memcpy(line, "Status: ", 8);
    line[8] = (char)('0' + status / 100);
    line[9] = (char)('0' + status / 10 % 10);
    line[10] = (char)('0' + status % 10);
    line[11] = ' ';
    memcpy(line + 12, reason, rlen);
    memcpy(line + 12 + rlen, "\r\n", 2);
    n = 14 + rlen;
    r->headers_sent = 1;
    /* Location goes before Status: HAProxy turns a Location that follows Status into a 302
     * whatever the status (h1_htx.c), while the other servers take any order. */
    if (move_location(r) < 0 || mf_buf_append(&r->out, line, n) < 0 ||
        mf_buf_append(&r->out, r->hdrs.p, r->hdrs.len) < 0)
        return -1;
    /* No default type for an authorizer, nor for the statuses that have no body. */
    if (!r->ct_set && r->role != MF_AUTHORIZER && status != 204 && status != 304) {
        static const char ct[] = "Content-Type: text/html; charset=utf-8\r\n";
        if (mf_buf_append(&r->out, ct, sizeof ct - 1) < 0)
            return -1;
    }
    return mf_buf_append(&r->out, "\r\n", 2);
}

/* Frames len bytes at p as records of the given stream type, of at most MF_OUT_CONTENT_MAX. */
int mf__request_frame(mf_request_t *r, uint8_t type, const char *p, size_t len)
{
    while (len > 0) {
        size_t n = len < MF_OUT_CONTENT_MAX ? len : MF_OUT_CONTENT_MAX;
        if (mf_conn_output(r->conn, &r->link, type, p, n, NULL, 0, 0, NULL) < 0)
            return -1;
        p += n;
        len -= n;
    }
    if (type == MF_STDOUT)
        r->framed = 1;
    return 0;
}

int mf__request_frame_out(mf_request_t *r)
{
    int rc = mf__request_frame(r, MF_STDOUT, r->out.p, r->out.len);

    r->out.len = 0;
    return rc;
}

/*
 * Adds body bytes. Small writes are gathered in r->out so that a response of many small
 * pieces leaves in few records; a full record's worth is framed at once, large writes
 * straight from the caller's memory.
 */
int mf__request_out_append(mf_request_t *r, const char *p, size_t len, uint64_t token, int *nrefs)
{
    mf_conn_t *c = r->conn;
    size_t whole;

    if (r->out.len + len < MF_OUT_CONTENT_MAX)
        return mf_buf_append(&r->out, p, len) < 0 ? MF_NO_MEMORY : MF_OK;
    if (r->out.len >= MF_OUT_CONTENT_MAX && mf__request_frame_out(r) < 0)
        return MF_NO_MEMORY; /* a header block larger than a record */
    if (r->out.len > 0) {
        /* One full record of what is gathered and the start of p, without copying p into
         * out first; with a token, p's part is referenced, not copied. */
        size_t fill = MF_OUT_CONTENT_MAX - r->out.len;
        if (mf_conn_output(c, &r->link, MF_STDOUT, r->out.p, r->out.len, p, fill, token, nrefs) < 0)
            return MF_NO_MEMORY;
        r->framed = 1;
        r->out.len = 0;
        p += fill;
        len -= fill;
    }
    /* Whole records straight from the caller's memory; the tail waits in out. */
    whole = len - len % MF_OUT_CONTENT_MAX;
    if (token && whole) {
        if (mf_conn_output(c, &r->link, MF_STDOUT, NULL, 0, p, whole, token, nrefs) < 0)
            return MF_NO_MEMORY;
        r->framed = 1;
    } else if (mf__request_frame(r, MF_STDOUT, p, whole) < 0) {
        return MF_NO_MEMORY;
    }
    if (mf_buf_append(&r->out, p + whole, len - whole) < 0)
        return MF_NO_MEMORY;
    if (mf_conn_wait_room(c, &r->link) == MF_WAIT) {
        r->waiting |= MF_WAIT_WRITE;
        return MF_WAIT;
    }
    return MF_OK;
}

void mf_request_finish(mf_request_t *r, uint32_t app_status, int how)
{
    mf_conn_t *c = r->conn;

    if (c && !r->aborted) {
        if (how != MF_FINISH_OK && !r->framed) {
            /* Nothing reached the web server yet: the client gets a clean error. */
            int status = how == MF_FINISH_TIMEOUT ? 504 : 500;
            r->out.len = 0;
            r->hdrs.len = 0;
            r->status = status;
            r->status_set = 1; /* an authorizer's error is a 500 too, not its default 401 */
            r->reason[0] = '\0';
            r->raw = 0;
            r->ct_set = 1;
            mf_buf_append(&r->hdrs, "Content-Type: text/plain\r\n", 26);
            mf__request_emit_headers(r);
            mf_buf_append(&r->out, reason_phrase(status), strlen(reason_phrase(status)));
            mf_buf_append(&r->out, "\n", 1);
        } else if (!r->raw && !r->headers_sent) {
            mf__request_emit_headers(r);
        }
        mf__request_frame_out(r);
    }
    end_request(r, app_status, !r->aborted);
    r->w->served++;
    release(r);
}

void mf_request_reject(mf_request_t *r, int status, const char *body)
{
    r->status = status;
    r->status_set = 1;
    r->ct_set = 1;
    mf_buf_append(&r->hdrs, "Content-Type: text/plain\r\n", 26);
    mf__request_emit_headers(r);
    mf_buf_append(&r->out, body, strlen(body));
    mf_request_finish(r, 0, MF_FINISH_OK);
}

void mf__request_sweep(mf_worker_t *w, double now)
{
    mf_request_t *r, *next;

    for (r = w->reqs; r; r = next) {
        next = r->next;
        if (!r->lua) {
            if (!r->params_done && now - r->begun > w->cfg.read_timeout && r->conn) {
                mf_log_info("request %u: params incomplete after %.1f s; answering 408", r->id,
                            w->cfg.read_timeout);
                mf_request_reject(r, 408, "params not received in time\n");
            }
            continue;
        }
        if (!r->timed_out && now - r->started > w->cfg.timeout) {
            r->timed_out = 1;
            mf__request_push(r, MF_EV_TIMEOUT);
        } else if ((r->waiting & (MF_WAIT_READ | MF_WAIT_DATA)) &&
                   now - r->wait_since > w->cfg.read_timeout) {
            r->read_timed_out = 1;
            mf_request_wake(r, MF_WAIT_READ | MF_WAIT_DATA);
        }
    }
}
