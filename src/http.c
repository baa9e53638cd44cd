/*
 * HTTP/1.1 on a connection (http.h). RFC 9112 for the message syntax, RFC 3875 (CGI) for
 * the params and for the handler's answer, which is a CGI response here as behind a web
 * server: request.c writes the same header block whatever the protocol, and this file turns
 * it into a status line and headers, as nginx does with a FastCGI answer.
 */
#include "http.h"
#include "buf.h"
#include "log.h"
#include "record.h"
#include "request.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>

/* Body bytes held back so that a short answer goes out with a Content-Length. */
#define HOLD_MAX (64 * 1024)
/* The longest CGI header block taken from a handler. */
#define CGI_HEAD_MAX (64 * 1024)
/* Input read ahead while a request waits for its answer (pipelining). */
#define PIPELINE_MAX (64 * 1024)
/* Beyond this many headers, repeated names are not joined (the join is quadratic). */
#define JOIN_MAX 256
/* HTTP requests are answered one at a time: each is attached under this id. */
#define HTTP_ID 1

typedef struct hdr {
    uint32_t name_off, name_len, value_off, value_len;
} hdr_t;

typedef struct http_conn {
    mf_conn_t c;
    http_parser p;

    /* The request head being parsed: the URL, then header names and values. */
    mf_buf_t head;
    hdr_t *hdrs;
    uint32_t nhdrs, hdrs_cap;
    uint32_t url_len;
    size_t head_bytes; /* counted against --max-params */
    double head_since; /* when the head began; 0 when no head is in progress */
    uint64_t body_in;  /* body bytes of the current message */
    int err_status;    /* an answer a callback decided on: 413, 431, 400 */
    mf_buf_t params;   /* the CGI params being built, as FastCGI name-value pairs */

    unsigned parsing : 1;    /* inside parse_input: end() must not re-enter it */
    unsigned last_value : 1; /* the last header callback was a value */
    unsigned msg_done : 1;   /* the current message's body is complete */
    unsigned keep_alive : 1; /* the client keeps the connection (http_should_keep_alive) */
    unsigned is_head : 1;    /* HEAD: the answer has no body */
    unsigned dead : 1;       /* input is no longer parsed: the connection closes */
    unsigned minor1 : 1;     /* the client speaks HTTP/1.1 (chunked answers allowed) */
    unsigned aborted_by_us : 1;
    unsigned answered : 1; /* the current message was answered before its body ended */

    /* The request being answered. */
    mf_request_t *r;
    mf_buf_t cgi;          /* the handler's header block until its blank line */
    mf_buf_t resp;         /* the header lines kept from it */
    char reason[64];       /* from its Status line */
    struct evbuffer *held; /* body held back before the headers go out */
    uint64_t body_out;     /* body bytes the handler wrote */
    uint64_t sized;        /* the Content-Length the handler gave */
    int status;
    unsigned head_done : 1; /* the CGI header block was parsed */
    unsigned committed : 1; /* the status line and headers are in the output */
    unsigned chunked : 1;
    unsigned no_body : 1;
    unsigned has_len : 1;
    unsigned discard : 1; /* the answer is broken or replaced: drop the handler's output */

    char remote_addr[INET6_ADDRSTRLEN], server_addr[INET6_ADDRSTRLEN];
    unsigned remote_port, server_port;
} http_conn_t;

static const http_parser_settings settings;

/* Answers */

static const char *reason_for(int status)
{
    const char *s = http_status_str((enum http_status)status);

    return strcmp(s, "<unknown>") == 0 ? "Unknown" : s;
}

static void add_date(mf_buf_t *b)
{
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    size_t n;

    gmtime_r(&now, &tm);
    n = strftime(date, sizeof date, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
    mf_buf_append(b, date, n);
}

/* A complete small answer of ours (an error), after which the connection closes. */
static void simple_answer(http_conn_t *hc, int status, const char *msg)
{
    char head[512];
    size_t mlen = strlen(msg);
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nServer: moonfcgi\r\nContent-Type: text/plain\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                     status, reason_for(status), mlen);

    mf_conn_add(&hc->c, head, (size_t)n);
    if (!hc->is_head)
        mf_conn_add(&hc->c, msg, mlen);
    hc->keep_alive = 0;
    hc->dead = 1;
    mf_conn_close_when_done(&hc->c);
}

/* The status line and headers; the held body follows. at_end: the whole body is held. */
static int commit(http_conn_t *hc, int at_end)
{
    mf_buf_t h = {0};
    char line[160];
    int n, st = hc->status;
    int bodiless = st < 200 || st == 204 || st == 304;
    size_t held = evbuffer_get_length(hc->held);
    int rc = 0;

    n = snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\nServer: moonfcgi\r\n", st,
                 hc->reason[0] ? hc->reason : reason_for(st));
    mf_buf_append(&h, line, (size_t)n);
    add_date(&h);
    mf_buf_append(&h, hc->resp.p, hc->resp.len);
    if (!bodiless && !hc->has_len) {
        if (at_end) {
            n = snprintf(line, sizeof line, "Content-Length: %llu\r\n",
                         (unsigned long long)(hc->no_body && hc->is_head ? hc->body_out : held));
            mf_buf_append(&h, line, (size_t)n);
        } else if (hc->minor1) {
            mf_buf_append(&h, "Transfer-Encoding: chunked\r\n", 28);
            hc->chunked = 1;
        } else {
            hc->keep_alive = 0; /* an HTTP/1.0 client: the close ends the body */
        }
    }
    if (!hc->keep_alive)
        mf_buf_append(&h, "Connection: close\r\n", 19);
    else if (!hc->minor1)
        mf_buf_append(&h, "Connection: keep-alive\r\n", 24);
    if (mf_buf_append(&h, "\r\n", 2) < 0 || mf_conn_add(&hc->c, h.p, h.len) < 0)
        rc = -1;
    mf_buf_free(&h);
    hc->committed = 1;
    if (hc->no_body || held == 0) {
        evbuffer_drain(hc->held, held);
    } else if (hc->chunked) {
        n = snprintf(line, sizeof line, "%zx\r\n", held);
        if (mf_conn_add(&hc->c, line, (size_t)n) < 0 || mf_conn_add_buffer(&hc->c, hc->held) < 0 ||
            mf_conn_add(&hc->c, "\r\n", 2) < 0)
            rc = -1;
    } else if (mf_conn_add_buffer(&hc->c, hc->held) < 0) {
        rc = -1;
    }
    return rc;
}

/* The handler's answer is not a CGI response: the client gets a 502 if nothing went out. */
static void bad_answer(http_conn_t *hc, const char *why)
{
    mf_log_warn("fd %d: %s; answering 502", hc->c.fd, why);
    hc->discard = 1;
    evbuffer_drain(hc->held, evbuffer_get_length(hc->held));
    if (!hc->committed) {
        hc->committed = 1;
        simple_answer(hc, 502, "the handler's answer is not a CGI response\n");
    } else {
        hc->keep_alive = 0;
    }
}

static int header_is(const char *line, size_t nlen, const char *name)
{
    return nlen == strlen(name) && strncasecmp(line, name, nlen) == 0;
}

/* Parses the handler's header block [RFC 3875, section 6]; the blank line ends at len. */
static void parse_cgi_head(http_conn_t *hc, const char *p, size_t len)
{
    int status = 0, location = 0;
    size_t off = 0;

    hc->resp.len = 0;
    hc->reason[0] = '\0';
    while (off < len) {
        const char *line = p + off, *nl = memchr(line, '\n', len - off), *colon, *v;
        size_t llen = nl ? (size_t)(nl - line) : len - off, nlen, vlen;

        off += llen + 1;
        if (llen > 0 && line[llen - 1] == '\r')
            llen--;
        if (llen == 0)
            break;
        colon = memchr(line, ':', llen);
        if (!colon || colon == line) {
            bad_answer(hc, "a CGI header line without a name");
            return;
        }
        nlen = (size_t)(colon - line);
        v = colon + 1;
        vlen = llen - nlen - 1;
        while (vlen && (*v == ' ' || *v == '\t'))
            v++, vlen--;
        if (header_is(line, nlen, "Status")) {
            if (vlen < 3 || v[0] < '1' || v[0] > '9' || v[1] < '0' || v[1] > '9' || v[2] < '0' ||
                v[2] > '9') {
                bad_answer(hc, "a CGI Status line without a status");
                return;
            }
            status = (v[0] - '0') * 100 + (v[1] - '0') * 10 + (v[2] - '0');
            if (vlen > 4) {
                size_t rl = vlen - 4 < sizeof hc->reason - 1 ? vlen - 4 : sizeof hc->reason - 1;
                memcpy(hc->reason, v + 4, rl);
                hc->reason[rl] = '\0';
            }
            continue;
        }
        /* The framing is ours to decide. */
        if (header_is(line, nlen, "Transfer-Encoding") || header_is(line, nlen, "Connection") ||
            header_is(line, nlen, "Keep-Alive"))
            continue;
        if (header_is(line, nlen, "Content-Length")) {
            uint64_t n = 0;
            for (size_t i = 0; i < vlen; i++) {
                if (v[i] < '0' || v[i] > '9' || n > UINT64_MAX / 10 - 9) {
                    bad_answer(hc, "a malformed Content-Length from the handler");
                    return;
                }
                n = n * 10 + (uint64_t)(v[i] - '0');
            }
            hc->has_len = 1;
            hc->sized = n;
        }
        if (header_is(line, nlen, "Location"))
            location = 1;
        mf_buf_append(&hc->resp, line, llen);
        mf_buf_append(&hc->resp, "\r\n", 2);
    }
    /* A Location without a Status is a redirect [RFC 3875, section 6.2.3]. */
    hc->status = status ? status : location ? 302 : 200;
    hc->head_done = 1;
    hc->no_body = hc->is_head || hc->status < 200 || hc->status == 204 || hc->status == 304 ||
                  (hc->r && hc->r->role == MF_AUTHORIZER && hc->status == 200);
    if (hc->r && hc->r->role == MF_AUTHORIZER && hc->status == 200) {
        hc->has_len = 0; /* a grant: the variables as headers, no body */
        hc->is_head = 0;
    }
}

/* Body bytes of the answer: held back until HOLD_MAX, then framed as they come. */
static int body(http_conn_t *hc, const uint8_t *p, size_t n, uint64_t token, int *nrefs)
{
    mf_conn_t *c = &hc->c;
    char line[24];

    hc->body_out += n;
    if (hc->no_body || hc->discard || n == 0)
        return 0;
    if (!hc->committed) {
        if (token ? mf_conn_add_ref(c, hc->held, p, n, token) : evbuffer_add(hc->held, p, n))
            return mf_conn_out_failed(c);
        if (token)
            (*nrefs)++;
        if (evbuffer_get_length(hc->held) > HOLD_MAX && commit(hc, 0) < 0)
            return -1;
        return 0;
    }
    if (hc->chunked) {
        int k = snprintf(line, sizeof line, "%zx\r\n", n);
        if (mf_conn_add(c, line, (size_t)k) < 0)
            return -1;
    }
    if (token) {
        if (mf_conn_add_ref(c, c->out, p, n, token) < 0)
            return mf_conn_out_failed(c);
        (*nrefs)++;
        mf_conn_counted(c, n);
    } else if (mf_conn_add(c, p, n) < 0) {
        return -1;
    }
    if (hc->chunked && mf_conn_add(c, "\r\n", 2) < 0)
        return -1;
    return 0;
}

/* Finds the blank line that ends a header block in b from byte from on; 0 if none. */
static size_t head_end(const mf_buf_t *b, size_t from)
{
    for (size_t i = from; i < b->len; i++) {
        if (b->p[i] != '\n')
            continue;
        if (i + 1 < b->len && b->p[i + 1] == '\n')
            return i + 2;
        if (i + 2 < b->len && b->p[i + 1] == '\r' && b->p[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

static int feed(http_conn_t *hc, const uint8_t *p, size_t n, uint64_t token, int *nrefs)
{
    size_t from, end;

    if (n == 0 || hc->discard)
        return 0;
    if (hc->head_done)
        return body(hc, p, n, token, nrefs);
    from = hc->cgi.len > 2 ? hc->cgi.len - 2 : 0;
    if (mf_buf_append(&hc->cgi, p, n) < 0)
        return mf_conn_out_failed(&hc->c);
    if ((end = head_end(&hc->cgi, from)) == 0) {
        if (hc->cgi.len > CGI_HEAD_MAX)
            bad_answer(hc, "a CGI header block over 64 KiB");
        return 0;
    }
    parse_cgi_head(hc, hc->cgi.p, end);
    if (!hc->discard && body(hc, (const uint8_t *)hc->cgi.p + end, hc->cgi.len - end, 0, NULL) < 0)
        return -1;
    mf_buf_reset(&hc->cgi, 4096);
    return 0;
}

static int output(mf_conn_t *c, mf_conn_link_t *l, int stream, const void *a, size_t alen,
                  const void *b, size_t blen, uint64_t token, int *nrefs)
{
    http_conn_t *hc = (http_conn_t *)c;

    (void)l;
    if (stream == MF_STDERR) {
        /* What a web server would log. */
        mf_log_warn("stderr of a request: %.*s%.*s", (int)alen, (const char *)a, (int)blen,
                    (const char *)b);
        return 0;
    }
    if (!hc->r)
        return 0;
    if (feed(hc, a, alen, 0, NULL) < 0)
        return -1;
    return feed(hc, b, blen, token, nrefs);
}

static int on_commit(mf_conn_t *c, mf_conn_link_t *l)
{
    http_conn_t *hc = (http_conn_t *)c;

    (void)l;
    if (hc->r && hc->head_done && !hc->committed && !hc->discard)
        return commit(hc, 0);
    return 0;
}

static void parse_input(http_conn_t *hc);

static void reset_answer(http_conn_t *hc)
{
    hc->r = NULL;
    mf_buf_reset(&hc->cgi, 4096);
    mf_buf_reset(&hc->resp, 4096);
    evbuffer_drain(hc->held, evbuffer_get_length(hc->held));
    hc->body_out = hc->sized = 0;
    hc->status = 0;
    hc->head_done = hc->committed = hc->chunked = hc->no_body = hc->has_len = hc->discard = 0;
}

static void end(mf_conn_t *c, mf_conn_link_t *l, uint32_t app_status, int output_done)
{
    http_conn_t *hc = (http_conn_t *)c;

    (void)app_status;
    if (!output_done) {
        /* Aborted: by us (a body past --max-body, or malformed), before any answer. */
        if (!hc->committed && hc->aborted_by_us)
            simple_answer(hc, hc->err_status ? hc->err_status : 400, "bad request body\n");
        hc->keep_alive = 0;
    } else if (!hc->head_done) {
        if (!hc->discard)
            bad_answer(hc, "the handler's answer ended inside its header block");
    } else if (!hc->committed) {
        commit(hc, 1);
    } else if (hc->chunked && !hc->discard) {
        mf_conn_add(c, "0\r\n\r\n", 5);
    } else if (hc->has_len && !hc->no_body && hc->body_out != hc->sized) {
        hc->keep_alive = 0; /* the client cannot find where this answer ends */
    }
    mf_conn_detach(c, l);
    reset_answer(hc);
    if (!hc->msg_done)
        hc->answered = 1;
    if (!hc->keep_alive || hc->dead) {
        hc->dead = 1;
        mf_conn_close_when_done(c);
        return;
    }
    /* The next pipelined request, if it is here; a body still arriving is dropped. */
    parse_input(hc);
}

/* The request head */

static int over_limit(http_conn_t *hc, size_t n)
{
    hc->head_bytes += n;
    if (hc->head_bytes <= hc->c.w->cfg.max_params)
        return 0;
    hc->err_status = 431;
    return 1;
}

static int on_message_begin(http_parser *p)
{
    http_conn_t *hc = p->data;

    hc->head.len = 0;
    hc->nhdrs = 0;
    hc->url_len = 0;
    hc->head_bytes = 0;
    hc->last_value = 0;
    hc->body_in = 0;
    hc->msg_done = 0;
    hc->err_status = 0;
    hc->answered = 0;
    hc->head_since = mf_worker_now(hc->c.w);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    http_conn_t *hc = p->data;

    if (over_limit(hc, len) || mf_buf_append(&hc->head, at, len) < 0)
        return -1;
    hc->url_len += (uint32_t)len;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    http_conn_t *hc = p->data;

    if (over_limit(hc, len))
        return -1;
    if (hc->nhdrs == 0 || hc->last_value) {
        hdr_t *h;
        if (over_limit(hc, 4))
            return -1;
        if (hc->nhdrs == hc->hdrs_cap) {
            uint32_t n = hc->hdrs_cap ? hc->hdrs_cap * 2 : 32;
            hdr_t *a = realloc(hc->hdrs, n * sizeof *a);
            if (!a)
                return -1;
            hc->hdrs = a;
            hc->hdrs_cap = n;
        }
        h = &hc->hdrs[hc->nhdrs++];
        memset(h, 0, sizeof *h);
        h->name_off = (uint32_t)hc->head.len;
        hc->last_value = 0;
    }
    hc->hdrs[hc->nhdrs - 1].name_len += (uint32_t)len;
    return mf_buf_append(&hc->head, at, len);
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    http_conn_t *hc = p->data;
    hdr_t *h = &hc->hdrs[hc->nhdrs - 1];

    if (over_limit(hc, len))
        return -1;
    if (!hc->last_value) {
        h->value_off = (uint32_t)hc->head.len;
        hc->last_value = 1;
    }
    h->value_len += (uint32_t)len;
    return mf_buf_append(&hc->head, at, len);
}

static int param(mf_buf_t *b, const char *name, size_t nlen, const char *value, size_t vlen)
{
    if (mf_buf_reserve(b, mf_nv_size(nlen, vlen)) < 0)
        return -1;
    b->len += mf_nv_encode((uint8_t *)b->p + b->len, name, nlen, value, vlen);
    return 0;
}

static int sparam(mf_buf_t *b, const char *name, const char *value)
{
    return param(b, name, strlen(name), value, strlen(value));
}

static const char *hname(const http_conn_t *hc, const hdr_t *h)
{
    return hc->head.p + h->name_off;
}

static const char *hvalue(const http_conn_t *hc, const hdr_t *h)
{
    return hc->head.p + h->value_off;
}

/* The value of the first header named name, or NULL. */
static const hdr_t *find_header(const http_conn_t *hc, const char *name)
{
    size_t n = strlen(name);

    for (uint32_t i = 0; i < hc->nhdrs; i++)
        if (hc->hdrs[i].name_len == n && strncasecmp(hname(hc, &hc->hdrs[i]), name, n) == 0)
            return &hc->hdrs[i];
    return NULL;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/*
 * nginx's $uri: the path percent-decoded, with "//" merged and "." and ".." resolved. -1
 * when it is not a path, decodes to a NUL byte, or climbs above the root.
 */
static int normalize(const char *p, size_t len, mf_buf_t *out)
{
    out->len = 0;
    if (len == 0 || p[0] != '/')
        return -1;
    for (size_t i = 0; i < len; i++) {
        char ch = p[i];
        if (ch == '%') {
            int hi = i + 2 < len ? hexval(p[i + 1]) : -1, lo = hi >= 0 ? hexval(p[i + 2]) : -1;
            if (lo < 0)
                return -1;
            ch = (char)(hi * 16 + lo);
            i += 2;
            if (ch == '\0')
                return -1;
        }
        if (ch == '/' && out->len > 0 && out->p[out->len - 1] == '/')
            continue;
        if (mf_buf_append(out, &ch, 1) < 0)
            return -1;
        /* A segment just ended or the path ends: resolve "." and "..". */
        if (ch == '/' || i + 1 == len) {
            size_t e = out->len - (ch == '/' ? 1 : 0);
            size_t s = e;
            while (s > 0 && out->p[s - 1] != '/')
                s--;
            if (e - s == 1 && out->p[s] == '.') {
                out->len = s;
            } else if (e - s == 2 && out->p[s] == '.' && out->p[s + 1] == '.') {
                if (s <= 1)
                    return -1;
                s--; /* the slash before ".." */
                while (s > 0 && out->p[s - 1] != '/')
                    s--;
                out->len = s;
            }
        }
    }
    if (out->len == 0)
        mf_buf_append(out, "/", 1);
    return 0;
}

static const char *content_type(const char *path)
{
    static const char *const types[][2] = {
        {".html", "text/html; charset=utf-8"},
        {".htm", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".json", "application/json"},
        {".txt", "text/plain; charset=utf-8"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".jpg", "image/jpeg"},
        {".jpeg", "image/jpeg"},
        {".gif", "image/gif"},
        {".ico", "image/x-icon"},
        {".wasm", "application/wasm"},
        {".woff2", "font/woff2"},
    };
    const char *dot = strrchr(path, '.');

    if (dot && !strchr(dot, '/'))
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (strcasecmp(dot, types[i][0]) == 0)
                return types[i][1];
    return "application/octet-stream";
}

/* Serves a file under --http-root; 0 when there is none for this path (the handler answers). */
static int serve_static(http_conn_t *hc, const mf_buf_t *uri)
{
    const char *root = hc->c.w->cfg.http_root;
    char path[4096], head[512];
    struct stat st;
    int fd, n;
    struct evbuffer_file_segment *seg;

    if (!root || (int)uri->len + 12 >= (int)(sizeof path - strlen(root)))
        return 0;
    n = snprintf(path, sizeof path, "%s%.*s", root, (int)uri->len, uri->p);
    if (uri->p[uri->len - 1] == '/')
        snprintf(path + n, sizeof path - (size_t)n, "index.html");
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return 0;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return 0;
    }
    n = snprintf(head, sizeof head,
                 "HTTP/1.1 200 OK\r\nServer: moonfcgi\r\nContent-Type: %s\r\n"
                 "Content-Length: %lld\r\nCache-Control: no-cache\r\n%s\r\n",
                 content_type(path), (long long)st.st_size,
                 hc->keep_alive ? (hc->minor1 ? "" : "Connection: keep-alive\r\n")
                                : "Connection: close\r\n");
    mf_conn_add(&hc->c, head, (size_t)n);
    if (hc->is_head || st.st_size == 0) {
        close(fd);
        return 1;
    }
    /* Mapped or read, never sendfile: the output is written with sendmsg (conn.c). */
    seg = evbuffer_file_segment_new(fd, 0, st.st_size,
                                    EVBUF_FS_DISABLE_SENDFILE | EVBUF_FS_CLOSE_ON_FREE);
    if (!seg) {
        close(fd);
        simple_answer(hc, 500, "cannot read the file\n");
        return 1;
    }
    if (evbuffer_add_file_segment(hc->c.out, seg, 0, st.st_size) < 0) {
        evbuffer_file_segment_free(seg);
        simple_answer(hc, 500, "cannot read the file\n");
        return 1;
    }
    evbuffer_file_segment_free(seg); /* the buffer holds its own reference */
    mf_conn_counted(&hc->c, (size_t)st.st_size);
    return 1;
}

/* Builds the params nginx's fastcgi_params would send for this request. */
static int build_params(http_conn_t *hc, const char *uri, size_t ulen, const char *query,
                        size_t qlen)
{
    mf_buf_t *b = &hc->params;
    const http_parser *p = &hc->p;
    const hdr_t *ct = find_header(hc, "Content-Type"), *cl = find_header(hc, "Content-Length");
    const hdr_t *host = find_header(hc, "Host");
    char proto[24], port[12], rport[12];
    const char *name = hc->server_addr;
    size_t name_len = strlen(name);
    char hn[256];
    int rc = 0;

    b->len = 0;
    snprintf(proto, sizeof proto, "HTTP/%u.%u", p->http_major, p->http_minor);
    snprintf(port, sizeof port, "%u", hc->server_port);
    snprintf(rport, sizeof rport, "%u", hc->remote_port);
    if (host && host->value_len > 0) {
        /* SERVER_NAME: the Host asked for, without its port (nginx's is its server_name). */
        const char *v = hvalue(hc, host);
        size_t n = host->value_len;
        const char *colon = v[0] == '[' ? memchr(v, ']', n) : memchr(v, ':', n);
        if (colon && v[0] == '[')
            colon++;
        name = v;
        name_len = colon ? (size_t)(colon - v) : n;
    }
    rc |= param(b, "QUERY_STRING", 12, query, qlen);
    rc |= sparam(b, "REQUEST_METHOD", http_method_str((enum http_method)p->method));
    rc |= param(b, "CONTENT_TYPE", 12, ct ? hvalue(hc, ct) : "", ct ? ct->value_len : 0);
    rc |= param(b, "CONTENT_LENGTH", 14, cl ? hvalue(hc, cl) : "", cl ? cl->value_len : 0);
    rc |= param(b, "SCRIPT_NAME", 11, uri, ulen);
    rc |= param(b, "PATH_INFO", 9, "", 0);
    rc |= param(b, "REQUEST_URI", 11, hc->head.p, hc->url_len);
    rc |= param(b, "DOCUMENT_URI", 12, uri, ulen);
    rc |= sparam(b, "DOCUMENT_ROOT", hc->c.w->cfg.http_root ? hc->c.w->cfg.http_root : "");
    {
        /* The recipe's SCRIPT_FILENAME, $document_root$fastcgi_script_name (docs/servers). */
        const char *root = hc->c.w->cfg.http_root ? hc->c.w->cfg.http_root : "";
        size_t rl = strlen(root);
        mf_buf_t sf = {0};
        mf_buf_append(&sf, root, rl);
        mf_buf_append(&sf, uri, ulen);
        rc |= param(b, "SCRIPT_FILENAME", 15, sf.p ? sf.p : "", sf.len);
        mf_buf_free(&sf);
    }
    rc |= sparam(b, "SERVER_PROTOCOL", proto);
    rc |= sparam(b, "REQUEST_SCHEME", "http");
    rc |= sparam(b, "GATEWAY_INTERFACE", "CGI/1.1");
    rc |= sparam(b, "SERVER_SOFTWARE", "moonfcgi/" MF_VERSION_STRING);
    rc |= sparam(b, "REMOTE_ADDR", hc->remote_addr);
    rc |= sparam(b, "REMOTE_PORT", rport);
    rc |= sparam(b, "REMOTE_USER", "");
    rc |= sparam(b, "SERVER_ADDR", hc->server_addr);
    rc |= sparam(b, "SERVER_PORT", port);
    rc |= param(b, "SERVER_NAME", 11, name, name_len);
    rc |= sparam(b, "REDIRECT_STATUS", "200");
    /*
     * Every header as HTTP_NAME, as nginx passes them; names with characters other than
     * letters, digits and '-' are dropped, as nginx does (ignore_invalid_headers, and
     * underscores_in_headers off). Repeated names are joined with ", " ("; " for Cookie).
     */
    for (uint32_t i = 0; i < hc->nhdrs && !rc; i++) {
        const hdr_t *h = &hc->hdrs[i];
        const char *hnm = hname(hc, h);
        size_t vstart = hc->params.len;
        int valid = h->name_len > 0 && h->name_len < sizeof hn - 5, dup = 0;
        mf_buf_t joined = {0};

        for (uint32_t k = 0; valid && k < h->name_len; k++) {
            char ch = hnm[k];
            if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '-'))
                valid = 0;
        }
        if (!valid)
            continue;
        if (hc->nhdrs <= JOIN_MAX)
            for (uint32_t k = 0; k < i && !dup; k++)
                dup = hc->hdrs[k].name_len == h->name_len &&
                      strncasecmp(hname(hc, &hc->hdrs[k]), hnm, h->name_len) == 0;
        if (dup)
            continue;
        memcpy(hn, "HTTP_", 5);
        for (uint32_t k = 0; k < h->name_len; k++) {
            char ch = hnm[k];
            hn[5 + k] = ch == '-' ? '_' : (ch >= 'a' && ch <= 'z') ? (char)(ch - 32) : ch;
        }
        mf_buf_append(&joined, hvalue(hc, h), h->value_len);
        if (hc->nhdrs <= JOIN_MAX)
            for (uint32_t k = i + 1; k < hc->nhdrs; k++) {
                const hdr_t *o = &hc->hdrs[k];
                if (o->name_len != h->name_len || strncasecmp(hname(hc, o), hnm, h->name_len))
                    continue;
                mf_buf_append(&joined, header_is(hnm, h->name_len, "Cookie") ? "; " : ", ", 2);
                mf_buf_append(&joined, hvalue(hc, o), o->value_len);
            }
        rc |= param(b, hn, 5 + h->name_len, joined.len ? joined.p : "", joined.len);
        mf_buf_free(&joined);
        (void)vstart;
    }
    return rc;
}

static int on_headers_complete(http_parser *p)
{
    http_conn_t *hc = p->data;
    mf_conn_t *c = &hc->c;
    struct http_parser_url u;
    const hdr_t *expect;
    mf_buf_t uri = {0};
    const char *path = "/", *query = "";
    size_t plen = 1, qlen = 0;
    int why = 0, role = c->w->cfg.http_role ? c->w->cfg.http_role : MF_RESPONDER;
    mf_request_t *r;

    hc->head_since = 0;
    hc->keep_alive = (unsigned)http_should_keep_alive(p);
    hc->is_head = p->method == HTTP_HEAD;
    hc->minor1 = p->http_major == 1 && p->http_minor >= 1;
    c->requests++;
    if (p->method == HTTP_CONNECT || p->upgrade) {
        hc->err_status = 501;
        return -1;
    }
    http_parser_url_init(&u);
    if (http_parser_parse_url(hc->head.p, hc->url_len, 0, &u) != 0) {
        hc->err_status = 400;
        return -1;
    }
    if (u.field_set & (1 << UF_PATH)) {
        path = hc->head.p + u.field_data[UF_PATH].off;
        plen = u.field_data[UF_PATH].len;
    }
    if (u.field_set & (1 << UF_QUERY)) {
        query = hc->head.p + u.field_data[UF_QUERY].off;
        qlen = u.field_data[UF_QUERY].len;
    }
    if (normalize(path, plen, &uri) < 0) {
        mf_buf_free(&uri);
        hc->err_status = 400;
        return -1;
    }
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > c->w->cfg.max_body) {
        mf_buf_free(&uri);
        hc->err_status = 413;
        return -1;
    }
    if ((p->method == HTTP_GET || p->method == HTTP_HEAD) && serve_static(hc, &uri)) {
        mf_buf_free(&uri);
        hc->answered = 1;
        return 0;
    }
    if (!(r = mf_request_new(c, HTTP_ID, (uint16_t)role, &why))) {
        mf_buf_free(&uri);
        if (why == MF_UNKNOWN_ROLE)
            mf_log_warn("--http-role: the app has no handler for that role");
        hc->err_status = why == MF_UNKNOWN_ROLE ? 500 : 503;
        return -1;
    }
    hc->r = r;
    if (build_params(hc, uri.p, uri.len, query, qlen) < 0) {
        mf_buf_free(&uri);
        hc->err_status = 500;
        return -1;
    }
    mf_buf_free(&uri);
    /* The params are complete: the request goes to Lua, or is answered (431) at once. */
    mf_request_params(r, (const uint8_t *)hc->params.p, hc->params.len);
    if (hc->r) /* not answered at once (431): the params end here */
        mf_request_params(r, NULL, 0);
    mf_buf_reset(&hc->params, 16 * 1024);
    expect = find_header(hc, "Expect");
    if (hc->r && expect && hc->minor1 && expect->value_len == 12 &&
        strncasecmp(hvalue(hc, expect), "100-continue", 12) == 0 &&
        ((p->flags & F_CHUNKED) || p->content_length > 0)) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        mf_conn_add(c, cont, sizeof cont - 1);
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    http_conn_t *hc = p->data;

    hc->body_in += len;
    if (hc->body_in > hc->c.w->cfg.max_body) {
        hc->err_status = 413;
        return -1;
    }
    if (hc->r && hc->r->role != MF_AUTHORIZER)
        mf_request_input(hc->r, 0, (const uint8_t *)at, NULL, len);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    http_conn_t *hc = p->data;

    hc->msg_done = 1;
    if (hc->r) {
        if (hc->r->role != MF_AUTHORIZER)
            mf_request_input(hc->r, 0, NULL, NULL, 0);
        /* The next request waits until this one is answered: answers go out in order. */
        http_parser_pause(p, 1);
    }
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Input the parser refused: 400 (or the status a callback chose) and a close. */
static void parse_error(http_conn_t *hc, enum http_errno e)
{
    int status = hc->err_status ? hc->err_status : e == HPE_HEADER_OVERFLOW ? 431 : 400;

    hc->err_status = status;
    mf_log_debug("fd %d: HTTP input refused (%s); answering %d", hc->c.fd, http_errno_name(e),
                 status);
    hc->dead = 1;
    hc->keep_alive = 0;
    if (hc->answered) {
        /* The answer went out already: the rest of this message is only dropped. */
        mf_conn_close_when_done(&hc->c);
        return;
    }
    if (hc->r) {
        /* Its handler runs: it sees aborted(), and the answer is ours if it wrote none. */
        hc->aborted_by_us = 1;
        mf_request_abort(hc->r);
        return;
    }
    simple_answer(hc, status,
                  status == 431   ? "request head too large\n"
                  : status == 413 ? "request body too large\n"
                  : status == 501 ? "not implemented\n"
                  : status == 503 ? "server busy\n"
                  : status == 500 ? "internal error\n"
                                  : "bad request\n");
}

static void parse_input(http_conn_t *hc)
{
    mf_conn_t *c = &hc->c;

    if (hc->parsing)
        return;
    hc->parsing = 1;
    while (!mf_conn_closed(c) && !hc->dead && !(hc->r && hc->msg_done)) {
        struct evbuffer_iovec v;
        enum http_errno e;
        size_t n;

        if (evbuffer_peek(c->in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
            break;
        if (HTTP_PARSER_ERRNO(&hc->p) == HPE_PAUSED)
            http_parser_pause(&hc->p, 0);
        n = http_parser_execute(&hc->p, &settings, v.iov_base, v.iov_len);
        evbuffer_drain(c->in, n);
        e = HTTP_PARSER_ERRNO(&hc->p);
        if (e == HPE_PAUSED)
            continue;
        if (e != HPE_OK || n < v.iov_len) {
            parse_error(hc, e);
            break;
        }
    }
    hc->parsing = 0;
    if (hc->dead)
        evbuffer_drain(c->in, evbuffer_get_length(c->in));
    /* Read ahead a bounded amount while an answer is pending. */
    c->paused = hc->dead || (hc->r && hc->msg_done && evbuffer_get_length(c->in) >= PIPELINE_MAX);
    mf_conn_update_reading(c);
}

static ssize_t on_readable(mf_conn_t *c)
{
    http_conn_t *hc = (http_conn_t *)c;
    ssize_t n = read(c->fd, c->w->scratch, MF_SCRATCH);

    if (n <= 0 || hc->dead)
        return n;
    if (evbuffer_add(c->in, c->w->scratch, (size_t)n) < 0) {
        errno = ENOMEM;
        return -1;
    }
    parse_input(hc);
    return n;
}

static void tick(mf_conn_t *c, double now)
{
    http_conn_t *hc = (http_conn_t *)c;

    if (!hc->dead && !hc->r && hc->head_since > 0 &&
        now - hc->head_since > c->w->cfg.read_timeout) {
        mf_log_info("fd %d: request head incomplete after %.1f s; answering 408", c->fd,
                    c->w->cfg.read_timeout);
        simple_answer(hc, 408, "request head not received in time\n");
    }
}

static void on_free(mf_conn_t *c)
{
    http_conn_t *hc = (http_conn_t *)c;

    hc->r = NULL;
    mf_buf_free(&hc->head);
    mf_buf_free(&hc->params);
    mf_buf_free(&hc->cgi);
    mf_buf_free(&hc->resp);
    free(hc->hdrs);
    hc->hdrs = NULL;
    if (hc->held)
        evbuffer_free(hc->held);
    hc->held = NULL;
}

static void address(const struct sockaddr_storage *ss, char *host, size_t len, unsigned *port)
{
    host[0] = '\0';
    *port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &s->sin_addr, host, (socklen_t)len);
        *port = ntohs(s->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)ss;
        if (IN6_IS_ADDR_V4MAPPED(&s->sin6_addr))
            inet_ntop(AF_INET, &s->sin6_addr.s6_addr[12], host, (socklen_t)len);
        else
            inet_ntop(AF_INET6, &s->sin6_addr, host, (socklen_t)len);
        *port = ntohs(s->sin6_port);
    }
}

mf_conn_t *mf_http_conn_new(mf_worker_t *w, int fd)
{
    static int sized;
    mf_conn_t *c = mf_conn_new(w, fd, &mf_http_proto);
    http_conn_t *hc = (http_conn_t *)c;
    struct sockaddr_storage ss;
    socklen_t sl;

    if (!c)
        return NULL;
    if (!sized) {
        /* The head is bounded by --max-params (over_limit), not by the library's 80 KiB. */
        http_parser_set_max_header_size(0x7fffffff);
        sized = 1;
    }
    if (!(hc->held = evbuffer_new())) {
        mf_conn_close(c);
        return NULL;
    }
    http_parser_init(&hc->p, HTTP_REQUEST);
    hc->p.data = hc;
    sl = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
        address(&ss, hc->remote_addr, sizeof hc->remote_addr, &hc->remote_port);
    sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        address(&ss, hc->server_addr, sizeof hc->server_addr, &hc->server_port);
    return c;
}

const mf_proto_t mf_http_proto = {
    .name = "http",
    .conn_size = sizeof(http_conn_t),
    .read = on_readable,
    .output = output,
    .commit = on_commit,
    .end = end,
    .tick = tick,
    .free = on_free,
};
