/*
 * Name resolution without blocking the worker (cosocket.md section 4).
 *
 * A look-up (mf_resolve_t) is answered in one of two ways:
 *  - at once, from what the worker knows (an IP literal, /etc/hosts, the cache, a name that
 *    does not parse): the answer is kept in the look-up and delivered by a zero timer, so the
 *    callback never runs inside mf_resolver_lookup;
 *  - by a flight: the A and AAAA queries in progress for one name, shared by every look-up of
 *    that name that starts while it is in the air.
 *
 * evdns owns its requests; each one carries a leg (our small record of it). A flight that
 * gives up (its own timer: --resolver-timeout) or a resolver that is freed never cancels an
 * evdns request, because evdns would call back later with a pointer we freed: the flight
 * orphans its legs instead, and a leg frees itself when its answer or evdns's own timeout
 * arrives (or with the resolver, evdns_base_free(.., 0) dropping its requests silently).
 */
#include "resolver.h"
#include "config.h"
#include "ffi.h"
#include "log.h"
#include "worker.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#define NAME_MAX_LEN  253
#define MAX_ADDRS     64   /* addresses kept per name */
#define CACHE_BUCKETS 1024 /* power of two */
#define CACHE_MAX     4096 /* names cached per worker */
#define ERRMSG_LEN    (NAME_MAX_LEN + 64)

struct flight;

/* One evdns request: A or AAAA. */
struct leg {
    struct flight *f; /* NULL once orphaned */
    mf_resolver_t *r;
    struct leg *prev, *next; /* r->legs */
    int family;
};

struct mf_resolve {
    mf_resolver_t *r;
    struct flight *f;               /* the flight it waits on, or NULL when answered at once */
    struct mf_resolve *prev, *next; /* f->waiters, or r->ready */
    mf_resolve_cb cb;
    void *arg;
    /* Answered at once: */
    struct event ev;
    int err;
    int naddrs;
    struct sockaddr_storage *addrs;
    char *errmsg;
};

struct flight {
    mf_resolver_t *r;
    struct flight *prev, *next; /* r->flights */
    char *name;                 /* lower case */
    struct leg *leg4, *leg6;    /* NULL when answered (or not asked) */
    int err4, err6;             /* evdns results; -1 while waiting or not asked */
    int ttl;                    /* the smallest TTL of the answers */
    struct sockaddr_storage addrs[MAX_ADDRS];
    int naddrs;
    struct event timer;
    struct mf_resolve *waiters, *last; /* answered in the order they asked */
};

struct cache_entry {
    struct cache_entry *next; /* in its bucket */
    char *name;
    double expires;
    int naddrs;
    struct sockaddr_storage addrs[];
};

struct host_entry {
    char *name;
    struct sockaddr_storage addr;
};

struct mf_resolver {
    mf_worker_t *w;
    struct evdns_base *dns;
    struct flight *flights;
    struct leg *legs;
    struct mf_resolve *ready; /* answered at once, their events active */
    struct cache_entry *cache[CACHE_BUCKETS];
    unsigned ncached;
    struct host_entry *hosts;
    size_t nhosts;
};

/* Names and errors ---------------------------------------------------------------------- */

static const char *reason(int code)
{
    switch (code) {
    case MF_RESOLVE_FORMAT: return "Format error";
    case MF_RESOLVE_SERVFAIL: return "Server failure";
    case MF_RESOLVE_NOTFOUND: return "Host not found";
    case MF_RESOLVE_NOTIMPL: return "Unimplemented";
    case MF_RESOLVE_REFUSED: return "Operation refused";
    case MF_RESOLVE_TIMEDOUT: return "Operation timed out";
    case MF_RESOLVE_TRUNCATED: return "Truncated answer";
    default: return "Unknown error";
    }
}

static void format_error(char *buf, const char *name, int code)
{
    if (code == MF_RESOLVE_BADNAME)
        snprintf(buf, ERRMSG_LEN, "failed to parse host name \"%.*s\"", NAME_MAX_LEN, name);
    else if (code == MF_RESOLVE_NOMEM)
        snprintf(buf, ERRMSG_LEN, "%.*s could not be resolved (no memory)", NAME_MAX_LEN, name);
    else
        snprintf(buf, ERRMSG_LEN, "%.*s could not be resolved (%d: %s)", NAME_MAX_LEN, name, code,
                 reason(code));
}

/* A host name as DNS carries it: labels of 1..63 letters, digits, '-' or '_', an optional
 * final dot. Anything else never leaves the worker. */
static int valid_name(const char *name)
{
    size_t len = strlen(name), label = 0;

    if (len == 0 || len > NAME_MAX_LEN + 1 || (len == NAME_MAX_LEN + 1 && name[len - 1] != '.'))
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c == '.') {
            if (label == 0)
                return 0;
            label = 0;
        } else if (isalnum(c) || c == '-' || c == '_') {
            if (++label > 63)
                return 0;
        } else {
            return 0;
        }
    }
    return 1;
}

/* The name in lower case without its final dot: the key of the cache, hosts and flights. */
static char *key_of(const char *name)
{
    size_t len = strlen(name);
    char *k;

    if (len > 0 && name[len - 1] == '.')
        len--;
    if (!(k = malloc(len + 1)))
        return NULL;
    for (size_t i = 0; i < len; i++)
        k[i] = (char)tolower((unsigned char)name[i]);
    k[len] = '\0';
    return k;
}

/* "1.2.3.4", "::1" or "[::1]"; returns 1 and fills sa for an IP literal. */
static int parse_literal(const char *name, struct sockaddr_storage *sa)
{
    char buf[64];
    size_t len = strlen(name);

    memset(sa, 0, sizeof *sa);
    if (len >= 2 && name[0] == '[' && name[len - 1] == ']' && len - 2 < sizeof buf) {
        memcpy(buf, name + 1, len - 2);
        buf[len - 2] = '\0';
        name = buf;
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)sa;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)sa;
    if (inet_pton(AF_INET, name, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        return 1;
    }
    if (inet_pton(AF_INET6, name, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        return 1;
    }
    return 0;
}

/* /etc/hosts --------------------------------------------------------------------------------- */

static int add_host(mf_resolver_t *r, const char *name, const struct sockaddr_storage *sa,
                    size_t *cap)
{
    char *k;

    if (r->nhosts == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        struct host_entry *h = realloc(r->hosts, ncap * sizeof *h);
        if (!h)
            return -1;
        r->hosts = h;
        *cap = ncap;
    }
    if (!(k = key_of(name)))
        return -1;
    r->hosts[r->nhosts].name = k;
    r->hosts[r->nhosts].addr = *sa;
    r->nhosts++;
    return 0;
}

/* Reads the hosts file once, when the resolver starts (as OpenResty's lua-resty-dns users
 * read it once per worker): a changed file takes effect with the next reload. */
static void load_hosts(mf_resolver_t *r, const char *path)
{
    FILE *fp = fopen(path, "r");
    char line[1024];
    size_t cap = 0;

    if (!fp)
        return;
    while (fgets(line, sizeof line, fp)) {
        char *save = NULL, *addr, *name;
        struct sockaddr_storage sa;
        char *hash = strchr(line, '#');

        if (hash)
            *hash = '\0';
        addr = strtok_r(line, " \t\r\n", &save);
        if (!addr || !parse_literal(addr, &sa))
            continue;
        if (sa.ss_family == AF_INET6 && !r->w->cfg.resolver_ipv6)
            continue;
        while ((name = strtok_r(NULL, " \t\r\n", &save)) != NULL)
            if (valid_name(name) && add_host(r, name, &sa, &cap) < 0)
                break;
    }
    fclose(fp);
}

static int find_hosts(mf_resolver_t *r, const char *key, struct sockaddr_storage *out)
{
    int n = 0;

    for (size_t i = 0; i < r->nhosts && n < MAX_ADDRS; i++)
        if (strcmp(r->hosts[i].name, key) == 0)
            out[n++] = r->hosts[i].addr;
    return n;
}

/* The cache ------------------------------------------------------------------------------------ */

static unsigned bucket_of(const char *key)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    for (; *key; key++)
        h = (h ^ (unsigned char)*key) * 16777619u;
    return h & (CACHE_BUCKETS - 1);
}

static void cache_drop(mf_resolver_t *r, struct cache_entry **link)
{
    struct cache_entry *e = *link;

    *link = e->next;
    free(e->name);
    free(e);
    r->ncached--;
}

/* The entry for key if it has not expired (an expired one is dropped). */
static struct cache_entry *cache_find(mf_resolver_t *r, const char *key, double now)
{
    struct cache_entry **link = &r->cache[bucket_of(key)];

    while (*link) {
        if (strcmp((*link)->name, key) == 0) {
            if ((*link)->expires > now)
                return *link;
            cache_drop(r, link);
            return NULL;
        }
        link = &(*link)->next;
    }
    return NULL;
}

/* Makes room for one more name: expired entries go first, then the one that expires soonest. */
static void cache_make_room(mf_resolver_t *r, double now)
{
    struct cache_entry **soonest = NULL;

    for (unsigned b = 0; b < CACHE_BUCKETS; b++) {
        struct cache_entry **link = &r->cache[b];
        while (*link) {
            if ((*link)->expires <= now) {
                cache_drop(r, link);
                continue;
            }
            if (!soonest || (*link)->expires < (*soonest)->expires)
                soonest = link;
            link = &(*link)->next;
        }
    }
    if (r->ncached >= CACHE_MAX && soonest)
        cache_drop(r, soonest);
}

static void cache_put(mf_resolver_t *r, const char *key, const struct sockaddr_storage *addrs,
                      int naddrs, int ttl)
{
    double now = mf_worker_now(r->w), valid = r->w->cfg.resolver_valid, life = ttl;
    struct cache_entry *e, **link;
    unsigned b = bucket_of(key);

    if (valid > 0 && valid < life)
        life = valid;
    if (!(life > 0))
        return; /* TTL 0: ask again next time */
    for (link = &r->cache[b]; *link; link = &(*link)->next)
        if (strcmp((*link)->name, key) == 0) {
            cache_drop(r, link);
            break;
        }
    if (r->ncached >= CACHE_MAX)
        cache_make_room(r, now);
    if (!(e = malloc(sizeof *e + (size_t)naddrs * sizeof e->addrs[0])))
        return;
    if (!(e->name = strdup(key))) {
        free(e);
        return;
    }
    e->expires = now + life;
    e->naddrs = naddrs;
    memcpy(e->addrs, addrs, (size_t)naddrs * sizeof e->addrs[0]);
    e->next = r->cache[b];
    r->cache[b] = e;
    r->ncached++;
}

/* Starting --------------------------------------------------------------------------------------
 */

static void on_evdns_log(int is_warn, const char *msg)
{
    if (is_warn)
        mf_log_debug("evdns: %s", msg);
}

/* Per-try timeout and tries so that evdns's own time-out comes close to --resolver-timeout
 * (and a dead server is retried, or the next one tried, a few times within it). */
static void set_timeouts(struct evdns_base *dns, double total)
{
    double per_try = total / 2 < 5 ? total / 2 : 5;
    int attempts = (int)(total / per_try);
    char buf[32];

    if (attempts < 1)
        attempts = 1;
    if (attempts > 255)
        attempts = 255;
    snprintf(buf, sizeof buf, "%.3f", per_try);
    evdns_base_set_option(dns, "timeout:", buf);
    snprintf(buf, sizeof buf, "%d", attempts);
    evdns_base_set_option(dns, "attempts:", buf);
}

/* --resolver ADDR[,ADDR...] in place of resolv.conf's name servers. */
static int add_servers(struct evdns_base *dns, const char *list)
{
    char buf[128];
    const char *p = list;

    while (*p) {
        size_t len = strcspn(p, ",");
        if (len > 0 && len < sizeof buf) {
            memcpy(buf, p, len);
            buf[len] = '\0';
            if (evdns_base_nameserver_ip_add(dns, buf) != 0)
                mf_log_warn("--resolver: cannot use name server '%s'", buf);
        }
        p += len;
        if (*p == ',')
            p++;
    }
    return evdns_base_count_nameservers(dns) > 0 ? 0 : -1;
}

static mf_resolver_t *resolver_start(mf_worker_t *w)
{
    mf_resolver_t *r;
    const mf_config_t *cfg = &w->cfg;

    if (w->resolver)
        return w->resolver;
    if (!(r = calloc(1, sizeof *r)))
        return NULL;
    r->w = w;
    evdns_set_log_fn(on_evdns_log);
    r->dns = evdns_base_new(w->base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (!r->dns) {
        free(r);
        return NULL;
    }
    if (cfg->resolver) {
        if (add_servers(r->dns, cfg->resolver) < 0)
            mf_log_warn("--resolver: no usable name server in '%s'", cfg->resolver);
    } else {
        const char *path = cfg->resolv_conf ? cfg->resolv_conf : "/etc/resolv.conf";
        /* Search domains, ndots and the name servers; not evdns's own hosts handling (we
         * read the hosts file ourselves, evdns_base_resolve_ipv4 would not consult it). */
        int rc = evdns_base_resolv_conf_parse(
            r->dns, DNS_OPTION_SEARCH | DNS_OPTION_NAMESERVERS | DNS_OPTION_MISC, path);
        if (rc != 0)
            mf_log_debug("resolver: %s not read (evdns code %d): asking 127.0.0.1", path, rc);
    }
    set_timeouts(r->dns, cfg->resolver_timeout > 0 ? cfg->resolver_timeout : 30);
    load_hosts(r, cfg->hosts_file ? cfg->hosts_file : "/etc/hosts");
    w->resolver = r;
    return r;
}

/* Look-ups answered at once ---------------------------------------------------------------- */

static void unlink_ready(mf_resolve_t *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        q->r->ready = q->next;
    if (q->next)
        q->next->prev = q->prev;
}

static void free_lookup(mf_resolve_t *q)
{
    free(q->addrs);
    free(q->errmsg);
    free(q);
}

static void on_ready(evutil_socket_t fd, short what, void *arg)
{
    mf_resolve_t *q = arg;

    (void)fd;
    (void)what;
    unlink_ready(q);
    q->cb(q->err, q->err ? NULL : q->addrs, q->err ? 0 : q->naddrs, q->err ? q->errmsg : NULL,
          q->arg);
    free_lookup(q);
}

/* Keeps the answer in q and delivers it from the loop: an active event, so answers given at
 * once run in the order they were asked. Returns 0, or -1 out of memory. */
static int answer_later(mf_resolve_t *q, int err, const struct sockaddr_storage *addrs, int n,
                        const char *name)
{
    mf_resolver_t *r = q->r;

    q->err = err;
    if (err) {
        if (!(q->errmsg = malloc(ERRMSG_LEN)))
            return -1;
        format_error(q->errmsg, name, err);
    } else {
        if (!(q->addrs = malloc((size_t)n * sizeof *addrs)))
            return -1;
        memcpy(q->addrs, addrs, (size_t)n * sizeof *addrs);
        q->naddrs = n;
    }
    event_assign(&q->ev, r->w->base, -1, 0, on_ready, q);
    q->prev = NULL;
    q->next = r->ready;
    if (r->ready)
        r->ready->prev = q;
    r->ready = q;
    event_active(&q->ev, EV_TIMEOUT, 0);
    return 0;
}

/* Flights ----------------------------------------------------------------------------------------
 */

static void unlink_waiter(mf_resolve_t *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        q->f->waiters = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        q->f->last = q->prev;
}

static void unlink_leg(struct leg *l)
{
    if (l->prev)
        l->prev->next = l->next;
    else
        l->r->legs = l->next;
    if (l->next)
        l->next->prev = l->prev;
}

static void unlink_flight(struct flight *f)
{
    if (f->prev)
        f->prev->next = f->next;
    else
        f->r->flights = f->next;
    if (f->next)
        f->next->prev = f->prev;
    f->prev = f->next = NULL;
}

/* nginx's code for an evdns result. No address (NXDOMAIN or an empty answer) is "not found",
 * as nginx's resolver says for both. */
static int code_of(int evdns_err)
{
    switch (evdns_err) {
    case DNS_ERR_FORMAT: return MF_RESOLVE_FORMAT;
    case DNS_ERR_SERVERFAILED: return MF_RESOLVE_SERVFAIL;
    case DNS_ERR_NOTEXIST:
    case DNS_ERR_NODATA:
    case DNS_ERR_NONE: return MF_RESOLVE_NOTFOUND;
    case DNS_ERR_NOTIMPL: return MF_RESOLVE_NOTIMPL;
    case DNS_ERR_REFUSED: return MF_RESOLVE_REFUSED;
    case DNS_ERR_TIMEOUT: return MF_RESOLVE_TIMEDOUT;
    case DNS_ERR_TRUNCATED: return MF_RESOLVE_TRUNCATED;
    default: return evdns_err;
    }
}

/* The error of a flight with no address: a time-out wins (the other family may have had
 * addresses), then a server's error, then "not found". */
static int flight_error(const struct flight *f)
{
    int c4 = f->err4 >= 0 ? code_of(f->err4) : 0, c6 = f->err6 >= 0 ? code_of(f->err6) : 0;

    if (c4 == MF_RESOLVE_TIMEDOUT || c6 == MF_RESOLVE_TIMEDOUT)
        return MF_RESOLVE_TIMEDOUT;
    if (c4 && c4 != MF_RESOLVE_NOTFOUND)
        return c4;
    if (c6 && c6 != MF_RESOLVE_NOTFOUND)
        return c6;
    return MF_RESOLVE_NOTFOUND;
}

static void flight_free(struct flight *f)
{
    /* Legs still in the air outlive the flight: their answer will find no one. */
    if (f->leg4)
        f->leg4->f = NULL;
    if (f->leg6)
        f->leg6->f = NULL;
    evtimer_del(&f->timer);
    free(f->name);
    free(f);
}

/* Ends a flight: caches its answer and delivers it to each waiter in turn. A callback may
 * start or cancel look-ups (even other waiters of this flight): the flight is out of the
 * resolver's list first, and each waiter is unlinked before its callback runs. */
static void flight_done(struct flight *f, int err)
{
    mf_resolver_t *r = f->r;
    char errmsg[ERRMSG_LEN];

    unlink_flight(f);
    if (!err && f->naddrs == 0)
        err = flight_error(f);
    if (!err)
        cache_put(r, f->name, f->addrs, f->naddrs, f->ttl);
    else
        format_error(errmsg, f->name, err);
    while (f->waiters) {
        mf_resolve_t *q = f->waiters;
        unlink_waiter(q);
        q->cb(err, err ? NULL : f->addrs, err ? 0 : f->naddrs, err ? errmsg : NULL, q->arg);
        free(q);
    }
    flight_free(f);
}

static void on_flight_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    flight_done(arg, MF_RESOLVE_TIMEDOUT);
}

static void on_answer(int result, char type, int count, int ttl, void *addresses, void *arg)
{
    struct leg *l = arg;
    struct flight *f = l->f;
    int is4 = f && l == f->leg4;

    unlink_leg(l);
    free(l);
    if (!f)
        return; /* orphaned: the flight timed out or the resolver went away */
    if (is4) {
        f->leg4 = NULL;
        f->err4 = result;
    } else {
        f->leg6 = NULL;
        f->err6 = result;
    }
    if (result == DNS_ERR_NONE && count > 0 && addresses) {
        for (int i = 0; i < count && f->naddrs < MAX_ADDRS; i++) {
            struct sockaddr_storage *sa = &f->addrs[f->naddrs++];
            memset(sa, 0, sizeof *sa);
            if (type == DNS_IPv4_A) {
                struct sockaddr_in *s4 = (struct sockaddr_in *)sa;
                s4->sin_family = AF_INET;
                memcpy(&s4->sin_addr, (const char *)addresses + 4 * i, 4);
            } else {
                struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)sa;
                s6->sin6_family = AF_INET6;
                memcpy(&s6->sin6_addr, (const char *)addresses + 16 * i, 16);
            }
        }
        if (f->ttl < 0 || ttl < f->ttl)
            f->ttl = ttl < 0 ? 0 : ttl;
    }
    if (!f->leg4 && !f->leg6)
        flight_done(f, 0);
}

static struct leg *send_leg(struct flight *f, int family)
{
    mf_resolver_t *r = f->r;
    struct leg *l = calloc(1, sizeof *l);
    struct evdns_request *req;

    if (!l)
        return NULL;
    l->f = f;
    l->r = r;
    l->family = family;
    l->next = r->legs;
    if (r->legs)
        r->legs->prev = l;
    r->legs = l;
    if (family == AF_INET)
        req = evdns_base_resolve_ipv4(r->dns, f->name, 0, on_answer, l);
    else
        req = evdns_base_resolve_ipv6(r->dns, f->name, 0, on_answer, l);
    if (!req) {
        unlink_leg(l);
        free(l);
        return NULL;
    }
    return l;
}

static struct flight *flight_start(mf_resolver_t *r, char *key)
{
    struct flight *f = calloc(1, sizeof *f);
    double t = r->w->cfg.resolver_timeout > 0 ? r->w->cfg.resolver_timeout : 30;
    struct timeval tv;

    if (!f)
        return NULL;
    f->r = r;
    f->name = key;
    f->err4 = f->err6 = -1;
    f->ttl = -1;
    evtimer_assign(&f->timer, r->w->base, on_flight_timeout, f);
    /* The key is the flight's name from here on, whatever happens. */
    if (!(f->leg4 = send_leg(f, AF_INET))) {
        free(f);
        return NULL;
    }
    if (r->w->cfg.resolver_ipv6 && !(f->leg6 = send_leg(f, AF_INET6))) {
        f->leg4->f = NULL;
        free(f);
        return NULL;
    }
    tv.tv_sec = (time_t)t;
    tv.tv_usec = (suseconds_t)((t - (double)tv.tv_sec) * 1e6);
    evtimer_add(&f->timer, &tv);
    f->next = r->flights;
    if (r->flights)
        r->flights->prev = f;
    r->flights = f;
    return f;
}

/* The interface ---------------------------------------------------------------------------------
 */

mf_resolve_t *mf_resolver_lookup(mf_worker_t *w, const char *name, mf_resolve_cb cb, void *arg,
                                 const char **errmsg)
{
    static const char nomem[] = "no memory for the resolver";
    mf_resolver_t *r = resolver_start(w);
    struct sockaddr_storage found[MAX_ADDRS];
    struct cache_entry *e;
    mf_resolve_t *q;
    struct flight *f;
    char *key;
    int n, rc;

    if (!r) {
        *errmsg = "the resolver cannot start";
        return NULL;
    }
    if (!(q = calloc(1, sizeof *q))) {
        *errmsg = nomem;
        return NULL;
    }
    q->r = r;
    q->cb = cb;
    q->arg = arg;
    if (parse_literal(name, &found[0])) {
        rc = answer_later(q, 0, found, 1, name);
        goto immediate;
    }
    if (!valid_name(name)) {
        rc = answer_later(q, MF_RESOLVE_BADNAME, NULL, 0, name);
        goto immediate;
    }
    if (!(key = key_of(name))) {
        free(q);
        *errmsg = nomem;
        return NULL;
    }
    if ((n = find_hosts(r, key, found)) > 0) {
        rc = answer_later(q, 0, found, n, name);
        free(key);
        goto immediate;
    }
    if ((e = cache_find(r, key, mf_worker_now(w))) != NULL) {
        rc = answer_later(q, 0, e->addrs, e->naddrs, name);
        free(key);
        goto immediate;
    }
    for (f = r->flights; f; f = f->next)
        if (strcmp(f->name, key) == 0)
            break;
    if (f) {
        free(key);
    } else if (!(f = flight_start(r, key))) {
        free(key);
        free(q);
        *errmsg = "cannot send the DNS query";
        return NULL;
    }
    q->f = f;
    q->prev = f->last;
    if (f->last)
        f->last->next = q;
    else
        f->waiters = q;
    f->last = q;
    return q;

immediate:
    if (rc < 0) {
        free_lookup(q);
        *errmsg = nomem;
        return NULL;
    }
    return q;
}

void mf_resolver_cancel(mf_resolve_t *q)
{
    if (!q)
        return;
    if (q->f) {
        /* The flight goes on without it: its answer still fills the cache. */
        unlink_waiter(q);
        free(q);
        return;
    }
    event_del(&q->ev);
    unlink_ready(q);
    free_lookup(q);
}

/*
 * The resolver options of the command line, for a worker made by mf_ffi_worker_new (the test
 * API): servers as --resolver (NULL: resolv.conf; copied), timeout and valid in seconds (0:
 * the default), ipv6 0 or 1. Returns 0, or -1 when servers is malformed or the resolver
 * already started.
 */
int mf_ffi_resolver_configure(mf_worker_t *w, const char *servers, double timeout, double valid,
                              int ipv6)
{
    char *copy = NULL;

    if (w->resolver || (servers && !mf_config_valid_servers(servers)))
        return -1;
    if (servers && !(copy = strdup(servers)))
        return -1;
    free(w->resolver_servers);
    w->resolver_servers = copy;
    w->cfg.resolver = copy;
    if (timeout > 0)
        w->cfg.resolver_timeout = timeout;
    if (valid > 0)
        w->cfg.resolver_valid = valid;
    w->cfg.resolver_ipv6 = ipv6 != 0;
    return 0;
}

unsigned mf_resolver_cached(mf_worker_t *w)
{
    return w->resolver ? w->resolver->ncached : 0;
}

void mf_resolver_free(mf_worker_t *w)
{
    mf_resolver_t *r = w->resolver;

    if (!r)
        return;
    while (r->ready)
        mf_resolver_cancel(r->ready);
    while (r->flights) {
        struct flight *f = r->flights;
        while (f->waiters)
            mf_resolver_cancel(f->waiters);
        unlink_flight(f);
        flight_free(f);
    }
    /* Drops evdns's requests without calling back; then their legs are ours to free. */
    evdns_base_free(r->dns, 0);
    while (r->legs) {
        struct leg *l = r->legs;
        unlink_leg(l);
        free(l);
    }
    for (unsigned b = 0; b < CACHE_BUCKETS; b++)
        while (r->cache[b])
            cache_drop(r, &r->cache[b]);
    for (size_t i = 0; i < r->nhosts; i++)
        free(r->hosts[i].name);
    free(r->hosts);
    free(r);
    w->resolver = NULL;
}
