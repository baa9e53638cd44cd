/*
 * The command line (docs/api.md, "Command line") and the settings every module reads.
 */
#ifndef MF_CONFIG_H
#define MF_CONFIG_H

#include <stddef.h>

typedef struct mf_config {
    const char *app_path; /* as given on the command line */
    const char *listen;   /* --listen, or NULL */
    const char *http[8];  /* --http addresses */
    int nhttp;
    const char *http_root; /* --http-root, or NULL */
    int http_role;         /* --http-role: MF_RESPONDER (0: the default) or MF_AUTHORIZER */
    int workers;           /* 0: the number of CPUs */
    unsigned max_conns;
    unsigned max_reqs;
    size_t max_params;
    size_t max_body;
    double timeout;
    double idle_timeout;
    double read_timeout;
    double check_timeout; /* how long the app's top level may run in a check */
    const char *allow;    /* --allow, comma-separated, or NULL */
    unsigned socket_mode;
    const char *user;
    const char *pid_file;
    const char *shared[64]; /* --shared NAME:SIZE, as given */
    int nshared;
    int watch;
    int log_level;
    const char *resolver;    /* --resolver: name servers, comma-separated; NULL: resolv.conf */
    double resolver_timeout; /* --resolver-timeout: one look-up at most */
    double resolver_valid;   /* --resolver-valid: caps the answers' TTL; 0: no cap */
    int resolver_ipv6;       /* --resolver-ipv6: ask AAAA too */
    const char *resolv_conf; /* NULL: /etc/resolv.conf (tests point these elsewhere) */
    const char *hosts_file;  /* NULL: /etc/hosts */
    unsigned max_sockets;    /* --max-sockets: open outbound sockets per worker */
    double socket_timeout;   /* --socket-timeout: connect/send/read default */
    size_t socket_buffer;    /* --socket-buffer: what one socket may hold unread */
    const char *ssl_trusted; /* --ssl-trusted-certificate; NULL: the system bundle */
    int check;               /* --check: compile the app and exit */
    int action;              /* MF_CONFIG_SERVE, _HELP or _VERSION */
} mf_config_t;

enum { MF_CONFIG_SERVE = 0, MF_CONFIG_HELP = 1, MF_CONFIG_VERSION = 2 };

/* Fills cfg with the defaults of docs/api.md. */
void mf_config_defaults(mf_config_t *cfg);

/*
 * Parses argv into cfg. Returns 0, or -1 with a one-line message in err. The strings in cfg
 * point into argv.
 */
int mf_config_parse(mf_config_t *cfg, int argc, char **argv, char *err, size_t errlen);

/* Parses "1048576", "64K", "16M", "1G" (powers of 1024); returns -1 when malformed. */
int mf_config_parse_size(const char *s, size_t *out);

/* 1 when list is "IP", "IP:PORT" or "[V6]:PORT", comma-separated (--resolver), else 0. */
int mf_config_valid_servers(const char *list);

extern const char mf_config_usage[];

#endif
