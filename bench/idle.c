/*
 * mf-idle: holds many kept FastCGI connections open and idle, for the memory benchmark.
 *
 * Each connection is opened, carries one small responder request with FCGI_KEEP_CONN set
 * (so that the server has really accepted it and built whatever a used connection costs),
 * reads that request's answer up to its END_REQUEST, and then sends nothing more. Once every
 * connection is idle, mf-idle prints "IDLE n=N" and holds them for --hold seconds while a
 * script measures the server's memory; a connection the server closes meanwhile counts as
 * dropped. The last line is machine-readable:
 *
 *     RESULT idle=10000 dropped=0 failed=0 open_s=0.84
 *
 * Like mf-bench it shares no code with src/: only wire.h and netaddr.c.
 */
#include "netaddr.h"
#include "wire.h"

#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 200000
#define REQ_MAX   512

enum conn_state { C_NEW, C_CONNECTING, C_WAITING, C_IDLE, C_DEAD };

struct conn {
    int fd;
    enum conn_state state;
    uint8_t hdr[MF_WIRE_HEADER_LEN];
    size_t hdr_len;
    size_t skip; /* content and padding of the current record still to discard */
    bool ending; /* the record being skipped is the END_REQUEST */
};

static struct {
    const char *addr_spec;
    mf_netaddr_t addr;
    int conns;
    int batch;
    double hold;
    double timeout;
} opt = {.conns = 10000, .batch = 256, .hold = 2.0, .timeout = 30.0};

static uint8_t request[REQ_MAX];
static size_t request_len;

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(FILE *f)
{
    fputs("usage: mf-idle --connect ADDR [-c CONNS] [--hold S] [--batch B] [--timeout S]\n"
          "  --connect ADDR   host:port, [v6]:port or unix:/path\n"
          "  -c, --conns N    connections to open and keep idle (default 10000)\n"
          "  --hold S         seconds to hold them once all are idle (default 2)\n"
          "  --batch B        connections being opened at once (default 256)\n"
          "  --timeout S      give up if they are not all idle after S seconds (default 30)\n"
          "Prints \"IDLE n=N\" once all are idle, then a last line\n"
          "RESULT idle=.. dropped=.. failed=.. open_s=..\n"
          "Exit status: 0 when all were idle and none was dropped, 1 otherwise, 2 on bad usage.\n",
          f);
}

static void die(const char *msg)
{
    fprintf(stderr, "mf-idle: %s\n", msg);
    exit(2);
}

static double parse_real(const char *s, const char *what, double lo, double hi)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "mf-idle: bad %s '%s'\n", what, s);
        exit(2);
    }
    return v;
}

static void parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"connect", required_argument, NULL, 'a'},
        {"conns", required_argument, NULL, 'c'},
        {"hold", required_argument, NULL, 'H'},
        {"batch", required_argument, NULL, 'b'},
        {"timeout", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    char err[160];
    int ch;

    while ((ch = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'a':
            if (mf_netaddr_parse(optarg, &opt.addr, err, sizeof(err)) < 0) {
                fprintf(stderr, "mf-idle: --connect: %s\n", err);
                exit(2);
            }
            opt.addr_spec = optarg;
            break;
        case 'c': opt.conns = (int)parse_real(optarg, "--conns", 1, MAX_CONNS); break;
        case 'H': opt.hold = parse_real(optarg, "--hold", 0, 3600); break;
        case 'b': opt.batch = (int)parse_real(optarg, "--batch", 1, MAX_CONNS); break;
        case 'T': opt.timeout = parse_real(optarg, "--timeout", 0.1, 3600); break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind != argc || opt.addr_spec == NULL) {
        usage(stderr);
        exit(2);
    }
}

static uint8_t *put_nv(uint8_t *p, const char *name, const char *value)
{
    return p + mf_wire_nv_encode(p, name, strlen(name), value, strlen(value));
}

/* One GET with the few params a responder needs, as one buffer: BEGIN, PARAMS, STDIN. */
static void encode_request(void)
{
    uint8_t params[256], *p = params, *r = request;
    size_t plen;
    uint8_t pad;

    p = put_nv(p, "REQUEST_METHOD", "GET");
    p = put_nv(p, "REQUEST_URI", "/");
    p = put_nv(p, "SCRIPT_NAME", "/");
    p = put_nv(p, "QUERY_STRING", "");
    p = put_nv(p, "SERVER_PROTOCOL", "HTTP/1.1");
    plen = (size_t)(p - params);
    pad = mf_wire_padding(plen);

    /* [FastCGI 1.0, section 5.1] FCGI_BeginRequestBody: role, flags, 5 reserved bytes. */
    mf_wire_header(r, MF_WIRE_BEGIN_REQUEST, 1, 8, 0);
    r += MF_WIRE_HEADER_LEN;
    memset(r, 0, 8);
    r[1] = MF_WIRE_RESPONDER;
    r[2] = MF_WIRE_KEEP_CONN;
    r += 8;
    mf_wire_header(r, MF_WIRE_PARAMS, 1, (uint16_t)plen, pad);
    r += MF_WIRE_HEADER_LEN;
    memcpy(r, params, plen);
    memset(r + plen, 0, pad);
    r += plen + pad;
    mf_wire_header(r, MF_WIRE_PARAMS, 1, 0, 0);
    r += MF_WIRE_HEADER_LEN;
    mf_wire_header(r, MF_WIRE_STDIN, 1, 0, 0);
    r += MF_WIRE_HEADER_LEN;
    request_len = (size_t)(r - request);
}

/* Raises the soft descriptor limit to the hard one: a script may not have done it. */
static void raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int start_connect(int ep, struct conn *c)
{
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    int one = 1;

    c->fd = socket(opt.addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    if (mf_netaddr_is_inet(&opt.addr))
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (struct sockaddr *)&opt.addr.ss, opt.addr.len) < 0 && errno != EINPROGRESS) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    c->state = C_CONNECTING;
    return 0;
}

/* The connect finished: send the request whole (it is far smaller than any socket buffer). */
static int on_connected(int ep, struct conn *c)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
    int err = 0;
    socklen_t len = sizeof(err);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0)
        return -1;
    if (write(c->fd, request, request_len) != (ssize_t)request_len)
        return -1;
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        return -1;
    c->state = C_WAITING;
    return 0;
}

/*
 * Reads what the server sent and walks the record headers [section 3.3]. Returns 1 once the
 * END_REQUEST is through, 0 to wait for more, -1 when the connection is gone.
 */
static int on_readable(struct conn *c)
{
    uint8_t buf[16384];

    for (;;) {
        ssize_t n = read(c->fd, buf, sizeof(buf));
        size_t i = 0;

        if (n == 0)
            return -1;
        if (n < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        while (i < (size_t)n) {
            if (c->skip > 0) {
                size_t take = (size_t)n - i < c->skip ? (size_t)n - i : c->skip;

                c->skip -= take;
                i += take;
                if (c->skip == 0 && c->ending)
                    return 1;
                continue;
            }
            c->hdr[c->hdr_len++] = buf[i++];
            if (c->hdr_len < MF_WIRE_HEADER_LEN)
                continue;
            c->hdr_len = 0;
            if (c->hdr[0] != MF_WIRE_VERSION)
                return -1;
            c->skip = ((size_t)c->hdr[4] << 8 | c->hdr[5]) + c->hdr[6];
            c->ending = c->hdr[1] == MF_WIRE_END_REQUEST;
            if (c->skip == 0 && c->ending)
                return 1;
        }
    }
}

int main(int argc, char **argv)
{
    struct epoll_event evs[512];
    struct conn *conns;
    int ep, next = 0, pending = 0, idle = 0, failed = 0, dropped = 0;
    double start, deadline, open_s = 0, hold_end = 0;
    bool holding = false;

    parse_args(argc, argv);
    raise_nofile();
    encode_request();
    conns = calloc((size_t)opt.conns, sizeof(*conns));
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (conns == NULL || ep < 0)
        die("out of memory or descriptors");
    for (int i = 0; i < opt.conns; i++)
        conns[i].fd = -1;

    start = now_s();
    deadline = start + opt.timeout;
    for (;;) {
        double t;
        int n;

        /* Keep at most --batch connections in their opening phase: a burst of thousands of
         * SYNs overflows the server's accept queue and costs a 1 s SYN retransmission. */
        while (!holding && pending < opt.batch && next < opt.conns) {
            if (start_connect(ep, &conns[next]) < 0) {
                conns[next].state = C_DEAD;
                failed++;
            } else {
                pending++;
            }
            next++;
        }
        if (!holding && next == opt.conns && pending == 0) {
            open_s = now_s() - start;
            holding = true;
            hold_end = now_s() + opt.hold;
            printf("IDLE n=%d\n", idle);
            fflush(stdout);
        }
        t = now_s();
        if (holding && t >= hold_end)
            break;
        if (!holding && t >= deadline) {
            fprintf(stderr, "mf-idle: %d of %d connections not idle after %.1f s\n",
                    opt.conns - idle - failed, opt.conns, opt.timeout);
            failed = opt.conns - idle;
            break;
        }
        n = epoll_wait(ep, evs, 512, 50);
        for (int k = 0; k < n; k++) {
            struct conn *c = evs[k].data.ptr;
            int rc = 0;

            if (c->state == C_CONNECTING) {
                rc = on_connected(ep, c) < 0 ? -1 : 0;
            } else if (c->state == C_WAITING) {
                rc = on_readable(c);
            } else if (c->state == C_IDLE) {
                /* An idle connection the server closes (or writes to) is dropped. */
                rc = -1;
            }
            if (rc == 1) {
                c->state = C_IDLE;
                idle++;
                pending--;
            } else if (rc < 0) {
                if (c->state == C_IDLE) {
                    idle--;
                    dropped++;
                } else {
                    pending--;
                    failed++;
                }
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
                c->state = C_DEAD;
            }
        }
    }
    printf("RESULT idle=%d dropped=%d failed=%d open_s=%.2f\n", idle, dropped, failed, open_s);
    fflush(stdout);
    /* Exiting closes every descriptor at once. */
    return idle == opt.conns && dropped == 0 ? 0 : 1;
}
