/*
 * Parsing and listening on the bench tools' addresses. See netaddr.h.
 */
#include "netaddr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int parse_port(const char *s, in_port_t *port)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 1 || v > 65535)
        return -1;
    *port = htons((uint16_t)v);
    return 0;
}

int mf_netaddr_parse(const char *spec, mf_netaddr_t *addr, char *err, size_t errlen)
{
    char host[64];
    const char *colon;
    size_t hlen;
    in_port_t port;

    memset(addr, 0, sizeof(*addr));
    if (strncmp(spec, "unix:", 5) == 0) {
        struct sockaddr_un *sun = (struct sockaddr_un *)&addr->ss;
        const char *path = spec + 5;
        size_t plen = strlen(path);

        if (plen == 0 || plen >= sizeof(sun->sun_path)) {
            snprintf(err, errlen, "unix socket path empty or longer than %zu bytes",
                     sizeof(sun->sun_path) - 1);
            return -1;
        }
        sun->sun_family = AF_UNIX;
        memcpy(sun->sun_path, path, plen + 1);
        addr->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + 1);
        return 0;
    }

    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');

        if (close == NULL || close[1] != ':') {
            snprintf(err, errlen, "expected [v6]:port in '%s'", spec);
            return -1;
        }
        hlen = (size_t)(close - spec - 1);
        colon = close + 1;
        spec++;
    } else {
        colon = strrchr(spec, ':');
        if (colon == NULL) {
            snprintf(err, errlen, "expected host:port, [v6]:port or unix:/path in '%s'", spec);
            return -1;
        }
        hlen = (size_t)(colon - spec);
    }
    if (hlen >= sizeof(host)) {
        snprintf(err, errlen, "host too long in '%s'", spec);
        return -1;
    }
    memcpy(host, spec, hlen);
    host[hlen] = '\0';
    if (parse_port(colon + 1, &port) < 0) {
        snprintf(err, errlen, "bad port '%s'", colon + 1);
        return -1;
    }
    if (hlen == 0 || strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");

    struct sockaddr_in *sin = (struct sockaddr_in *)&addr->ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&addr->ss;
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = port;
        addr->len = sizeof(*sin);
    } else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = port;
        addr->len = sizeof(*sin6);
    } else {
        snprintf(err, errlen, "'%s' is not a numeric address (names are not resolved)", host);
        return -1;
    }
    return 0;
}

int mf_netaddr_is_inet(const mf_netaddr_t *addr)
{
    return addr->ss.ss_family == AF_INET || addr->ss.ss_family == AF_INET6;
}

int mf_netaddr_listen(const mf_netaddr_t *addr, int backlog)
{
    int fd, one = 1, saved;

    fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (addr->ss.ss_family == AF_UNIX) {
        const struct sockaddr_un *sun = (const struct sockaddr_un *)&addr->ss;
        struct stat st;

        /* Only a socket is ever removed, so a typo cannot delete a regular file. */
        if (lstat(sun->sun_path, &st) == 0 && S_ISSOCK(st.st_mode))
            unlink(sun->sun_path);
    } else {
        /* A quick restart between benchmark runs must not fail on TIME_WAIT. */
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    }
    if (bind(fd, (const struct sockaddr *)&addr->ss, addr->len) < 0 || listen(fd, backlog) < 0)
        goto fail;
    return fd;

fail:
    saved = errno;
    close(fd);
    errno = saved;
    return -1;
}
