/*
 * Unit tests of src/socket.c on a worker's event base, without Lua: the polling contract
 * (MF_SOCK_WAIT, then a MF_EV_WAKE_TOKEN event, then the call again), the read modes against a
 * socketpair-like TCP peer of the test's own, the buffer limit, a refused connect, timeouts,
 * parking in the pool, and a worker freed while sockets are open and parked (ASan: no leak
 * once Lua's part, mf_ffi_sock_free, ran).
 */
#include "config.h"
#include "socket.h"
#include "worker.h"
#include "unit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static mf_worker_t *w;
static int listen_fd = -1, port;

static void setup(void)
{
    mf_config_t cfg;
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;

    mf_config_defaults(&cfg);
    cfg.socket_buffer = 4096;
    w = mf_worker_new(&cfg, 1);
    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(listen_fd, (struct sockaddr *)&sa, sizeof sa);
    listen(listen_fd, 16);
    getsockname(listen_fd, (struct sockaddr *)&sa, &len);
    port = ntohs(sa.sin_port);
}

static void teardown(void)
{
    mf_worker_free(w);
    close(listen_fd);
}

/* Runs one turn of the loop; returns 1 if a wake-up for token came. */
static int turn(uint64_t token, int ms)
{
    mf_event_t *ev;
    int n = mf_ffi_worker_poll(w, ms, &ev), hit = 0;

    for (int i = 0; i < n; i++)
        if (ev[i].type == MF_EV_WAKE_TOKEN && ev[i].token == token)
            hit = 1;
    return hit;
}

/* A connected socket and the peer's end of it. */
static mf_sock_t *connected(uint64_t token, int *peer)
{
    mf_sock_t *s = mf_ffi_sock_new(w, MF_SOCK_TCP, token);
    int rc = mf_ffi_sock_connect(s, "127.0.0.1", port, 1);

    for (int i = 0; i < 100 && rc == MF_SOCK_WAIT; i++) {
        turn(token, 10);
        rc = mf_ffi_sock_connecting(s);
    }
    CHECK_EQ(rc, MF_SOCK_OK);
    *peer = accept(listen_fd, NULL, NULL);
    CHECK(*peer >= 0);
    return s;
}

static int receive(mf_sock_t *s, int mode, size_t size, const char **p, size_t *len)
{
    int rc = mf_ffi_sock_receive(s, mode, size, 1, p, len);

    for (int i = 0; i < 200 && rc == MF_SOCK_WAIT; i++) {
        turn(7, 10);
        rc = mf_ffi_sock_receive(s, mode, size, 1, p, len);
    }
    return rc;
}

static void read_modes(void)
{
    int peer;
    mf_sock_t *s;
    const char *p;
    size_t len;

    setup();
    s = connected(7, &peer);
    /* Nothing there yet: the call waits, and the data's arrival wakes the token. */
    CHECK_EQ(mf_ffi_sock_receive(s, MF_SOCK_READ_LINE, 0, 1, &p, &len), MF_SOCK_WAIT);
    CHECK(write(peer, "a\r\nbc", 5) == 5);
    CHECK_EQ(turn(7, 500), 1);
    CHECK_EQ(mf_ffi_sock_receive(s, MF_SOCK_READ_LINE, 0, 1, &p, &len), MF_SOCK_OK);
    CHECK(len == 1 && memcmp(p, "a", 1) == 0);
    CHECK_EQ(receive(s, MF_SOCK_READ_ANY, 10, &p, &len), MF_SOCK_OK);
    CHECK(len == 2 && memcmp(p, "bc", 2) == 0);
    CHECK(write(peer, "0123456789", 10) == 10);
    CHECK_EQ(receive(s, MF_SOCK_READ_SIZE, 4, &p, &len), MF_SOCK_OK);
    CHECK(len == 4 && memcmp(p, "0123", 4) == 0);
    close(peer);
    CHECK_EQ(receive(s, MF_SOCK_READ_ALL, 0, &p, &len), MF_SOCK_OK);
    CHECK(len == 6 && memcmp(p, "456789", 6) == 0);
    /* *a at EOF closed the socket. */
    CHECK_EQ(mf_ffi_sock_is_open(s), 0);
    CHECK_EQ(mf_ffi_sock_receive(s, MF_SOCK_READ_LINE, 0, 1, &p, &len), MF_SOCK_CLOSED);
    mf_ffi_sock_free(s);
    teardown();
}

static void until_and_limit(void)
{
    int peer, found;
    mf_sock_t *s;
    const char *p;
    size_t len;
    char big[8192];

    setup();
    s = connected(7, &peer);
    CHECK(write(peer, "ab--", 4) == 4);
    int rc = mf_ffi_sock_receive_until(s, "--x", 3, 0, 0, 1, &p, &len, &found);
    for (int i = 0; i < 20 && rc == MF_SOCK_WAIT; i++) {
        turn(7, 10);
        if (i == 2)
            CHECK(write(peer, "xtail", 5) == 5);
        rc = mf_ffi_sock_receive_until(s, "--x", 3, 0, 0, 1, &p, &len, &found);
    }
    CHECK_EQ(rc, MF_SOCK_OK);
    CHECK(found == 1 && len == 2 && memcmp(p, "ab", 2) == 0);
    /* A line longer than --socket-buffer (4096 here): buffer too large, and closed. */
    memset(big, 'x', sizeof big);
    CHECK(write(peer, big, sizeof big) == (ssize_t)sizeof big);
    CHECK_EQ(receive(s, MF_SOCK_READ_LINE, 0, &p, &len), MF_SOCK_TOO_LARGE);
    CHECK(strcmp(mf_ffi_sock_errmsg(s), "buffer too large") == 0);
    CHECK_EQ(mf_ffi_sock_is_open(s), 0);
    close(peer);
    mf_ffi_sock_free(s);
    teardown();
}

static void refused_and_timeout(void)
{
    mf_sock_t *s;
    int peer, rc;
    const char *p;
    size_t len;
    struct sockaddr_in sa;
    socklen_t salen = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    setup();
    /* A port nobody listens on. */
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&sa, sizeof sa);
    getsockname(fd, (struct sockaddr *)&sa, &salen);
    close(fd);
    s = mf_ffi_sock_new(w, MF_SOCK_TCP, 9);
    rc = mf_ffi_sock_connect(s, "127.0.0.1", ntohs(sa.sin_port), 1);
    for (int i = 0; i < 100 && rc == MF_SOCK_WAIT; i++) {
        turn(9, 10);
        rc = mf_ffi_sock_connecting(s);
    }
    CHECK_EQ(rc, MF_SOCK_ERROR);
    CHECK(strcmp(mf_ffi_sock_errmsg(s), "connection refused") == 0);
    mf_ffi_sock_free(s);
    /* A read timeout is not fatal. */
    s = connected(7, &peer);
    rc = mf_ffi_sock_receive(s, MF_SOCK_READ_LINE, 0, 0.05, &p, &len);
    for (int i = 0; i < 100 && rc == MF_SOCK_WAIT; i++) {
        turn(7, 20);
        rc = mf_ffi_sock_receive(s, MF_SOCK_READ_LINE, 0, 0.05, &p, &len);
    }
    CHECK_EQ(rc, MF_SOCK_TIMEOUT);
    CHECK_EQ(mf_ffi_sock_is_open(s), 1);
    close(peer);
    mf_ffi_sock_free(s);
    teardown();
}

static void parked_and_freed_worker(void)
{
    int p1, p2;
    mf_sock_t *a, *b;

    setup();
    a = connected(7, &p1);
    b = connected(8, &p2);
    CHECK_EQ(mf_ffi_sock_keepalive_check(a), 0);
    CHECK_EQ(mf_ffi_sock_park(a, 0), MF_SOCK_OK);
    CHECK_EQ(mf_ffi_sock_count(w), 2);
    /* The peer of a parked connection speaks: the connection closes on its own. */
    CHECK(write(p1, "x", 1) == 1);
    for (int i = 0; i < 50 && mf_ffi_sock_is_open(a); i++)
        turn(0, 10);
    CHECK_EQ(mf_ffi_sock_is_open(a), 0);
    CHECK_EQ(mf_ffi_sock_unpark(a), MF_SOCK_CLOSED);
    CHECK_EQ(mf_ffi_sock_count(w), 1);
    /* The worker goes while b is open: its fd closes, the memory waits for its owner. */
    teardown();
    CHECK_EQ(mf_ffi_sock_is_open(b), 0);
    mf_ffi_sock_free(a);
    mf_ffi_sock_free(b);
    close(p1);
    close(p2);
}

int main(void)
{
    static const struct unit_test tests[] = {
        {"read_modes", read_modes},
        {"until_and_limit", until_and_limit},
        {"refused_and_timeout", refused_and_timeout},
        {"parked_and_freed_worker", parked_and_freed_worker},
        {NULL, NULL},
    };
    return unit_run(tests);
}
