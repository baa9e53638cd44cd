/*
 * The FFI entry points (ffi.h). Each one checks the request's state and returns a status;
 * none of them calls Lua or blocks. Where a handler must wait, the function records what it
 * waits for (r->waiting) and returns MF_WAIT; the Lua side yields.
 */
#include "ffi.h"
#include "conn.h"
#include "fcgi.h"
#include "log.h"
#include "request.h"
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

const char *mf_ffi_version(void)
{
    return MF_VERSION_STRING;
}

mf_worker_t *mf_ffi_worker_current(void)
{
    return mf_worker_current;
}

mf_worker_t *mf_ffi_worker_new(const mf_ffi_options_t *opts)
{
    mf_config_t cfg;

    mf_config_defaults(&cfg);
    if (opts) {
        if (opts->max_conns)
            cfg.max_conns = opts->max_conns;
        if (opts->max_reqs)
            cfg.max_reqs = opts->max_reqs;
        if (opts->max_params)
            cfg.max_params = opts->max_params;
        if (opts->max_body)
            cfg.max_body = opts->max_body;
        if (opts->timeout > 0)
            cfg.timeout = opts->timeout;
        if (opts->idle_timeout > 0)
            cfg.idle_timeout = opts->idle_timeout;
        if (opts->read_timeout > 0)
            cfg.read_timeout = opts->read_timeout;
        if (opts->log_level >= -1 && opts->log_level <= MF_LOG_DEBUG)
            mf_log_level = opts->log_level;
    }
    return mf_worker_new(&cfg, 1);
}

void mf_ffi_worker_close(mf_worker_t *w)
{
    mf_worker_close(w);
}

void mf_ffi_worker_free(mf_worker_t *w)
{
    mf_worker_free(w);
}

int mf_ffi_worker_pair(mf_worker_t *w, int *client_fd)
{
    int sv[2];

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    if (!mf_fcgi_conn_new(w, sv[0])) {
        close(sv[1]);
        return -ENOMEM;
    }
    *client_fd = sv[1];
    return 0;
}

void mf_ffi_worker_set_roles(mf_worker_t *w, unsigned roles)
{
    w->roles = roles;
}

int mf_ffi_worker_number(mf_worker_t *w)
{
    return w->number;
}

double mf_ffi_worker_now(mf_worker_t *w)
{
    /* docs/api.md: "the event loop's current time", as the epoch-based wall clock that ngx.now()
     * and os.date expect; timeouts never use it. */
    return mf_worker_wall(w);
}

unsigned mf_ffi_worker_requests(mf_worker_t *w)
{
    return w->nreqs;
}

unsigned mf_ffi_worker_connections(mf_worker_t *w)
{
    return w->nconns;
}

int mf_ffi_worker_next_version(mf_worker_t *w)
{
    /* Under a master, every worker names a load by the master's reload generation, so a
     * replaced worker and the others report the same version for the same code. */
    return w->shared ? w->shared->generation : ++w->local_version;
}

void mf_ffi_worker_app_loaded(mf_worker_t *w, int version, int ok)
{
    if (ok) {
        w->app_version = version;
        if (w->slot)
            w->slot->app_version = version;
    }
}

/* The workers the master runs (1 without a master, as under moonfcgi.test). */
int mf_ffi_worker_count(mf_worker_t *w)
{
    return w->shared ? w->shared->nslots : 1;
}

int mf_ffi_worker_exiting(mf_worker_t *w)
{
    return w->stopping || w->killed;
}

/* Refreshes the loop's cached time (ngx.update_time): the next read of it reads the clocks. */
void mf_ffi_worker_update_time(mf_worker_t *w)
{
    mf__worker_new_turn(w);
}

void mf_ffi_log(int level, const char *msg, size_t len)
{
    mf_log_raw(level, msg, len);
}

int mf_ffi_log_level(void)
{
    return mf_log_level;
}

/* Params */

int mf_ffi_req_param_count(mf_request_t *r)
{
    return (int)r->npairs;
}

int mf_ffi_req_param_at(mf_request_t *r, int i, const char **name, size_t *name_len,
                        const char **value, size_t *value_len)
{
    const mf_param_t *p;

    if (i < 0 || (uint32_t)i >= r->npairs)
        return MF_BAD_VALUE;
    p = &r->pairs[i];
    *name = r->params.p + p->name_off;
    *name_len = p->name_len;
    *value = r->params.p + p->value_off;
    *value_len = p->value_len;
    return MF_OK;
}

int mf_ffi_req_param(mf_request_t *r, const char *name, size_t name_len, const char **value,
                     size_t *value_len)
{
    /* The last of repeated names wins, as in the table req.params. */
    for (uint32_t i = r->npairs; i > 0; i--) {
        const mf_param_t *p = &r->pairs[i - 1];
        if (p->name_len == name_len && memcmp(r->params.p + p->name_off, name, name_len) == 0) {
            *value = r->params.p + p->value_off;
            *value_len = p->value_len;
            return MF_OK;
        }
    }
    return MF_EOF;
}

/* Input */

static int input_state(mf_request_t *r, int stream)
{
    if (stream != 0 && (stream != 1 || r->role != MF_FILTER))
        return MF_BAD_STATE;
    if (r->aborted || !r->conn)
        return MF_ABORTED;
    if (r->discard & (1u << stream))
        return MF_TOO_LARGE;
    return MF_OK;
}

static int wait_input(mf_request_t *r, int stream)
{
    if (r->read_timed_out) {
        r->read_timed_out = 0;
        return MF_TIMEOUT;
    }
    r->waiting |= stream ? MF_WAIT_DATA : MF_WAIT_READ;
    r->wait_since = mf_worker_now(r->w);
    return MF_WAIT;
}

int mf_ffi_req_read(mf_request_t *r, int stream, size_t max, const char **p, size_t *len)
{
    int rc = input_state(r, stream);
    struct evbuffer *b;

    if (rc != MF_OK)
        return rc;
    b = r->in[stream];
    if (b && evbuffer_get_length(b) > 0) {
        struct evbuffer_iovec v;
        evbuffer_peek(b, -1, NULL, &v, 1);
        *p = v.iov_base;
        *len = max && v.iov_len > max ? max : v.iov_len;
        r->read_timed_out = 0;
        return MF_OK;
    }
    if (stream ? r->data_eof : r->stdin_eof)
        return MF_EOF;
    return wait_input(r, stream);
}

/* The size the web server announced for a stream, or 0. */
static size_t announced_length(mf_request_t *r, int stream)
{
    const char *name = stream ? "FCGI_DATA_LENGTH" : "CONTENT_LENGTH", *v;
    size_t vlen, n = 0;

    if (mf_ffi_req_param(r, name, strlen(name), &v, &vlen) != MF_OK || vlen == 0 || vlen > 12)
        return 0;
    for (size_t i = 0; i < vlen; i++) {
        if (v[i] < '0' || v[i] > '9')
            return 0;
        n = n * 10 + (size_t)(v[i] - '0');
    }
    return n;
}

int mf_ffi_req_body(mf_request_t *r, int stream, const char **p, size_t *len)
{
    int rc = input_state(r, stream);
    unsigned bit = 1u << stream;
    mf_buf_t *whole = &r->whole[stream];

    if (rc != MF_OK)
        return rc;
    if (!(r->body_mode & bit)) {
        /* From now on the stream is gathered whole (request.c); what came before moves
         * into the same block, sized for the announced length when the worker may reserve
         * it (mf__request_reserve_body). */
        struct evbuffer *b = r->in[stream];
        size_t have = b ? evbuffer_get_length(b) : 0, want = announced_length(r, stream);
        r->body_mode |= bit;
        if (have > r->w->cfg.max_body) {
            r->discard |= bit;
            evbuffer_drain(b, have);
        } else if (mf__request_reserve_body(r, stream, have, want) < 0) {
            return MF_NO_MEMORY;
        } else if (have) {
            evbuffer_remove(b, whole->p + whole->len, have);
            whole->len += have;
        }
        /* The body is read whole: its bound is now --max-body, not MF_IN_HIGH. */
        mf_conn_stall(r->conn, &r->link, 0);
        if (r->discard & bit)
            return MF_TOO_LARGE;
    }
    if (!(stream ? r->data_eof : r->stdin_eof))
        return wait_input(r, stream);
    *p = whole->len ? whole->p : "";
    *len = whole->len;
    return MF_OK;
}

void mf_ffi_req_consume(mf_request_t *r, int stream, size_t len)
{
    struct evbuffer *b;

    if (stream != 0 && stream != 1)
        return;
    if (r->body_mode & (1u << stream)) {
        mf_buf_reset(&r->whole[stream], 64 * 1024);
        return;
    }
    if (!(b = r->in[stream]))
        return;
    evbuffer_drain(b, len);
    if (r->link.stalled && r->conn && evbuffer_get_length(b) <= MF_IN_HIGH) {
        size_t other = r->in[!stream] ? evbuffer_get_length(r->in[!stream]) : 0;
        if (other <= MF_IN_HIGH)
            mf_conn_stall(r->conn, &r->link, 0);
    }
}

/* Output */

static int is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static int cooked_state(mf_request_t *r)
{
    if (r->raw || r->headers_sent)
        return MF_BAD_STATE;
    r->cooked = 1;
    return MF_OK;
}

int mf_ffi_req_set_status(mf_request_t *r, int status, const char *reason, size_t reason_len)
{
    int rc = cooked_state(r);

    if (rc != MF_OK)
        return rc;
    if (status < 100 || status > 999)
        return MF_BAD_VALUE;
    for (size_t i = 0; i < reason_len; i++)
        if (reason[i] == '\r' || reason[i] == '\n' || reason[i] == '\0')
            return MF_BAD_VALUE;
    if (reason_len >= sizeof r->reason)
        reason_len = sizeof r->reason - 1;
    if (reason_len)
        memcpy(r->reason, reason, reason_len);
    r->reason[reason_len] = '\0';
    r->status = status;
    r->status_set = 1;
    return MF_OK;
}

/* Removes every header line named name (any case) from the header block. */
static void remove_header(mf_buf_t *h, const char *name, size_t name_len)
{
    size_t off = 0;

    while (off < h->len) {
        char *line = h->p + off;
        char *end = memchr(line, '\n', h->len - off);
        size_t llen = end ? (size_t)(end - line) + 1 : h->len - off;
        if (llen > name_len && line[name_len] == ':' && strncasecmp(line, name, name_len) == 0) {
            memmove(line, line + llen, h->len - off - llen);
            h->len -= llen;
        } else {
            off += llen;
        }
    }
}

int mf_ffi_req_set_header(mf_request_t *r, const char *name, size_t name_len, const char *value,
                          size_t value_len, int append)
{
    int rc = cooked_state(r);

    if (rc != MF_OK)
        return rc;
    if (name_len == 0 || name_len > 1024)
        return MF_BAD_VALUE;
    for (size_t i = 0; i < name_len; i++)
        if (!is_tchar((unsigned char)name[i]))
            return MF_BAD_VALUE;
    if (name_len == 6 && strncasecmp(name, "Status", 6) == 0)
        return MF_BAD_VALUE; /* set_status owns the status line */
    for (size_t i = 0; value && i < value_len; i++)
        if (value[i] == '\r' || value[i] == '\n' || value[i] == '\0')
            return MF_BAD_VALUE;
    if (!append)
        remove_header(&r->hdrs, name, name_len);
    if (name_len == 12 && strncasecmp(name, "Content-Type", 12) == 0)
        r->ct_set = 1; /* set or removed: either way the default is not wanted */
    if (!value)
        return MF_OK;
    if (mf_buf_reserve(&r->hdrs, name_len + value_len + 4) < 0)
        return MF_NO_MEMORY;
    mf_buf_append(&r->hdrs, name, name_len);
    mf_buf_append(&r->hdrs, ": ", 2);
    mf_buf_append(&r->hdrs, value, value_len);
    mf_buf_append(&r->hdrs, "\r\n", 2);
    return MF_OK;
}

static int output_state(mf_request_t *r)
{
    return (r->aborted || !r->conn) ? MF_ABORTED : MF_OK;
}

int mf_ffi_req_write_ref(mf_request_t *r, const char *p, size_t len, uint64_t token, int *nrefs)
{
    *nrefs = 0;
    if (r->raw)
        return MF_BAD_STATE;
    if (output_state(r) != MF_OK)
        return MF_ABORTED;
    r->cooked = 1;
    if (!r->headers_sent && mf__request_emit_headers(r) < 0)
        return MF_NO_MEMORY;
    return mf__request_out_append(r, p, len, token, nrefs);
}

int mf_ffi_req_write(mf_request_t *r, const char *p, size_t len)
{
    int nrefs;

    /* Token 0: the bytes are copied. */
    return mf_ffi_req_write_ref(r, p, len, 0, &nrefs);
}

int mf_ffi_req_raw_write(mf_request_t *r, const char *p, size_t len)
{
    if (r->cooked)
        return MF_BAD_STATE;
    if (output_state(r) != MF_OK)
        return MF_ABORTED;
    r->raw = 1;
    return mf__request_out_append(r, p, len, 0, NULL);
}

int mf_ffi_req_writable(mf_request_t *r)
{
    if (output_state(r) != MF_OK)
        return MF_ABORTED;
    if (mf_conn_wait_room(r->conn, &r->link) == MF_OK)
        return MF_OK;
    r->waiting |= MF_WAIT_WRITE;
    return MF_WAIT;
}

int mf_ffi_req_flush(mf_request_t *r)
{
    int rc;

    if (output_state(r) != MF_OK)
        return MF_ABORTED;
    if (!r->raw && !r->headers_sent) {
        r->cooked = 1;
        if (mf__request_emit_headers(r) < 0)
            return MF_NO_MEMORY;
    }
    if (r->out.len > 0 && mf__request_frame_out(r) < 0)
        return MF_NO_MEMORY;
    /* Everything appended so far, this request's bytes among them, must be written. */
    rc = mf_conn_wait_flushed(r->conn, &r->link);
    if (rc < 0)
        return MF_NO_MEMORY;
    if (rc == MF_WAIT)
        r->waiting |= MF_WAIT_FLUSH;
    return rc;
}

int mf_ffi_req_stderr(mf_request_t *r, const char *p, size_t len)
{
    if (output_state(r) != MF_OK)
        return MF_ABORTED;
    return mf__request_frame(r, MF_STDERR, p, len) < 0 ? MF_NO_MEMORY : MF_OK;
}

int mf_ffi_req_aborted(mf_request_t *r)
{
    return r->aborted || !r->conn;
}

int mf_ffi_req_headers_sent(mf_request_t *r)
{
    return r->headers_sent || r->raw;
}

/* The status set_status chose, or 0 when the handler set none (the role's default). */
int mf_ffi_req_status(mf_request_t *r)
{
    return r->status_set ? r->status : 0;
}

void mf_ffi_req_finish(mf_request_t *r, uint32_t app_status, int how)
{
    mf_worker_t *w = r->w;

    mf_request_finish(r, app_status, how);
    /* Lua holds no pointer into a connection here, so a failed write may destroy one. */
    if (w->unflushed >= MF_FLUSH_EARLY)
        mf_conn_flush_dirty(w);
}
