/*
 * Unit tests of src/listener.c: the FCGI_WEB_SERVER_ADDRS / --allow check
 * (mf_listener_allowed) for IPv4, IPv6 and IPv4-mapped IPv6 peers.
 */
#include "listener.h"
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

static struct sockaddr_in v4(const char *a)
{
    struct sockaddr_in s;

    memset(&s, 0, sizeof s);
    s.sin_family = AF_INET;
    s.sin_port = htons(40000);
    if (inet_pton(AF_INET, a, &s.sin_addr) != 1)
        CHECK(!"bad test address");
    return s;
}

static struct sockaddr_in6 v6(const char *a)
{
    struct sockaddr_in6 s;

    memset(&s, 0, sizeof s);
    s.sin6_family = AF_INET6;
    s.sin6_port = htons(40000);
    if (inet_pton(AF_INET6, a, &s.sin6_addr) != 1)
        CHECK(!"bad test address");
    return s;
}

static int allowed4(const char *list, const char *peer)
{
    struct sockaddr_in s = v4(peer);
    return mf_listener_allowed(list, (struct sockaddr *)&s);
}

static int allowed6(const char *list, const char *peer)
{
    struct sockaddr_in6 s = v6(peer);
    return mf_listener_allowed(list, (struct sockaddr *)&s);
}

static void no_list_allows_everyone(void)
{
    struct sockaddr_un un;

    CHECK_EQ(allowed4(NULL, "203.0.113.9"), 1);
    CHECK_EQ(allowed6(NULL, "2001:db8::9"), 1);
    /* The list is about TCP peers; a unix socket is guarded by its file mode. */
    memset(&un, 0, sizeof un);
    un.sun_family = AF_UNIX;
    CHECK_EQ(mf_listener_allowed("127.0.0.1", (struct sockaddr *)&un), 1);
}

static void ipv4(void)
{
    CHECK_EQ(allowed4("127.0.0.1", "127.0.0.1"), 1);
    CHECK_EQ(allowed4("127.0.0.1", "127.0.0.2"), 0);
    CHECK_EQ(allowed4("10.0.0.1,10.0.0.2,10.0.0.3", "10.0.0.3"), 1);
    CHECK_EQ(allowed4("10.0.0.1,10.0.0.2,10.0.0.3", "10.0.0.4"), 0);
    /* Exact addresses only: no prefixes, no names. */
    CHECK_EQ(allowed4("10.0.0.0", "10.0.0.1"), 0);
    CHECK_EQ(allowed4("10.0.0.0/8", "10.0.0.1"), 0);
    CHECK_EQ(allowed4("localhost", "127.0.0.1"), 0);
    CHECK_EQ(allowed4("127.0.0.10", "127.0.0.1"), 0);
    CHECK_EQ(allowed4("127.0.0.1", "127.0.0.10"), 0);
    /* An IPv6 entry never matches an IPv4 peer. */
    CHECK_EQ(allowed4("::1", "127.0.0.1"), 0);
    CHECK_EQ(allowed4("", "127.0.0.1"), 0);
    CHECK_EQ(allowed4(",,,", "127.0.0.1"), 0);
}

static void ipv6(void)
{
    CHECK_EQ(allowed6("::1", "::1"), 1);
    CHECK_EQ(allowed6("::1", "::2"), 0);
    /* Compared as addresses, not as strings. */
    CHECK_EQ(allowed6("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"), 1);
    CHECK_EQ(allowed6("2001:DB8::1", "2001:db8::1"), 1);
    CHECK_EQ(allowed6("127.0.0.1", "::1"), 0);
    CHECK_EQ(allowed6("10.0.0.1,2001:db8::2", "2001:db8::2"), 1);
}

/* A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d; they match the IPv4 entry. */
static void ipv4_mapped_ipv6(void)
{
    CHECK_EQ(allowed6("10.0.0.1", "::ffff:10.0.0.1"), 1);
    CHECK_EQ(allowed6("10.0.0.2", "::ffff:10.0.0.1"), 0);
    CHECK_EQ(allowed6("127.0.0.1,10.0.0.1", "::ffff:10.0.0.1"), 1);
    CHECK_EQ(allowed6("::ffff:10.0.0.1", "::ffff:10.0.0.1"), 1);
    /* Only the mapped prefix counts: an IPv4-compatible or other address is not IPv4. */
    CHECK_EQ(allowed6("10.0.0.1", "::10.0.0.1"), 0);
    CHECK_EQ(allowed6("10.0.0.1", "64:ff9b::10.0.0.1"), 0);
}

static void spaces_in_the_list(void)
{
    CHECK_EQ(allowed4(" 127.0.0.1", "127.0.0.1"), 1);
    CHECK_EQ(allowed4("127.0.0.1 ", "127.0.0.1"), 1);
    CHECK_EQ(allowed4("10.0.0.9 , 127.0.0.1 ,10.0.0.8", "127.0.0.1"), 1);
    CHECK_EQ(allowed4("10.0.0.9,\t127.0.0.1\t", "127.0.0.1"), 1);
    CHECK_EQ(allowed6("10.0.0.9,  ::1  ", "::1"), 1);
    CHECK_EQ(allowed6(" 10.0.0.1 ", "::ffff:10.0.0.1"), 1);
    CHECK_EQ(allowed4("127.0.0.1,", "127.0.0.1"), 1);
    CHECK_EQ(allowed4(",127.0.0.1", "127.0.0.1"), 1);
    CHECK_EQ(allowed4(" , ,127.0.0.1", "127.0.0.1"), 1);
    /* A space inside an address is not trimmed away. */
    CHECK_EQ(allowed4("127.0. 0.1", "127.0.0.1"), 0);
}

static void overlong_items_are_skipped(void)
{
    char list[512];

    /* Longer than any address: skipped without overflowing, and the next one still counts. */
    memset(list, '1', 300);
    strcpy(list + 300, ",127.0.0.1");
    CHECK_EQ(allowed4(list, "127.0.0.1"), 1);
    list[300] = '\0';
    CHECK_EQ(allowed4(list, "127.0.0.1"), 0);
    /* Padded with spaces beyond the item buffer: trimmed first, so it still matches. */
    memset(list, ' ', 100);
    strcpy(list + 100, "127.0.0.1");
    memset(list + 109, ' ', 100);
    list[209] = '\0';
    CHECK_EQ(allowed4(list, "127.0.0.1"), 1);
}

int main(void)
{
    static const struct unit_test tests[] = {
        {"no_list_allows_everyone", no_list_allows_everyone},
        {"ipv4", ipv4},
        {"ipv6", ipv6},
        {"ipv4_mapped_ipv6", ipv4_mapped_ipv6},
        {"spaces_in_the_list", spaces_in_the_list},
        {"overlong_items_are_skipped", overlong_items_are_skipped},
        {NULL, NULL},
    };
    return unit_run(tests);
}
