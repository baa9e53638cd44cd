#include "config.h"
#include "log.h"
#include "shdict.h"

#include <errno.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/util.h>

const char mf_config_usage[] =
    "usage: moonfcgi [OPTIONS] APP.lua     serve APP.lua over FastCGI\n"
    "       moonfcgi --check APP.lua       load APP.lua as a reload would, exit 0 or 1\n"
    "       moonfcgi --help | --version\n"
    "\n"
    "options:\n"
    "  --listen ADDR          HOST:PORT, [V6]:PORT or unix:/PATH (default: fd 0 if it is a\n"
    "                         listening socket, then systemd's LISTEN_FDS, then 127.0.0.1:9000)\n"
    "  --http ADDR            also serve plain HTTP/1.1 on HOST:PORT (repeatable; for\n"
    "                         development: production goes behind a web server)\n"
    "  --http-root DIR        with --http: serve the files under DIR when they exist\n"
    "  --http-role ROLE       with --http: responder (default) or authorizer\n"
    "  --workers N            worker processes (default: number of CPUs)\n"
    "  --max-conns N          open connections per worker (default 1024)\n"
    "  --max-reqs N           requests in flight per worker (default 1024)\n"
    "  --max-params BYTES     size of one request's params (default 1M); unfinished params\n"
    "                         of a worker hold at most max(64M, 4 x BYTES) together\n"
    "  --max-body BYTES       the most req:body() buffers (default 16M); bodies announced\n"
    "                         but not arrived reserve at most max(64M, 4 x BYTES) per worker\n"
    "  --timeout SECONDS      wall time of one handler (default 60)\n"
    "  --idle-timeout SECONDS idle connection lifetime (default 60)\n"
    "  --read-timeout SECONDS wait for params and for req:read() (default 30)\n"
    "  --check-timeout SECONDS\n"
    "                         how long the app's top level may run when a start, a reload\n"
    "                         or --check checks it (default 10)\n"
    "  --allow ADDR,...       TCP peers allowed to connect (also FCGI_WEB_SERVER_ADDRS)\n"
    "  --socket-mode MODE     permissions of a unix socket (default 0660)\n"
    "  --user USER[:GROUP]    drop privileges after binding\n"
    "  --watch                reload when the app or its modules change\n"
    "  --log-level LEVEL      error, warn, info or debug (default info)\n"
    "  --pid-file PATH        write the master's pid to PATH\n"
    "  --shared NAME:SIZE     a dictionary shared by all workers, moonfcgi.shared.NAME and\n"
    "                         ngx.shared.NAME (SIZE with k, m or g; repeatable)\n"
    "  --resolver ADDR[,ADDR...]\n"
    "                         name servers for outbound sockets (IP or IP:PORT, [V6]:PORT),\n"
    "                         in place of /etc/resolv.conf's; /etc/hosts is read first\n"
    "  --resolver-timeout SECONDS\n"
    "                         how long one name look-up may take (default 30)\n"
    "  --resolver-valid SECONDS\n"
    "                         cache answers at most this long (default: their TTL)\n"
    "  --resolver-ipv6 on|off ask for IPv6 addresses (AAAA) too (default on)\n"
    "  --max-sockets N        open outbound sockets (cosockets) per worker (default 4096)\n"
    "  --socket-timeout SECONDS\n"
    "                         default connect, send and read timeout of a socket (default 60)\n"
    "  --socket-buffer BYTES  the most unread data one socket holds for *l, *a and\n"
    "                         receiveuntil (default 16M); past it: \"buffer too large\"\n"
    "  --ssl-trusted-certificate FILE\n"
    "                         CA certificates (PEM) that sslhandshake verifies against\n"
    "                         (default /etc/ssl/certs/ca-certificates.crt)\n"
    "\n"
    "signals to the master: SIGHUP reloads the app, SIGTERM/SIGINT stop gracefully,\n"
    "SIGUSR1 writes each worker's status to the log\n";

void mf_config_defaults(mf_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->max_conns = 1024;
    cfg->max_reqs = 1024;
    cfg->max_params = 1024 * 1024;
    cfg->max_body = 16 * 1024 * 1024;
    cfg->timeout = 60;
    cfg->idle_timeout = 60;
    cfg->read_timeout = 30;
    cfg->check_timeout = 10;
    cfg->socket_mode = 0660;
    cfg->log_level = MF_LOG_INFO;
    cfg->resolver_timeout = 30;
    cfg->resolver_ipv6 = 1;
    cfg->max_sockets = 4096;
    cfg->socket_timeout = 60;
    cfg->socket_buffer = 16 * 1024 * 1024;
}

int mf_config_parse_size(const char *s, size_t *out)
{
    char *end;
    unsigned long long v, mul = 1;

    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    if (*end == 'K' || *end == 'k')
        mul = 1024ULL, end++;
    else if (*end == 'M' || *end == 'm')
        mul = 1024ULL * 1024, end++;
    else if (*end == 'G' || *end == 'g')
        mul = 1024ULL * 1024 * 1024, end++;
    if (mul > 1 && (*end == 'i' || *end == 'I') && (end[1] == 'B' || end[1] == 'b'))
        end += 2;
    if (*end != '\0' || v > (unsigned long long)SIZE_MAX / mul)
        return -1;
    *out = (size_t)(v * mul);
    return 0;
}

static int parse_uint(const char *s, unsigned min, unsigned max, unsigned *out)
{
    char *end;
    unsigned long v;

    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = (unsigned)v;
    return 0;
}

static int parse_seconds(const char *s, double *out)
{
    char *end;
    double v;

    if ((*s < '0' || *s > '9') && *s != '.')
        return -1;
    v = strtod(s, &end);
    if (*end || !isfinite(v) || v <= 0 || v > 1e6)
        return -1;
    *out = v;
    return 0;
}

/* Options that take a value. */
enum {
    OPT_LISTEN,
    OPT_WORKERS,
    OPT_MAX_CONNS,
    OPT_MAX_REQS,
    OPT_MAX_PARAMS,
    OPT_MAX_BODY,
    OPT_TIMEOUT,
    OPT_IDLE_TIMEOUT,
    OPT_READ_TIMEOUT,
    OPT_ALLOW,
    OPT_SOCKET_MODE,
    OPT_USER,
    OPT_LOG_LEVEL,
    OPT_PID_FILE,
    OPT_CHECK_TIMEOUT,
    OPT_SHARED,
    OPT_RESOLVER,
    OPT_RESOLVER_TIMEOUT,
    OPT_RESOLVER_VALID,
    OPT_RESOLVER_IPV6,
    OPT_HTTP,
    OPT_HTTP_ROOT,
    OPT_HTTP_ROLE,
    OPT_MAX_SOCKETS,
    OPT_SOCKET_TIMEOUT,
    OPT_SOCKET_BUFFER,
    OPT_SSL_TRUSTED,
    OPT_COUNT
};

static const char *const value_opts[OPT_COUNT] = {
    "--listen",         "--workers",       "--max-conns",
    "--max-reqs",       "--max-params",    "--max-body",
    "--timeout",        "--idle-timeout",  "--read-timeout",
    "--allow",          "--socket-mode",   "--user",
    "--log-level",      "--pid-file",      "--check-timeout",
    "--shared",         "--resolver",      "--resolver-timeout",
    "--resolver-valid", "--resolver-ipv6", "--http",
    "--http-root",      "--http-role",     "--max-sockets",
    "--socket-timeout", "--socket-buffer", "--ssl-trusted-certificate",
};

int mf_config_valid_servers(const char *list)
{
    const char *p = list;

    if (!*list)
        return 0;
    while (*p) {
        char buf[128];
        struct sockaddr_storage ss;
        int len = (int)sizeof ss;
        size_t n = strcspn(p, ",");

        if (n == 0 || n >= sizeof buf)
            return 0;
        memcpy(buf, p, n);
        buf[n] = '\0';
        if (evutil_parse_sockaddr_port(buf, (struct sockaddr *)&ss, &len) != 0)
            return 0;
        p += n;
        if (*p == ',' && *++p == '\0')
            return 0;
    }
    return 1;
}

static int set_value(mf_config_t *cfg, int opt, const char *v, char *err, size_t errlen)
{
    unsigned u;
    int ok = 0;

    switch (opt) {
    case OPT_LISTEN:
        ok = *v != '\0';
        cfg->listen = v;
        break;
    case OPT_WORKERS:
        ok = parse_uint(v, 1, 1024, &u) == 0;
        cfg->workers = (int)u;
        break;
    case OPT_MAX_CONNS: ok = parse_uint(v, 1, 1000000, &cfg->max_conns) == 0; break;
    case OPT_MAX_REQS: ok = parse_uint(v, 1, 65535, &cfg->max_reqs) == 0; break;
    case OPT_MAX_PARAMS:
        ok = mf_config_parse_size(v, &cfg->max_params) == 0 && cfg->max_params > 0 &&
             cfg->max_params <= 0x7fffffff;
        break;
    case OPT_MAX_BODY:
        ok = mf_config_parse_size(v, &cfg->max_body) == 0 && cfg->max_body <= 0x7fffffff;
        break;
    case OPT_TIMEOUT: ok = parse_seconds(v, &cfg->timeout) == 0; break;
    case OPT_IDLE_TIMEOUT: ok = parse_seconds(v, &cfg->idle_timeout) == 0; break;
    case OPT_READ_TIMEOUT: ok = parse_seconds(v, &cfg->read_timeout) == 0; break;
    case OPT_CHECK_TIMEOUT: ok = parse_seconds(v, &cfg->check_timeout) == 0; break;
    case OPT_MAX_SOCKETS: ok = parse_uint(v, 1, 1000000, &cfg->max_sockets) == 0; break;
    case OPT_SOCKET_TIMEOUT: ok = parse_seconds(v, &cfg->socket_timeout) == 0; break;
    case OPT_SOCKET_BUFFER:
        ok = mf_config_parse_size(v, &cfg->socket_buffer) == 0 && cfg->socket_buffer >= 1024 &&
             cfg->socket_buffer <= 0x7fffffff;
        break;
    case OPT_SSL_TRUSTED:
        ok = *v != '\0';
        cfg->ssl_trusted = v;
        break;
    case OPT_ALLOW:
        ok = *v != '\0';
        cfg->allow = v;
        break;
    case OPT_SOCKET_MODE: {
        char *end;
        unsigned long m = strtoul(v, &end, 8);
        ok = *v && !*end && m <= 07777;
        cfg->socket_mode = (unsigned)m;
        break;
    }
    case OPT_USER:
        ok = *v != '\0';
        cfg->user = v;
        break;
    case OPT_PID_FILE:
        ok = *v != '\0';
        cfg->pid_file = v;
        break;
    case OPT_SHARED: {
        char name[MF_SHDICT_NAME_MAX + 1];
        size_t size;
        if (cfg->nshared == (int)(sizeof cfg->shared / sizeof cfg->shared[0])) {
            snprintf(err, errlen, "--shared: at most %d dictionaries",
                     (int)(sizeof cfg->shared / sizeof cfg->shared[0]));
            return -1;
        }
        if (mf_shdict_parse(v, name, &size, err, errlen) < 0)
            return -1;
        for (int i = 0; i < cfg->nshared; i++) {
            size_t n = strlen(name);
            if (strncmp(cfg->shared[i], name, n) == 0 && cfg->shared[i][n] == ':') {
                snprintf(err, errlen, "--shared: the dictionary '%s' is declared twice", name);
                return -1;
            }
        }
        cfg->shared[cfg->nshared++] = v;
        ok = 1;
        break;
    }
    case OPT_RESOLVER:
        ok = mf_config_valid_servers(v);
        cfg->resolver = v;
        break;
    case OPT_RESOLVER_TIMEOUT: ok = parse_seconds(v, &cfg->resolver_timeout) == 0; break;
    case OPT_RESOLVER_VALID: ok = parse_seconds(v, &cfg->resolver_valid) == 0; break;
    case OPT_RESOLVER_IPV6:
        ok = strcmp(v, "on") == 0 || strcmp(v, "off") == 0;
        cfg->resolver_ipv6 = strcmp(v, "on") == 0;
        break;
    case OPT_HTTP:
        ok = *v != '\0' && cfg->nhttp < (int)(sizeof cfg->http / sizeof cfg->http[0]);
        if (ok)
            cfg->http[cfg->nhttp++] = v;
        break;
    case OPT_HTTP_ROOT:
        ok = *v != '\0';
        cfg->http_root = v;
        break;
    case OPT_HTTP_ROLE:
        ok = strcmp(v, "responder") == 0 || strcmp(v, "authorizer") == 0;
        cfg->http_role = strcmp(v, "authorizer") == 0 ? 2 : 1;
        break;
    case OPT_LOG_LEVEL:
        cfg->log_level = mf_log_parse_level(v);
        ok = cfg->log_level >= 0;
        break;
    }
    if (!ok)
        snprintf(err, errlen, "invalid value for %s: '%s'", value_opts[opt], v);
    return ok ? 0 : -1;
}

int mf_config_parse(mf_config_t *cfg, int argc, char **argv, char *err, size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *eq;
        size_t namelen;
        int opt;

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            cfg->action = MF_CONFIG_HELP;
            return 0;
        }
        if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
            cfg->action = MF_CONFIG_VERSION;
            return 0;
        }
        if (strcmp(a, "--check") == 0) {
            cfg->check = 1;
            continue;
        }
        if (strcmp(a, "--watch") == 0) {
            cfg->watch = 1;
            continue;
        }
        if (a[0] != '-' || a[1] == '\0') {
            if (cfg->app_path) {
                snprintf(err, errlen, "more than one app file: '%s' and '%s'", cfg->app_path, a);
                return -1;
            }
            cfg->app_path = a;
            continue;
        }
        /* --name=value or --name value */
        eq = strchr(a, '=');
        namelen = eq ? (size_t)(eq - a) : strlen(a);
        for (opt = 0; opt < OPT_COUNT; opt++)
            if (strlen(value_opts[opt]) == namelen && strncmp(a, value_opts[opt], namelen) == 0)
                break;
        if (opt == OPT_COUNT) {
            snprintf(err, errlen, "unknown option '%.*s' (see moonfcgi --help)", (int)namelen, a);
            return -1;
        }
        if (!eq && i + 1 >= argc) {
            snprintf(err, errlen, "option %s needs a value", value_opts[opt]);
            return -1;
        }
        if (set_value(cfg, opt, eq ? eq + 1 : argv[++i], err, errlen) < 0)
            return -1;
    }
    if (!cfg->app_path) {
        snprintf(err, errlen, "no app file given (usage: moonfcgi [OPTIONS] APP.lua)");
        return -1;
    }
    return 0;
}
