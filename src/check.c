/*
 * The check process. Nothing of the app may run in the master, which supervises the workers:
 * an app whose top level calls os.exit, crashes through the FFI or never returns would take
 * supervision down with it. So the master forks a child with no listening socket and no
 * other descriptor of its own, the child loads the app as a worker would (each file read
 * once and compiled from that buffer, runtime.lua) and sends back over a pipe one message:
 *
 *   'E', 8-byte length, the error          or          'S', 8-byte length, the snapshot
 *
 * then exits. The master reads the pipe from its loop, and decides when it reaps the child: a
 * complete message is the answer; a child that died without one (a crash, exit() from the
 * FFI) or that was killed at the timeout is an error named for what happened.
 */
#include "check.h"
#include "log.h"
#include "vm.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#define MSG_HEAD 9
/* Bounds what the master buffers for one check: far more than any app's own sources. */
#define MAX_MESSAGE ((size_t)64 << 20)

struct mf_check {
    pid_t pid;
    int fd; /* the pipe's read end */
    struct event rd, timer;
    double timeout;
    int timed_out, too_big;
    char *buf;
    size_t len, cap;
    mf_check_done_fn done;
    void *arg;
};

static int write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Leaves the child fd 0 on /dev/null, 1 and 2 as they were, the pipe on 3, nothing else. */
static int close_inherited(int wfd)
{
    int nul;

    if (wfd != 3) {
        if (dup3(wfd, 3, O_CLOEXEC) < 0)
            return -1;
    }
    if (close_range(4, ~0U, 0) < 0) {
        long max = sysconf(_SC_OPEN_MAX);
        for (long fd = 4; fd < (max > 0 && max < 65536 ? max : 65536); fd++)
            close((int)fd);
    }
    /* fd 0 is the listening socket under spawn-fcgi: the app must not accept on it. */
    nul = open("/dev/null", O_RDONLY);
    if (nul > 0) {
        dup2(nul, 0);
        close(nul);
    }
    return 0;
}

/* The child side of fork: loads the app, reports, exits. Never returns. */
static void child_main(const char *app_path, int wfd, const sigset_t *mask, pid_t parent)
{
    char err[4096], head[MSG_HEAD], *snap = NULL;
    size_t len = 0;
    uint64_t n;
    int failed;

    /* The parent's handlers (libevent's) would write to the parent's signal pipe. */
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction sa;
        if (sigaction(sig, NULL, &sa) == 0 && sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN)
            signal(sig, SIG_DFL);
    }
    sigprocmask(SIG_SETMASK, mask, NULL);
    /* A check does not outlive the master that waits for it. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent || close_inherited(wfd) < 0)
        _exit(1);
    mf_log_set_tag("check");
    failed = mf_vm_check_here(app_path, &snap, &len, err, sizeof err);
    if (failed)
        len = strlen(err);
    head[0] = failed ? 'E' : 'S';
    n = len;
    memcpy(head + 1, &n, 8);
    if (write_all(3, head, MSG_HEAD) < 0 || write_all(3, failed ? err : snap, len) < 0)
        _exit(1);
    /* _exit: the app's atexit handlers and __gc finalizers have nothing to say about it. */
    _exit(0);
}

/* Reads what the child sent so far; returns 1 at the end of the pipe. */
static int drain(mf_check_t *c)
{
    char tmp[65536];

    for (;;) {
        ssize_t n = read(c->fd, tmp, sizeof tmp);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == EAGAIN ? 0 : 1;
        if (n == 0)
            return 1;
        if (c->too_big || c->len + (size_t)n > MAX_MESSAGE) {
            c->too_big = 1;
            continue;
        }
        if (c->len + (size_t)n > c->cap) {
            size_t cap = c->cap ? c->cap : 65536;
            char *b;
            while (cap < c->len + (size_t)n)
                cap *= 2;
            if (!(b = realloc(c->buf, cap))) {
                c->too_big = 1;
                continue;
            }
            c->buf = b;
            c->cap = cap;
        }
        memcpy(c->buf + c->len, tmp, (size_t)n);
        c->len += (size_t)n;
    }
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    mf_check_t *c = arg;

    (void)fd;
    (void)what;
    if (drain(c))
        event_del(&c->rd);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    mf_check_t *c = arg;

    (void)fd;
    (void)what;
    c->timed_out = 1;
    kill(c->pid, SIGKILL);
}

mf_check_t *mf_check_start(struct event_base *base, const char *app_path, double timeout,
                           mf_check_done_fn done, void *arg)
{
    mf_check_t *c = calloc(1, sizeof *c);
    int fds[2];
    sigset_t all, old;
    pid_t parent = getpid();
    struct timeval tv;

    if (!c)
        return NULL;
    if (pipe2(fds, O_CLOEXEC) < 0) {
        free(c);
        return NULL;
    }
    /* Until the child has reset the parent's handlers, a signal would run them there. */
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    c->pid = fork();
    if (c->pid == 0) {
        close(fds[0]);
        child_main(app_path, fds[1], &old, parent);
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    close(fds[1]);
    if (c->pid < 0) {
        int e = errno;
        close(fds[0]);
        free(c);
        errno = e;
        return NULL;
    }
    c->fd = fds[0];
    c->timeout = timeout;
    c->done = done;
    c->arg = arg;
    evutil_make_socket_nonblocking(c->fd);
    event_assign(&c->rd, base, c->fd, EV_READ | EV_PERSIST, on_read, c);
    evtimer_assign(&c->timer, base, on_timeout, c);
    event_add(&c->rd, NULL);
    tv.tv_sec = (time_t)timeout;
    tv.tv_usec = (suseconds_t)((timeout - (double)tv.tv_sec) * 1e6);
    evtimer_add(&c->timer, &tv);
    return c;
}

static void release(mf_check_t *c)
{
    event_del(&c->rd);
    event_del(&c->timer);
    close(c->fd);
    free(c->buf);
    free(c);
}

int mf_check_reaped(mf_check_t *c, pid_t pid, int status)
{
    mf_check_result_t r = {0, NULL, NULL, 0};
    char msg[512];
    uint64_t n = 0;
    int whole;

    if (pid != c->pid)
        return 0;
    /* The child wrote everything before it exited; the pipe keeps it. */
    drain(c);
    if (c->len >= MSG_HEAD)
        memcpy(&n, c->buf + 1, 8);
    whole = !c->too_big && c->len >= MSG_HEAD && n == c->len - MSG_HEAD;
    if (c->timed_out) {
        snprintf(msg, sizeof msg,
                 "the app's top level did not finish within %g s (--check-timeout; an endless "
                 "loop?): its check process was killed",
                 c->timeout);
        r.error = msg;
    } else if (whole && c->buf[0] == 'S' && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        r.ok = 1;
        r.snapshot = c->buf + MSG_HEAD;
        r.len = c->len - MSG_HEAD;
    } else if (whole && c->buf[0] == 'E') {
        /* The message is text the child wrote: make it a string. */
        if (c->len == c->cap) {
            char *b = realloc(c->buf, c->len + 1);
            if (b)
                c->buf = b;
            else
                c->len--;
        }
        c->buf[c->len] = '\0';
        r.error = c->buf + MSG_HEAD;
    } else if (c->too_big) {
        r.error = "the app's files are larger than a check may keep (64 MiB)";
    } else if (WIFSIGNALED(status)) {
        snprintf(msg, sizeof msg,
                 "the app's top level crashed its check process (signal %d, %s) before it "
                 "returned",
                 WTERMSIG(status), strsignal(WTERMSIG(status)));
        r.error = msg;
    } else {
        snprintf(msg, sizeof msg,
                 "the app's top level ended its check process (exit status %d) before it "
                 "returned",
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        r.error = msg;
    }
    c->done(c->arg, &r);
    release(c);
    return 1;
}

void mf_check_cancel(mf_check_t *c)
{
    kill(c->pid, SIGKILL);
    release(c);
}

void mf_check_forget(mf_check_t *c)
{
    release(c);
}

/* mf_check_run's loop. */
typedef struct run {
    struct event_base *base;
    mf_check_t *c;
    int ok;
    char *snapshot;
    size_t len;
    char *err;
    size_t errlen;
} run_t;

static void on_run_done(void *arg, const mf_check_result_t *r)
{
    run_t *run = arg;

    run->c = NULL;
    run->ok = r->ok;
    if (r->ok) {
        run->snapshot = malloc(r->len ? r->len : 1);
        if (run->snapshot) {
            memcpy(run->snapshot, r->snapshot, r->len);
            run->len = r->len;
        } else {
            run->ok = 0;
            snprintf(run->err, run->errlen, "out of memory");
        }
    } else {
        snprintf(run->err, run->errlen, "%s", r->error);
    }
    event_base_loopbreak(run->base);
}

static void on_run_sigchld(evutil_socket_t sig, short what, void *arg)
{
    run_t *run = arg;
    int st;
    pid_t pid;

    (void)sig;
    (void)what;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
        if (run->c)
            mf_check_reaped(run->c, pid, st);
}

int mf_check_run(const char *app_path, double timeout, char **snapshot, size_t *len, char *err,
                 size_t errlen)
{
    run_t run = {NULL, NULL, 0, NULL, 0, err, errlen};
    struct event *sigchld = NULL;

    *snapshot = NULL;
    if (!(run.base = event_base_new()) ||
        !(sigchld = evsignal_new(run.base, SIGCHLD, on_run_sigchld, &run)) ||
        evsignal_add(sigchld, NULL) < 0) {
        snprintf(err, errlen, "cannot start the check: out of memory");
    } else if (!(run.c = mf_check_start(run.base, app_path, timeout, on_run_done, &run))) {
        snprintf(err, errlen, "cannot start the check process: %s", strerror(errno));
    } else {
        event_base_dispatch(run.base);
    }
    if (sigchld)
        event_free(sigchld);
    if (run.base)
        event_base_free(run.base);
    if (!run.ok)
        return 1;
    *snapshot = run.snapshot;
    *len = run.len;
    return 0;
}
