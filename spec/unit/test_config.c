/*
 * Unit tests of src/config.c: the command line of docs/api.md, "Command line" (mf_config_parse)
 * and the size syntax (mf_config_parse_size).
 */
#include "config.h"
#include "log.h"
#include "unit.h"

#include <stdarg.h>
#include <stdint.h>
#include <string.h>

#define MAX_ARGS 16

static mf_config_t cfg;
static char err[256];

/* Parses "moonfcgi" followed by the NULL-terminated arguments, from the defaults. */
static int parse(const char *first, ...)
{
    char *argv[MAX_ARGS + 1];
    int argc = 0;
    va_list ap;
    const char *a;

    argv[argc++] = (char *)"moonfcgi";
    va_start(ap, first);
    for (a = first; a && argc < MAX_ARGS; a = va_arg(ap, const char *))
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    mf_config_defaults(&cfg);
    err[0] = '\0';
    return mf_config_parse(&cfg, argc, argv, err, sizeof err);
}

static void defaults(void)
{
    mf_config_defaults(&cfg);
    CHECK_EQ(cfg.max_conns, 1024);
    CHECK_EQ(cfg.max_reqs, 1024);
    CHECK_EQ(cfg.max_params, (size_t)1024 * 1024);
    CHECK_EQ(cfg.max_body, (size_t)16 * 1024 * 1024);
    CHECK(cfg.timeout == 60 && cfg.idle_timeout == 60 && cfg.read_timeout == 30);
    CHECK(cfg.check_timeout == 10);
    CHECK_EQ(cfg.socket_mode, 0660);
    CHECK_EQ(cfg.log_level, MF_LOG_INFO);
    CHECK_EQ(cfg.workers, 0);
    CHECK(cfg.listen == NULL && cfg.allow == NULL && cfg.app_path == NULL);
    CHECK_EQ(cfg.action, MF_CONFIG_SERVE);
    CHECK_EQ(parse("app.lua", NULL), 0);
    CHECK(strcmp(cfg.app_path, "app.lua") == 0);
    CHECK_EQ(err[0], '\0');
}

static void sizes(void)
{
    static const struct {
        const char *s;
        int ok;
        unsigned long long v;
    } cases[] = {
        {"0", 1, 0},
        {"1048576", 1, 1048576},
        {"64K", 1, 64 * 1024},
        {"64k", 1, 64 * 1024},
        {"16M", 1, 16ull << 20},
        {"16m", 1, 16ull << 20},
        {"1G", 1, 1ull << 30},
        {"2g", 1, 2ull << 30},
        {"1KiB", 1, 1024},
        {"3MiB", 1, 3ull << 20},
        {"1gib", 1, 1ull << 30},
        {"", 0, 0},
        {"K", 0, 0},
        {"-1", 0, 0},
        {"+1", 0, 0},
        {" 1", 0, 0},
        {"1 ", 0, 0},
        {"1X", 0, 0},
        {"1KB", 0, 0},
        {"1Ki", 0, 0},
        {"1iB", 0, 0},
        {"1KK", 0, 0},
        {"1.5M", 0, 0},
        {"0x10", 0, 0},
        {"99999999999999999999", 0, 0},           /* over 2^64 */
        {"17179869184G", 0, 0},                   /* 2^34 G = 2^64 */
        {"17179869183G", 1, 0ull - (1ull << 30)}, /* 2^64 - 2^30 just fits */
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t v = 12345;
        int rc = mf_config_parse_size(cases[i].s, &v);
        if (cases[i].ok) {
            CHECK_EQ(rc, 0);
            CHECK_EQ((unsigned long long)v, cases[i].v);
        } else {
            CHECK_EQ(rc, -1);
            CHECK_EQ(v, 12345); /* untouched on failure */
        }
        if ((rc == 0) != cases[i].ok)
            fprintf(stderr, "  size case '%s'\n", cases[i].s);
    }
}

static void size_options(void)
{
    CHECK_EQ(parse("--max-params", "64K", "--max-body=2M", "a.lua", NULL), 0);
    CHECK_EQ(cfg.max_params, (size_t)65536);
    CHECK_EQ(cfg.max_body, (size_t)2 << 20);
    /* The largest a 31-bit params offset allows, and one byte more. */
    CHECK_EQ(parse("--max-params", "2147483647", "a.lua", NULL), 0);
    CHECK_EQ(cfg.max_params, (size_t)0x7fffffff);
    CHECK_EQ(parse("--max-params", "2147483648", "a.lua", NULL), -1);
    CHECK(strstr(err, "--max-params") != NULL);
    CHECK_EQ(parse("--max-params", "2G", "a.lua", NULL), -1);
    CHECK_EQ(parse("--max-params", "0", "a.lua", NULL), -1);
    CHECK_EQ(parse("--max-body", "2G", "a.lua", NULL), -1);
    CHECK_EQ(parse("--max-body", "1G", "a.lua", NULL), 0);
    CHECK_EQ(cfg.max_body, (size_t)1 << 30);
    CHECK_EQ(parse("--max-body", "lots", "a.lua", NULL), -1);
    CHECK(strcmp(err, "invalid value for --max-body: 'lots'") == 0);
}

static void numbers_and_seconds(void)
{
    CHECK_EQ(parse("--workers", "4", "--max-conns", "10", "--max-reqs", "65535", "a.lua", NULL), 0);
    CHECK_EQ(cfg.workers, 4);
    CHECK_EQ(cfg.max_conns, 10);
    CHECK_EQ(cfg.max_reqs, 65535);
    CHECK_EQ(parse("--workers", "0", "a.lua", NULL), -1);
    CHECK_EQ(parse("--workers", "1025", "a.lua", NULL), -1);
    CHECK_EQ(parse("--workers", "-1", "a.lua", NULL), -1);
    CHECK_EQ(parse("--workers", "4x", "a.lua", NULL), -1);
    CHECK_EQ(parse("--workers", "4294967300", "a.lua", NULL), -1);
    CHECK_EQ(parse("--max-reqs", "65536", "a.lua", NULL), -1);
    CHECK_EQ(parse("--max-reqs", "0", "a.lua", NULL), -1);
    CHECK_EQ(parse("--max-conns", "1000001", "a.lua", NULL), -1);

    CHECK_EQ(
        parse("--timeout", "1.5", "--idle-timeout", ".25", "--read-timeout=1e6", "a.lua", NULL), 0);
    CHECK(cfg.timeout == 1.5 && cfg.idle_timeout == 0.25 && cfg.read_timeout == 1e6);
    CHECK_EQ(parse("--timeout", "0", "a.lua", NULL), -1);
    CHECK_EQ(parse("--timeout", "-1", "a.lua", NULL), -1);
    CHECK_EQ(parse("--timeout", "1e7", "a.lua", NULL), -1);
    CHECK_EQ(parse("--timeout", "nan", "a.lua", NULL), -1);
    CHECK_EQ(parse("--timeout", "inf", "a.lua", NULL), -1);
    CHECK_EQ(parse("--timeout", "1s", "a.lua", NULL), -1);
    CHECK_EQ(parse("--timeout", ".", "a.lua", NULL), -1);
    CHECK_EQ(parse("--check-timeout", "2.5", "a.lua", NULL), 0);
    CHECK(cfg.check_timeout == 2.5);
    CHECK_EQ(parse("--check-timeout", "0", "a.lua", NULL), -1);
    CHECK_EQ(parse("--timeout", "", "a.lua", NULL), -1);
    CHECK(strcmp(err, "invalid value for --timeout: ''") == 0);
}

static void strings_and_modes(void)
{
    CHECK_EQ(parse("--listen", "unix:/run/app.sock", "--allow", "127.0.0.1,::1", "--user",
                   "www:www", "--socket-mode", "0600", "--log-level", "debug", "--watch", "--check",
                   "a.lua", NULL),
             0);
    CHECK(strcmp(cfg.listen, "unix:/run/app.sock") == 0);
    CHECK(strcmp(cfg.allow, "127.0.0.1,::1") == 0);
    CHECK(strcmp(cfg.user, "www:www") == 0);
    CHECK_EQ(cfg.socket_mode, 0600);
    CHECK_EQ(cfg.log_level, MF_LOG_DEBUG);
    CHECK_EQ(cfg.watch, 1);
    CHECK_EQ(cfg.check, 1);
    /* An option given twice: the last one counts. */
    CHECK_EQ(parse("--listen=127.0.0.1:1", "--listen", "[::1]:2", "a.lua", NULL), 0);
    CHECK(strcmp(cfg.listen, "[::1]:2") == 0);
    /* The value after '=' may hold '='. */
    CHECK_EQ(parse("--user=a=b", "a.lua", NULL), 0);
    CHECK(strcmp(cfg.user, "a=b") == 0);
    CHECK_EQ(parse("--listen=", "a.lua", NULL), -1);
    CHECK(strcmp(err, "invalid value for --listen: ''") == 0);
    CHECK_EQ(parse("--allow", "", "a.lua", NULL), -1);
    CHECK_EQ(parse("--user=", "a.lua", NULL), -1);
    CHECK_EQ(parse("--socket-mode", "8", "a.lua", NULL), -1);
    CHECK_EQ(parse("--socket-mode", "17777", "a.lua", NULL), -1);
    CHECK_EQ(parse("--socket-mode", "", "a.lua", NULL), -1);
    CHECK_EQ(parse("--socket-mode", "0640x", "a.lua", NULL), -1);
    CHECK_EQ(parse("--log-level", "verbose", "a.lua", NULL), -1);
    CHECK_EQ(parse("--log-level", "error", "a.lua", NULL), 0);
    CHECK_EQ(cfg.log_level, MF_LOG_ERROR);
}

static void missing_values(void)
{
    static const char *const opts[] = {
        "--listen",      "--workers", "--max-conns",    "--max-reqs",     "--max-params",
        "--max-body",    "--timeout", "--idle-timeout", "--read-timeout", "--allow",
        "--socket-mode", "--user",    "--log-level",
    };

    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        char want[128];
        CHECK_EQ(parse("a.lua", opts[i], NULL), -1);
        snprintf(want, sizeof want, "option %s needs a value", opts[i]);
        CHECK(strcmp(err, want) == 0);
    }
    /* The next argument is the value, even when it looks like an option. */
    CHECK_EQ(parse("--user", "--watch", "a.lua", NULL), 0);
    CHECK(strcmp(cfg.user, "--watch") == 0);
    CHECK_EQ(cfg.watch, 0);
}

static void unknown_options_and_app_paths(void)
{
    CHECK_EQ(parse("--frobnicate", "a.lua", NULL), -1);
    CHECK(strcmp(err, "unknown option '--frobnicate' (see moonfcgi --help)") == 0);
    CHECK_EQ(parse("--frob=1", "a.lua", NULL), -1);
    CHECK(strcmp(err, "unknown option '--frob' (see moonfcgi --help)") == 0);
    CHECK_EQ(parse("-x", "a.lua", NULL), -1);
    CHECK(strstr(err, "'-x'") != NULL);
    CHECK_EQ(parse("--list", "x", "a.lua", NULL), -1); /* no prefix matching */
    CHECK_EQ(parse("--watch=1", "a.lua", NULL), -1);   /* a flag takes no value */
    CHECK_EQ(parse(NULL), -1);
    CHECK(strstr(err, "no app file given") != NULL);
    CHECK_EQ(parse("--watch", NULL), -1);
    CHECK_EQ(parse("a.lua", "b.lua", NULL), -1);
    CHECK(strcmp(err, "more than one app file: 'a.lua' and 'b.lua'") == 0);
    CHECK_EQ(parse("-", NULL), 0); /* a lone dash is a file name */
    CHECK(strcmp(cfg.app_path, "-") == 0);
}

static void exit_paths(void)
{
    CHECK_EQ(parse("--help", NULL), 0);
    CHECK_EQ(cfg.action, MF_CONFIG_HELP);
    CHECK_EQ(parse("-h", NULL), 0);
    CHECK_EQ(cfg.action, MF_CONFIG_HELP);
    CHECK_EQ(parse("--version", NULL), 0);
    CHECK_EQ(cfg.action, MF_CONFIG_VERSION);
    CHECK_EQ(parse("-V", NULL), 0);
    CHECK_EQ(cfg.action, MF_CONFIG_VERSION);
    /* --help stops the parse: what follows is not looked at. */
    CHECK_EQ(parse("a.lua", "--help", "--bogus", "b.lua", NULL), 0);
    CHECK_EQ(cfg.action, MF_CONFIG_HELP);
    /* What comes before it is. */
    CHECK_EQ(parse("--bogus", "--help", NULL), -1);
    CHECK_EQ(parse("--check", "a.lua", NULL), 0);
    CHECK_EQ(cfg.check, 1);
    CHECK_EQ(cfg.action, MF_CONFIG_SERVE);
    CHECK(strstr(mf_config_usage, "--max-params") != NULL);
    CHECK(strstr(mf_config_usage, "usage: moonfcgi") == mf_config_usage);
}

/* The resolver's options (cosocket.md section 4). */
static void resolver_options(void)
{
    CHECK_EQ(parse("a.lua", NULL), 0);
    CHECK(cfg.resolver == NULL);
    CHECK(cfg.resolver_timeout == 30);
    CHECK(cfg.resolver_valid == 0);
    CHECK_EQ(cfg.resolver_ipv6, 1);
    CHECK_EQ(parse("--resolver", "127.0.0.1:5353,[::1]:53,10.0.0.1", "--resolver-timeout", "0.5",
                   "--resolver-valid=10", "--resolver-ipv6", "off", "a.lua", NULL),
             0);
    CHECK(strcmp(cfg.resolver, "127.0.0.1:5353,[::1]:53,10.0.0.1") == 0);
    CHECK(cfg.resolver_timeout == 0.5);
    CHECK(cfg.resolver_valid == 10);
    CHECK_EQ(cfg.resolver_ipv6, 0);
    CHECK_EQ(parse("--resolver-ipv6", "on", "a.lua", NULL), 0);
    CHECK_EQ(cfg.resolver_ipv6, 1);
    CHECK_EQ(parse("--resolver", "dns.example", "a.lua", NULL), -1);
    CHECK(strcmp(err, "invalid value for --resolver: 'dns.example'") == 0);
    CHECK_EQ(parse("--resolver", "", "a.lua", NULL), -1);
    CHECK_EQ(parse("--resolver", "127.0.0.1,", "a.lua", NULL), -1);
    CHECK_EQ(parse("--resolver", "127.0.0.1,,10.0.0.1", "a.lua", NULL), -1);
    CHECK_EQ(parse("--resolver", "127.0.0.1:99999", "a.lua", NULL), -1);
    CHECK_EQ(parse("--resolver-timeout", "0", "a.lua", NULL), -1);
    CHECK_EQ(parse("--resolver-valid", "-1", "a.lua", NULL), -1);
    CHECK_EQ(parse("--resolver-ipv6", "yes", "a.lua", NULL), -1);
}

/* The outbound sockets' options (cosocket.md section 2, issue 10's limits). */
static void socket_options(void)
{
    CHECK_EQ(parse("a.lua", NULL), 0);
    CHECK_EQ(cfg.max_sockets, 4096);
    CHECK(cfg.socket_timeout == 60);
    CHECK(cfg.socket_buffer == 16 * 1024 * 1024);
    CHECK(cfg.ssl_trusted == NULL);
    CHECK_EQ(parse("--max-sockets", "10", "--socket-timeout", "2.5", "--socket-buffer", "64k",
                   "--ssl-trusted-certificate", "/tmp/ca.pem", "a.lua", NULL),
             0);
    CHECK_EQ(cfg.max_sockets, 10);
    CHECK(cfg.socket_timeout == 2.5);
    CHECK(cfg.socket_buffer == 64 * 1024);
    CHECK(strcmp(cfg.ssl_trusted, "/tmp/ca.pem") == 0);
    CHECK_EQ(parse("--max-sockets", "0", "a.lua", NULL), -1);
    CHECK_EQ(parse("--socket-timeout", "0", "a.lua", NULL), -1);
    CHECK_EQ(parse("--socket-buffer", "100", "a.lua", NULL), -1);
    CHECK_EQ(parse("--ssl-trusted-certificate", "", "a.lua", NULL), -1);
    CHECK(strstr(mf_config_usage, "--max-sockets") != NULL);
}

static void short_error_buffer(void)
{
    char small[8];
    char *argv[] = {(char *)"moonfcgi", (char *)"--frobnicate", NULL};

    memset(small, 'x', sizeof small);
    mf_config_defaults(&cfg);
    CHECK_EQ(mf_config_parse(&cfg, 2, argv, small, sizeof small), -1);
    CHECK_EQ(small[7], '\0');
    CHECK(strcmp(small, "unknown") == 0);
}

/* --shared NAME:SIZE is repeatable; names are checked and unique. */
static void shared_dicts(void)
{
    CHECK_EQ(parse("--shared", "cache:64m", "--shared=limits:1m", "app.lua", NULL), 0);
    CHECK_EQ(cfg.nshared, 2);
    CHECK(strcmp(cfg.shared[0], "cache:64m") == 0 && strcmp(cfg.shared[1], "limits:1m") == 0);
    CHECK_EQ(parse("--shared", "cache:64m", "--shared", "cache:1m", "app.lua", NULL), -1);
    CHECK(strstr(err, "declared twice") != NULL);
    CHECK_EQ(parse("--shared", "ca:1m", "--shared", "cache:1m", "app.lua", NULL), 0);
    CHECK_EQ(parse("--shared", "cache", "app.lua", NULL), -1);
    CHECK(strstr(err, "NAME:SIZE") != NULL);
    CHECK_EQ(parse("--shared", "bad-name:1m", "app.lua", NULL), -1);
    CHECK_EQ(parse("--shared", "c:1k", "app.lua", NULL), -1);
    CHECK(strstr(err, "32k") != NULL);
    CHECK_EQ(parse("--shared", "app.lua", NULL), -1);
}

int main(void)
{
    static const struct unit_test tests[] = {
        {"defaults", defaults},
        {"shared_dicts", shared_dicts},
        {"sizes", sizes},
        {"size_options", size_options},
        {"numbers_and_seconds", numbers_and_seconds},
        {"strings_and_modes", strings_and_modes},
        {"missing_values", missing_values},
        {"unknown_options_and_app_paths", unknown_options_and_app_paths},
        {"exit_paths", exit_paths},
        {"resolver_options", resolver_options},
        {"socket_options", socket_options},
        {"short_error_buffer", short_error_buffer},
        {NULL, NULL},
    };
    return unit_run(tests);
}
