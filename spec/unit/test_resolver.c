/*
 * Unit tests of src/resolver.c: look-ups on a worker's event base against a tiny DNS server
 * of the test's own (a UDP socket on the same base that answers from a table, counts the
 * questions, and stays silent or fails on purpose), the hosts file, the TTL cache,
 * --resolver-valid, --resolver-ipv6 off, the error texts, cancelling from inside a callback,
 * and freeing a worker with look-ups in flight (run under ASan, leaks included).
 */
#include "config.h"
#include "log.h"
#include "resolver.h"
#include "worker.h"
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

/* The test's DNS server ------------------------------------------------------------------- */

enum { T_A = 1, T_AAAA = 28 };

struct record {
    const char *name;
    int rcode;        /* 0, 3 (NXDOMAIN), 5 (REFUSED); -1: never answer */
    const char *a;    /* or NULL: no A record */
    const char *aaaa; /* or NULL */
    unsigned ttl;
};

static const struct record records[] = {
    {"a.test", 0, "10.0.0.1", "fd00::1", 60}, {"short.test", 0, "10.0.0.2", NULL, 1},
    {"v4.test", 0, "10.0.0.3", NULL, 60},     {"shared.test", 0, "10.0.0.4", NULL, 60},
    {"missing.test", 3, NULL, NULL, 0},       {"refused.test", 5, NULL, NULL, 0},
    {"silent.test", -1, NULL, NULL, 0},       {NULL, 0, NULL, NULL, 0},
};

static int dns_fd = -1, dns_port;
static struct event *dns_ev;
static int asked[16][2]; /* per record: A and AAAA questions received */

static const struct record *find_record(const char *name, int *index)
{
    for (int i = 0; records[i].name; i++)
        if (strcasecmp(records[i].name, name) == 0) {
            *index = i;
            return &records[i];
        }
    return NULL;
}

static void put16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static void on_query(evutil_socket_t fd, short what, void *arg)
{
    unsigned char q[512], out[512];
    struct sockaddr_storage from;
    socklen_t fromlen = sizeof from;
    char name[256];
    size_t nlen = 0, i = 12, outlen;
    ssize_t n;
    int qtype, idx = 0, rcode, count = 0;
    const struct record *rec;

    (void)what;
    (void)arg;
    n = recvfrom(fd, q, sizeof q, 0, (struct sockaddr *)&from, &fromlen);
    if (n < 17)
        return;
    while (i < (size_t)n && q[i] != 0 && nlen + q[i] + 1 < sizeof name) {
        if (nlen)
            name[nlen++] = '.';
        memcpy(name + nlen, q + i + 1, q[i]);
        nlen += q[i];
        i += 1 + (size_t)q[i];
    }
    name[nlen] = '\0';
    i++; /* the root label */
    if (i + 4 > (size_t)n)
        return;
    qtype = q[i] << 8 | q[i + 1];
    i += 4;
    rec = find_record(name, &idx);
    if (rec && (qtype == T_A || qtype == T_AAAA))
        asked[idx][qtype == T_AAAA]++;
    if (rec && rec->rcode < 0)
        return;
    rcode = rec ? rec->rcode : 3;
    /* The question as it came (evdns randomises its case and checks the echo). */
    memcpy(out, q, i);
    outlen = i;
    if (rec && rcode == 0) {
        const char *addr = qtype == T_A ? rec->a : qtype == T_AAAA ? rec->aaaa : NULL;
        if (addr) {
            unsigned char *p = out + outlen;
            int len = qtype == T_A ? 4 : 16;
            put16(p, 0xc00c); /* the name: a pointer to the question's */
            put16(p + 2, (unsigned)qtype);
            put16(p + 4, 1);
            put16(p + 6, rec->ttl >> 16);
            put16(p + 8, rec->ttl & 0xffff);
            put16(p + 10, (unsigned)len);
            inet_pton(qtype == T_A ? AF_INET : AF_INET6, addr, p + 12);
            outlen += 12 + (size_t)len;
            count = 1;
        }
    }
    put16(out + 2, 0x8180 | (unsigned)rcode);
    put16(out + 4, 1);
    put16(out + 6, (unsigned)count);
    put16(out + 8, 0);
    put16(out + 10, 0);
    sendto(fd, out, outlen, 0, (struct sockaddr *)&from, fromlen);
}

/* The worker under test ---------------------------------------------------------------------- */

static mf_worker_t *W;
static char resolver_addr[64];
static char hosts_path[64] = "/tmp/mf-test-hosts.XXXXXX";

static void start(double timeout, double valid, int ipv6, int no_server)
{
    mf_config_t cfg;
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;

    mf_config_defaults(&cfg);
    cfg.resolver_timeout = timeout;
    cfg.resolver_valid = valid;
    cfg.resolver_ipv6 = ipv6;
    cfg.hosts_file = hosts_path;
    if (no_server)
        cfg.resolv_conf = "/nonexistent/resolv.conf";
    W = mf_worker_new(&cfg, 1);
    if (!W)
        abort();
    memset(asked, 0, sizeof asked);
    dns_fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (dns_fd < 0 || bind(dns_fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        getsockname(dns_fd, (struct sockaddr *)&sa, &len) < 0)
        abort();
    dns_port = ntohs(sa.sin_port);
    snprintf(resolver_addr, sizeof resolver_addr, "127.0.0.1:%d", dns_port);
    if (!no_server)
        W->cfg.resolver = resolver_addr;
    dns_ev = event_new(W->base, dns_fd, EV_READ | EV_PERSIST, on_query, NULL);
    event_add(dns_ev, NULL);
}

static void stop(void)
{
    event_free(dns_ev);
    close(dns_fd);
    mf_worker_free(W);
    W = NULL;
}

static double now(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* Runs the loop until *flag is set or `seconds` pass, in turns of at most 10 ms. */
static void run_until(const int *flag, double seconds)
{
    double end = now() + seconds;
    struct timeval tv = {0, 10000};
    struct event *wake = evtimer_new(W->base, on_wake, NULL);

    while (!*flag && now() < end) {
        mf__worker_new_turn(W);
        evtimer_add(wake, &tv);
        event_base_loop(W->base, EVLOOP_ONCE);
        evtimer_del(wake);
    }
    event_free(wake);
}

static void run_for(double seconds)
{
    int never = 0;

    run_until(&never, seconds);
}

/* What one look-up's callback saw. */
struct seen {
    int calls;
    int err;
    int naddrs;
    int v4, v6;
    char first[64];
    char errmsg[400];
    mf_resolve_t *cancel; /* cancelled from inside this callback */
    int *cancel_flag;     /* set to 1 when it cancels */
};

static void on_resolved(int err, const struct sockaddr_storage *addrs, int naddrs,
                        const char *errmsg, void *arg)
{
    struct seen *s = arg;

    s->calls++;
    s->err = err;
    s->naddrs = naddrs;
    if (err) {
        snprintf(s->errmsg, sizeof s->errmsg, "%s", errmsg);
    } else {
        for (int i = 0; i < naddrs; i++) {
            char buf[64];
            if (addrs[i].ss_family == AF_INET) {
                s->v4++;
                inet_ntop(AF_INET, &((const struct sockaddr_in *)&addrs[i])->sin_addr, buf,
                          sizeof buf);
            } else {
                s->v6++;
                inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&addrs[i])->sin6_addr, buf,
                          sizeof buf);
            }
            if (i == 0 || (addrs[i].ss_family == AF_INET && s->v4 == 1))
                snprintf(s->first, sizeof s->first, "%s", buf);
        }
    }
    if (s->cancel) {
        mf_resolver_cancel(s->cancel);
        s->cancel = NULL;
        if (s->cancel_flag)
            *s->cancel_flag = 1;
    }
}

static mf_resolve_t *lookup(const char *name, struct seen *s)
{
    const char *errmsg = NULL;
    mf_resolve_t *q;

    memset(s, 0, sizeof *s);
    q = mf_resolver_lookup(W, name, on_resolved, s, &errmsg);
    CHECK(q != NULL);
    /* Never inside the call. */
    CHECK_EQ(s->calls, 0);
    return q;
}

static int idx_of(const char *name)
{
    int i = -1;

    find_record(name, &i);
    return i;
}

/* The tests ------------------------------------------------------------------------------------ */

static void test_a_and_aaaa(void)
{
    struct seen s;

    start(5, 0, 1, 0);
    lookup("a.test", &s);
    run_until(&s.calls, 5);
    CHECK_EQ(s.calls, 1);
    CHECK_EQ(s.err, 0);
    CHECK_EQ(s.naddrs, 2);
    CHECK_EQ(s.v4, 1);
    CHECK_EQ(s.v6, 1);
    CHECK(strcmp(s.first, "10.0.0.1") == 0);
    CHECK_EQ(asked[idx_of("a.test")][0], 1);
    CHECK_EQ(asked[idx_of("a.test")][1], 1);
    /* Upper case and a final dot are the same name. */
    lookup("A.Test.", &s);
    run_until(&s.calls, 5);
    CHECK_EQ(s.naddrs, 2);
    stop();
}

static void test_cache_hit(void)
{
    struct seen s;

    start(5, 0, 1, 0);
    lookup("a.test", &s);
    run_until(&s.calls, 5);
    CHECK_EQ(mf_resolver_cached(W), 1u);
    lookup("a.test", &s);
    run_until(&s.calls, 5);
    CHECK_EQ(s.calls, 1);
    CHECK_EQ(s.naddrs, 2);
    /* Answered from the cache: no second question reached the server. */
    CHECK_EQ(asked[idx_of("a.test")][0], 1);
    stop();
}

static void test_ttl_expiry(void)
{
    struct seen s;
    int i = idx_of("short.test");

    start(5, 0, 1, 0);
    lookup("short.test", &s);
    run_until(&s.calls, 5);
    CHECK_EQ(s.naddrs, 1); /* A only: its AAAA is empty */
    CHECK_EQ(asked[i][0], 1);
    lookup("short.test", &s);
    run_until(&s.calls, 5);
    CHECK_EQ(asked[i][0], 1); /* within the TTL of 1 s */
    run_for(1.1);
    lookup("short.test", &s);
    run_until(&s.calls, 5);
    CHECK_EQ(s.err, 0);
    CHECK_EQ(asked[i][0], 2); /* past it: asked again */
    stop();
}

static void test_valid_caps_ttl(void)
{
    struct seen s;
    int i = idx_of("v4.test");

    start(5, 0.3, 1, 0);
    lookup("v4.test", &s);
    run_until(&s.calls, 5);
    CHECK_EQ(asked[i][0], 1);
    run_for(0.4);
    lookup("v4.test", &s);
    run_until(&s.calls, 5);
    CHECK_EQ(s.err, 0);
    CHECK_EQ(asked[i][0], 2); /* TTL 60, but --resolver-valid 0.3 */
    stop();
}

static void test_ipv6_off(void)
{
    struct seen s;
    int i = idx_of("a.test");

    start(5, 0, 0, 0);
    lookup("a.test", &s);
    run_until(&s.calls, 5);
    CHECK_EQ(s.naddrs, 1);
    CHECK_EQ(s.v4, 1);
    CHECK_EQ(asked[i][0], 1);
    CHECK_EQ(asked[i][1], 0);
    stop();
}

static void test_not_found(void)
{
    struct seen s;

    start(5, 0, 1, 0);
    lookup("missing.test", &s);
    run_until(&s.calls, 5);
    CHECK_EQ(s.err, 3);
    CHECK(strcmp(s.errmsg, "missing.test could not be resolved (3: Host not found)") == 0);
    /* Not cached: asked again. */
    lookup("missing.test", &s);
    run_until(&s.calls, 5);
    CHECK_EQ(asked[idx_of("missing.test")][0], 2);
    stop();
}

/* (A SERVFAIL is not an error of its own: evdns retries it like a time-out.) */
static void test_refused(void)
{
    struct seen s;

    start(5, 0, 1, 0);
    lookup("refused.test", &s);
    run_until(&s.calls, 5);
    CHECK_EQ(s.err, 5);
    CHECK(strcmp(s.errmsg, "refused.test could not be resolved (5: Operation refused)") == 0);
    stop();
}

static void test_timeout(void)
{
    struct seen s;
    double t0;

    start(0.5, 0, 1, 0);
    t0 = now();
    lookup("silent.test", &s);
    run_until(&s.calls, 10);
    CHECK_EQ(s.calls, 1);
    CHECK_EQ(s.err, 110);
    CHECK(strcmp(s.errmsg, "silent.test could not be resolved (110: Operation timed out)") == 0);
    CHECK(now() - t0 >= 0.4);
    /* The server did get the question (more than once: evdns retries within the time). */
    CHECK(asked[idx_of("silent.test")][0] >= 1);
    /* Legs orphaned by the time-out answer nobody when evdns gives up on them. */
    run_for(0.6);
    CHECK_EQ(s.calls, 1);
    stop();
}

static void test_bad_names_and_literals(void)
{
    struct seen s;

    start(5, 0, 1, 0);
    lookup("bad name!", &s);
    run_until(&s.calls, 5);
    CHECK_EQ(s.err, MF_RESOLVE_BADNAME);
    CHECK(strcmp(s.errmsg, "failed to parse host name \"bad name!\"") == 0);
    lookup("", &s);
    run_until(&s.calls, 5);
    CHECK(strcmp(s.errmsg, "failed to parse host name \"\"") == 0);
    lookup("a..test", &s);
    run_until(&s.calls, 5);
    CHECK_EQ(s.err, MF_RESOLVE_BADNAME);
    lookup("127.0.0.1", &s);
    run_until(&s.calls, 5);
    CHECK_EQ(s.err, 0);
    CHECK(strcmp(s.first, "127.0.0.1") == 0);
    lookup("[::1]", &s);
    run_until(&s.calls, 5);
    CHECK_EQ(s.v6, 1);
    CHECK(strcmp(s.first, "::1") == 0);
    lookup("::1", &s);
    run_until(&s.calls, 5);
    CHECK_EQ(s.v6, 1);
    stop();
}

static void test_hosts_file(void)
{
    struct seen s;

    /* No --resolver and no resolv.conf: only the hosts file can answer. */
    start(5, 0, 1, 1);
    lookup("hosted.test", &s);
    run_until(&s.calls, 5);
    CHECK_EQ(s.err, 0);
    CHECK_EQ(s.naddrs, 2);
    CHECK(strcmp(s.first, "10.9.9.9") == 0);
    lookup("ALIAS.hosted.test", &s);
    run_until(&s.calls, 5);
    CHECK_EQ(s.naddrs, 1);
    stop();
    /* --resolver-ipv6 off leaves out the hosts file's IPv6 line. */
    start(5, 0, 0, 1);
    lookup("hosted.test", &s);
    run_until(&s.calls, 5);
    CHECK_EQ(s.naddrs, 1);
    CHECK_EQ(s.v6, 0);
    stop();
}

static void test_shared_flight(void)
{
    struct seen s1, s2;
    int i = idx_of("shared.test");

    start(5, 0, 1, 0);
    lookup("shared.test", &s1);
    lookup("shared.test", &s2);
    run_until(&s2.calls, 5);
    run_until(&s1.calls, 5);
    CHECK_EQ(s1.calls, 1);
    CHECK_EQ(s2.calls, 1);
    CHECK_EQ(asked[i][0], 1); /* one question for both */
    stop();
}

static void test_cancel_inside_callback(void)
{
    struct seen s1, s2, s3, s4;
    mf_resolve_t *q2, *q4;
    int cancelled = 0, cancelled2 = 0;

    start(5, 0, 1, 0);
    /* Two waiters of one flight: the first to be answered cancels the other. */
    lookup("a.test", &s1);
    q2 = lookup("a.test", &s2);
    s1.cancel = q2;
    s1.cancel_flag = &cancelled;
    /* Two answered at once (literals): the first cancels the second. */
    lookup("10.1.1.1", &s3);
    q4 = lookup("10.1.1.2", &s4);
    s3.cancel = q4;
    s3.cancel_flag = &cancelled2;
    /* s2's callback would run right after s1's in the same turn, s4's after s3's. */
    run_until(&s1.calls, 5);
    run_until(&s3.calls, 5);
    CHECK_EQ(cancelled, 1);
    CHECK_EQ(cancelled2, 1);
    CHECK_EQ(s1.calls, 1);
    CHECK_EQ(s2.calls, 0);
    CHECK_EQ(s3.calls, 1);
    CHECK_EQ(s4.calls, 0);
    stop();
}

static void test_cancel_before_answer(void)
{
    struct seen s1, s2;
    mf_resolve_t *q;
    int i = idx_of("v4.test");

    start(5, 0, 1, 0);
    q = lookup("v4.test", &s1);
    mf_resolver_cancel(q);
    q = lookup("127.0.0.1", &s2);
    mf_resolver_cancel(q);
    /* The flight goes on without a waiter and still fills the cache. */
    run_for(0.3);
    CHECK_EQ(s1.calls, 0);
    CHECK_EQ(s2.calls, 0);
    CHECK_EQ(asked[i][0], 1);
    CHECK_EQ(mf_resolver_cached(W), 1u);
    stop();
}

static void test_free_with_pending(void)
{
    struct seen s1, s2, s3, s4;

    start(5, 0, 1, 0);
    lookup("silent.test", &s1);
    lookup("a.test", &s2);
    lookup("10.0.0.9", &s3);
    lookup("bad name", &s4);
    /* Let the questions go out, not the answers come back. */
    CHECK_EQ(s1.calls + s2.calls + s3.calls + s4.calls, 0);
    /* mf_worker_free frees the resolver: no callback, nothing leaked (ASan). */
    stop();
    CHECK_EQ(s1.calls + s2.calls + s3.calls + s4.calls, 0);
}

int main(void)
{
    static const struct unit_test tests[] = {
        {"a_and_aaaa", test_a_and_aaaa},
        {"cache_hit", test_cache_hit},
        {"ttl_expiry", test_ttl_expiry},
        {"valid_caps_ttl", test_valid_caps_ttl},
        {"ipv6_off", test_ipv6_off},
        {"not_found", test_not_found},
        {"refused", test_refused},
        {"timeout", test_timeout},
        {"bad_names_and_literals", test_bad_names_and_literals},
        {"hosts_file", test_hosts_file},
        {"shared_flight", test_shared_flight},
        {"cancel_inside_callback", test_cancel_inside_callback},
        {"cancel_before_answer", test_cancel_before_answer},
        {"free_with_pending", test_free_with_pending},
        {NULL, NULL},
    };
    int fd, rc;
    static const char hosts[] = "# the test's hosts file\n"
                                "10.9.9.9  hosted.test alias.hosted.test\n"
                                "fd00::9   hosted.test   # an IPv6 line\n"
                                "bogus     ignored.test\n";

    mf_log_level = MF_LOG_ERROR;
    if ((fd = mkstemp(hosts_path)) < 0 || write(fd, hosts, sizeof hosts - 1) < 0)
        return 2;
    close(fd);
    rc = unit_run(tests);
    unlink(hosts_path);
    return rc;
}
