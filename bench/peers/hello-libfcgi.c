/*
 * mf-peer-libfcgi: hello world on the reference FastCGI library (fcgiapp.h), the point of
 * comparison most C FastCGI applications are built on.
 *
 * libfcgi serves one connection per thread and cannot multiplex. A BEGIN_REQUEST that
 * arrives while a request is still being read gets FCGI_CANT_MPX_CONN, but bytes already
 * buffered past the current request are dropped by FCGX_Finish_r: pipelined or multiplexed
 * requests (mf-bench -m 2 and up) go unanswered, or the connection closes on the broken
 * framing. With FCGI_KEEP_CONN a thread stays on its connection until the client closes it,
 * so a keep-conn benchmark needs --threads at least as large as the load generator's
 * connection count, or the surplus connections are never served.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fcgiapp.h>

#define MAX_THREADS 4096

static const char hello[] = "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nHello, world!\n";

static int listen_sock;
static atomic_ullong served;

static void *worker(void *arg)
{
    FCGX_Request req;
    char sink[16384];

    (void)arg;
    if (FCGX_InitRequest(&req, listen_sock, 0) != 0)
        return NULL;
    /*
     * No accept mutex as in libfcgi's threaded example: Linux accept() is thread-safe, and a
     * mutex would be held by a thread blocked reading its kept connection.
     */
    while (FCGX_Accept_r(&req) >= 0) {
        /*
         * Read the body as a real application would; FCGX_Finish_r does not drain it, and
         * leftover STDIN on a kept connection would precede the next request.
         */
        while (FCGX_GetStr(sink, sizeof(sink), req.in) > 0)
            ;
        FCGX_PutStr(hello, (int)sizeof(hello) - 1, req.out);
        FCGX_Finish_r(&req);
        atomic_fetch_add(&served, 1);
    }
    return NULL;
}

static void usage(FILE *f)
{
    fputs("usage: mf-peer-libfcgi --listen ADDR [--threads N]\n"
          "  --listen ADDR   host:port or unix:/path (libfcgi has no IPv6 listener)\n"
          "  --threads N     threads, each serving one connection at a time (default 2)\n"
          "  -h, --help\n",
          f);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"threads", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *listen = NULL, *path;
    long nthreads = 2;
    pthread_t *threads;
    sigset_t set;
    char *end;
    int ch, sig;

    while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'l': listen = optarg; break;
        case 't':
            errno = 0;
            nthreads = strtol(optarg, &end, 10);
            if (errno != 0 || *end != '\0' || nthreads < 1 || nthreads > MAX_THREADS) {
                fprintf(stderr, "mf-peer-libfcgi: bad --threads '%s'\n", optarg);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc || listen == NULL) {
        usage(stderr);
        return 2;
    }
    /* FCGX_OpenSocket takes "host:port", ":port" (all interfaces) or a unix socket path. */
    path = strncmp(listen, "unix:", 5) == 0 ? listen + 5 : listen;
    if (listen[0] == '[') {
        fprintf(stderr, "mf-peer-libfcgi: libfcgi cannot listen on IPv6\n");
        return 2;
    }

    /* Only the main thread takes SIGTERM and SIGINT, in sigwait below. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (FCGX_Init() != 0) {
        fprintf(stderr, "mf-peer-libfcgi: FCGX_Init failed\n");
        return 1;
    }
    listen_sock = FCGX_OpenSocket(path, 4096);
    if (listen_sock < 0) {
        fprintf(stderr, "mf-peer-libfcgi: cannot listen on %s\n", listen);
        return 1;
    }
    threads = calloc((size_t)nthreads, sizeof(*threads));
    if (threads == NULL)
        return 1;
    for (long i = 0; i < nthreads; i++) {
        if (pthread_create(&threads[i], NULL, worker, NULL) != 0) {
            fprintf(stderr, "mf-peer-libfcgi: pthread_create failed\n");
            return 1;
        }
    }
    sigwait(&set, &sig);
    /* Threads block in accept or read; exiting the process is the clean way to stop them. */
    fprintf(stderr, "mf-peer-libfcgi: served %llu requests\n", (unsigned long long)served);
    return 0;
}
