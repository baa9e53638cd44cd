/*
 * mf-upstream: a slow upstream for the upstream-wait workload.
 *
 * Every line a client sends is answered with "ok\n" after a fixed delay (--delay-ms), on the
 * same connection, in order. A connection may carry any number of lines (pooled connections
 * send one after another), and any number of connections may wait at once: what the
 * workload measures is how a server holds thousands of requests that each wait on their own
 * upstream socket, not how fast this one answers.
 *
 * One libevent loop; a connection's pending answers are counted, and their deadlines are
 * the times their lines arrived plus the delay, so one timer a connection serves them all.
 */
#include "netaddr.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#define MAX_PENDING 64 /* lines a connection may have in flight; past it, it is closed */
#define READ_MAX    4096

struct conn {
    int fd;
    struct event *rev, *timer;
    struct evbuffer *out;
    struct timeval due[MAX_PENDING]; /* deadlines of the lines still to answer, oldest first */
    unsigned head, npending;
    struct conn *prev, *next;
};

static struct event_base *base;
static struct timeval delay;
static struct conn *conns;
static unsigned long long answered;

static void conn_free(struct conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    event_free(c->rev);
    event_free(c->timer);
    evbuffer_free(c->out);
    close(c->fd);
    free(c);
}

/* Writes what is queued; a client that stops reading is closed rather than buffered for. */
static int flush_out(struct conn *c)
{
    while (evbuffer_get_length(c->out) > 0) {
        int n = evbuffer_write(c->out, c->fd);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return evbuffer_get_length(c->out) > 65536 ? -1 : 0;
        if (n <= 0)
            return -1;
    }
    return 0;
}

static void arm(struct conn *c)
{
    struct timeval now, left;

    if (c->npending == 0)
        return;
    event_base_gettimeofday_cached(base, &now);
    if (timercmp(&c->due[c->head], &now, <=))
        timerclear(&left);
    else
        timersub(&c->due[c->head], &now, &left);
    evtimer_add(c->timer, &left);
}

static void on_due(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    struct timeval now;

    (void)fd;
    (void)what;
    event_base_gettimeofday_cached(base, &now);
    while (c->npending > 0 && timercmp(&c->due[c->head], &now, <=)) {
        evbuffer_add(c->out, "ok\n", 3);
        c->head = (c->head + 1) % MAX_PENDING;
        c->npending--;
        answered++;
    }
    if (flush_out(c) < 0) {
        conn_free(c);
        return;
    }
    arm(c);
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    char buf[READ_MAX];
    struct timeval now;
    ssize_t n;

    (void)what;
    n = read(fd, buf, sizeof buf);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        conn_free(c);
        return;
    }
    event_base_gettimeofday_cached(base, &now);
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] != '\n')
            continue;
        if (c->npending == MAX_PENDING) {
            conn_free(c);
            return;
        }
        timeradd(&now, &delay, &c->due[(c->head + c->npending) % MAX_PENDING]);
        if (c->npending++ == 0)
            arm(c);
    }
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    (void)what;
    (void)arg;
    for (int i = 0; i < 64; i++) {
        int fd = accept(lfd, NULL, NULL);
        struct conn *c;

        if (fd < 0)
            return;
        evutil_make_socket_nonblocking(fd);
        if (!(c = calloc(1, sizeof *c))) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->rev = event_new(base, fd, EV_READ | EV_PERSIST, on_read, c);
        c->timer = evtimer_new(base, on_due, c);
        c->out = evbuffer_new();
        if (!c->rev || !c->timer || !c->out) {
            if (c->rev)
                event_free(c->rev);
            if (c->timer)
                event_free(c->timer);
            if (c->out)
                evbuffer_free(c->out);
            close(fd);
            free(c);
            continue;
        }
        c->next = conns;
        if (conns)
            conns->prev = c;
        conns = c;
        event_add(c->rev, NULL);
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    (void)arg;
    event_base_loopbreak(base);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: mf-upstream --listen ADDR [--delay-ms N]\n"
               "  answers every line it reads with \"ok\\n\" after N ms (default 50)\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {{"listen", required_argument, NULL, 'l'},
                                             {"delay-ms", required_argument, NULL, 'd'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    const char *listen_spec = NULL;
    long delay_ms = 50;
    mf_netaddr_t addr;
    char err[256];
    struct event *lev, *sigterm, *sigint;
    int opt, lfd;

    while ((opt = getopt_long(argc, argv, "l:d:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'l': listen_spec = optarg; break;
        case 'd': delay_ms = strtol(optarg, NULL, 10); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!listen_spec || delay_ms < 0 || delay_ms > 60000) {
        usage(stderr);
        return 2;
    }
    if (mf_netaddr_parse(listen_spec, &addr, err, sizeof err) < 0) {
        fprintf(stderr, "mf-upstream: %s\n", err);
        return 2;
    }
    if ((lfd = mf_netaddr_listen(&addr, 65535)) < 0) {
        fprintf(stderr, "mf-upstream: cannot listen on %s: %s\n", listen_spec, strerror(errno));
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    delay.tv_sec = delay_ms / 1000;
    delay.tv_usec = (delay_ms % 1000) * 1000;
    base = event_base_new();
    lev = event_new(base, lfd, EV_READ | EV_PERSIST, on_accept, NULL);
    sigterm = evsignal_new(base, SIGTERM, on_signal, NULL);
    sigint = evsignal_new(base, SIGINT, on_signal, NULL);
    if (!base || !lev || !sigterm || !sigint)
        return 1;
    event_add(lev, NULL);
    event_add(sigterm, NULL);
    event_add(sigint, NULL);
    event_base_dispatch(base);
    while (conns)
        conn_free(conns);
    event_free(lev);
    event_free(sigterm);
    event_free(sigint);
    event_base_free(base);
    close(lfd);
    fprintf(stderr, "mf-upstream: %llu answers\n", answered);
    return 0;
}
