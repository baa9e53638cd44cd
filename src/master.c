/*
 * The master: binds (or inherits) the listening sockets, drops privileges, forks the workers
 * and supervises them. It does no request work. A worker that exits or dies is replaced at
 * once (with a back-off when workers die in a loop); a worker whose loop stops ticking (a
 * handler that never yields) is killed and replaced; the listening sockets stay open in the
 * master throughout, so connections wait in the backlog instead of being refused.
 */
#include "master.h"
#include "check.h"
#include "listener.h"
#include "log.h"
#include "shdict.h"
#include "snapshot.h"
#include "status.h"
#include "vm.h"
#include "watch.h"
#include "worker.h"

#include <errno.h>
#include <grp.h>
#include <malloc.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>

/* A worker whose loop has not ticked for --timeout plus this long is stuck. */
#define STUCK_GRACE 2.0
/* A worker that dies sooner than this after it started counts as dying in a loop. */
#define QUICK_DEATH 1.0
#define MAX_BACKOFF 5.0

typedef struct worker_proc {
    pid_t pid;
    int quick_deaths;
    double respawn_at; /* when to start it again; 0: running or not needed */
    double killed_at;  /* SIGKILL sent because it was stuck */
} worker_proc_t;

typedef struct master {
    const mf_config_t *cfg;
    mf_listen_set_t *set;
    struct event_base *base;
    mf_shared_t *shared;
    worker_proc_t *procs;
    int n;
    int stopping;
    double stop_deadline;
    int exit_status;
    mf_watch_t *watch;
    mf_snapshot_pub_t snap; /* the last version that passed its check, for the workers */
    mf_check_t *check;      /* the check of a reload, while it runs */
    const char *check_why, *recheck_why; /* check_why NULL: the check at start */
    int started;                         /* the first version passed its check */
    struct event sigchld, sigterm, sigint, sighup, sigusr1, tick;
} master_t;

static char worker_tag[32];

/* The child side of fork: becomes worker number i + 1 and never returns. */
static void worker_main(master_t *m, int i, const sigset_t *mask)
{
    static const int sigs[] = {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGUSR1};
    char err[512];
    mf_worker_t *w;
    int status;

    /* The master's handlers write to the master's signal pipe: not ours. */
    for (size_t k = 0; k < sizeof sigs / sizeof sigs[0]; k++)
        signal(sigs[k], SIG_DFL);
    /* The master's event base is not ours: give it its own epoll set and signal pipe, so
     * that freeing it cannot touch the master's, then free it. */
    event_reinit(m->base);
    mf_watch_free(m->watch); /* after the reinit: its events are in the child's set now */
    m->watch = NULL;
    if (m->check)
        mf_check_forget(m->check);
    m->check = NULL;
    event_base_free(m->base);
    m->base = NULL;
    /* Workers do not outlive their master. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    snprintf(worker_tag, sizeof worker_tag, "worker %d", i + 1);
    mf_log_set_tag(worker_tag);
    /* Request bodies and their Lua strings are often a few MiB: serve such blocks from the
     * heap instead of a fresh mmap (page faults and zeroing) for each request. */
    mallopt(M_MMAP_THRESHOLD, 8 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 32 * 1024 * 1024);
    w = mf_worker_new(m->cfg, i + 1);
    if (!w || mf_worker_catch_signals(w) < 0) {
        mf_log_error("cannot create the worker");
        _exit(1);
    }
    w->shared = m->shared;
    w->slot = &m->shared->slots[i];
    w->slot->heartbeat = mf_status_clock();
    /* Our own handlers are in place: signals that came meanwhile are delivered now. */
    sigprocmask(SIG_SETMASK, mask, NULL);
    for (int k = 0; k < m->set->n; k++) {
        if (mf_listener_attach(w, m->set->fds[k], m->set->http[k], m->cfg->allow, err, sizeof err) <
            0) {
            mf_log_error("%s", err);
            _exit(1);
        }
    }
    status = mf_vm_run(w, m->cfg->app_path);
    mf_worker_free(w);
    /* exit, not _exit: LeakSanitizer checks the worker in the sanitizer build. */
    exit(status);
}

static void spawn(master_t *m, int i)
{
    sigset_t all, old;
    pid_t pid;
    mf_worker_slot_t *slot = &m->shared->slots[i];

    /* Until the child has its own handlers, a signal sent to it would run the master's
     * handler there and be lost: keep every signal blocked across the fork. */
    memset((void *)slot, 0, sizeof *slot);
    slot->started = mf_status_clock();
    slot->heartbeat = slot->started;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    pid = fork();
    if (pid == 0)
        worker_main(m, i, &old);
    sigprocmask(SIG_SETMASK, &old, NULL);

    if (pid < 0) {
        mf_log_error("fork failed: %s; retrying", strerror(errno));
        m->procs[i].respawn_at = mf_status_clock() + 1.0;
        return;
    }
    slot->pid = pid;
    m->procs[i].pid = pid;
    m->procs[i].respawn_at = 0;
    m->procs[i].killed_at = 0;
}

static int live_workers(master_t *m)
{
    int n = 0;

    for (int i = 0; i < m->n; i++)
        if (m->procs[i].pid > 0)
            n++;
    return n;
}

static void on_sigchld(evutil_socket_t sig, short what, void *arg)
{
    master_t *m = arg;
    int st;
    pid_t pid;

    (void)sig;
    (void)what;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        if (m->check && mf_check_reaped(m->check, pid, st))
            continue;
        for (int i = 0; i < m->n; i++) {
            worker_proc_t *p = &m->procs[i];
            double now = mf_status_clock(), lived;
            if (p->pid != pid)
                continue;
            lived = now - m->shared->slots[i].started;
            p->pid = 0;
            if (m->stopping) {
                if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                    m->exit_status = 1;
                break;
            }
            if (WIFSIGNALED(st))
                mf_log_error("worker %d (pid %d) died of signal %d after %.1f s; replacing it",
                             i + 1, (int)pid, WTERMSIG(st), lived);
            else
                mf_log_error("worker %d (pid %d) exited with status %d after %.1f s; replacing "
                             "it",
                             i + 1, (int)pid, WEXITSTATUS(st), lived);
            p->quick_deaths = lived < QUICK_DEATH ? p->quick_deaths + 1 : 0;
            if (p->quick_deaths <= 1) {
                spawn(m, i);
            } else {
                double delay = 0.1 * (double)(1 << (p->quick_deaths < 7 ? p->quick_deaths : 7));
                if (delay > MAX_BACKOFF)
                    delay = MAX_BACKOFF;
                mf_log_warn("worker %d keeps dying; next start in %.1f s", i + 1, delay);
                p->respawn_at = now + delay;
            }
            break;
        }
    }
    if (m->stopping && live_workers(m) == 0)
        event_base_loopbreak(m->base);
}

static void log_status(master_t *m)
{
    mf_log_info("status: %d workers, app version %d", m->n, (int)m->shared->generation);
    for (int i = 0; i < m->n; i++) {
        mf_worker_slot_t *s = &m->shared->slots[i];
        mf_log_info("status: worker %d pid %d version %d served %llu in-flight %u conns %u "
                    "accepted %llu rss %llu KiB up %.0f s",
                    i + 1, (int)s->pid, (int)s->app_version, (unsigned long long)s->served,
                    (unsigned)s->in_flight, (unsigned)s->conns, (unsigned long long)s->accepted,
                    (unsigned long long)s->rss_kib, s->pid ? mf_status_clock() - s->started : 0.0);
    }
    for (int i = 0; i < mf_ffi_shdict_count(); i++) {
        mf_shdict_t *d = mf_ffi_shdict_at(i);
        uint64_t capacity, free_bytes, keys;
        mf_shdict_figures(d, &capacity, &free_bytes, &keys);
        mf_log_info("status: shared %s capacity %llu free %llu keys %llu", mf_ffi_shdict_name(d),
                    (unsigned long long)capacity, (unsigned long long)free_bytes,
                    (unsigned long long)keys);
    }
}

static void start_check(master_t *m, const char *why);

/* The check at start passed: the workers start with that version. */
static void start_workers(master_t *m, const mf_check_result_t *r)
{
    /* Without the memfd (or on a failed write), workers load the files from disk. */
    if (mf_snapshot_open(&m->snap) == 0 && mf_snapshot_publish(&m->snap, r->snapshot, r->len) == 0)
        mf_snapshot_fd = m->snap.fd;
    m->started = 1;
    mf_log_info("moonfcgi %s serving %s with %d workers (listening: %s%s%s)", MF_VERSION_STRING,
                m->cfg->app_path, m->n, m->set->source, m->cfg->listen ? " " : "",
                m->cfg->listen ? m->cfg->listen : "");
    for (int i = 0; i < m->n; i++)
        spawn(m, i);
}

/* A check of the new code ended: install it, or keep the old version if it failed. */
static void on_checked(void *arg, const mf_check_result_t *r)
{
    master_t *m = arg;
    const char *why = m->check_why;

    m->check = NULL;
    if (!why) {
        if (r->ok) {
            start_workers(m, r);
        } else {
            /* A broken app fails here, once, instead of in every worker in a loop. */
            mf_log_error("cannot load %s: %s", m->cfg->app_path, r->error);
            m->exit_status = 1;
            m->stopping = 1;
            event_base_loopbreak(m->base);
        }
    } else if (!r->ok) {
        mf_log_error("reload (%s) refused, version %d keeps serving: %s", why,
                     (int)m->shared->generation, r->error);
    } else if (m->stopping) {
        /* Workers that stop load nothing. */
    } else {
        /* Workers load the code checked, not whatever is on disk when they get to it. */
        if (mf_snapshot_publish(&m->snap, r->snapshot, r->len) < 0)
            mf_log_warn("cannot share the checked app with the workers; they reload from "
                        "disk");
        m->shared->generation++;
        mf_log_info("reload (%s): workers load app version %d", why, (int)m->shared->generation);
        for (int i = 0; i < m->n; i++)
            if (m->procs[i].pid > 0)
                kill(m->procs[i].pid, SIGHUP);
    }
    /* A reload asked for while this one was checked gets a check of its own. */
    if (m->recheck_why && !m->stopping) {
        why = m->recheck_why;
        m->recheck_why = NULL;
        start_check(m, why);
    }
}

/* Checks the new code in a check process (check.c), so that nothing of the app runs here. */
static void start_check(master_t *m, const char *why)
{
    m->check_why = why;
    m->check = mf_check_start(m->base, m->cfg->app_path, m->cfg->check_timeout, on_checked, m);
    if (m->check)
        return;
    if (!why) {
        mf_log_error("cannot check %s: %s", m->cfg->app_path, strerror(errno));
        m->exit_status = 1;
        event_base_loopbreak(m->base);
    } else {
        mf_log_error("reload (%s) refused, version %d keeps serving: cannot start its check: %s",
                     why, (int)m->shared->generation, strerror(errno));
    }
}

static void reload(master_t *m, const char *why)
{
    if (m->stopping)
        return;
    if (m->check)
        m->recheck_why = why;
    else
        start_check(m, why);
}

static void on_watch(void *arg)
{
    reload(arg, "file change");
}

static void stop(master_t *m, int sig)
{
    if (m->stopping)
        return;
    m->stopping = 1;
    if (m->check) {
        mf_check_cancel(m->check);
        m->check = NULL;
    }
    m->stop_deadline = mf_status_clock() + m->cfg->timeout + STUCK_GRACE + 3.0;
    mf_log_info("signal %d: stopping %d workers gracefully", sig, live_workers(m));
    /* New connections are refused from now on, not left waiting in a backlog. */
    for (int i = 0; i < m->set->n; i++)
        close(m->set->fds[i]);
    m->set->n = 0;
    for (int i = 0; i < m->n; i++)
        if (m->procs[i].pid > 0)
            kill(m->procs[i].pid, SIGTERM);
    if (live_workers(m) == 0)
        event_base_loopbreak(m->base);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    master_t *m = arg;

    (void)what;
    if (sig == SIGHUP)
        reload(m, "SIGHUP");
    else if (sig == SIGUSR1)
        log_status(m);
    else
        stop(m, (int)sig);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    master_t *m = arg;
    double now = mf_status_clock();

    (void)fd;
    (void)what;
    if (m->stopping) {
        if (now > m->stop_deadline) {
            mf_log_warn("workers did not stop in time; killing them");
            for (int i = 0; i < m->n; i++)
                if (m->procs[i].pid > 0)
                    kill(m->procs[i].pid, SIGKILL);
            m->exit_status = 1;
            m->stop_deadline = now + 60;
        }
        return;
    }
    for (int i = 0; i < m->n; i++) {
        worker_proc_t *p = &m->procs[i];
        mf_worker_slot_t *s = &m->shared->slots[i];
        if (p->pid == 0) {
            if (p->respawn_at > 0 && now >= p->respawn_at)
                spawn(m, i);
            continue;
        }
        if (!p->killed_at && now - s->heartbeat > m->cfg->timeout + STUCK_GRACE) {
            mf_log_error("worker %d (pid %d): its loop has not run for %.1f s (a handler that "
                         "never yields?); replacing it",
                         i + 1, (int)p->pid, now - s->heartbeat);
            kill(p->pid, SIGKILL);
            p->killed_at = now;
        }
    }
}

static int drop_privileges(const mf_config_t *cfg, const mf_listen_set_t *set)
{
    char user[256], *group;
    struct passwd *pw;
    struct group *gr = NULL;
    gid_t gid;

    snprintf(user, sizeof user, "%s", cfg->user);
    group = strchr(user, ':');
    if (group)
        *group++ = '\0';
    if (!(pw = getpwnam(user))) {
        fprintf(stderr, "moonfcgi: --user: no user '%s'\n", user);
        return -1;
    }
    gid = pw->pw_gid;
    if (group && *group) {
        if (!(gr = getgrnam(group))) {
            fprintf(stderr, "moonfcgi: --user: no group '%s'\n", group);
            return -1;
        }
        gid = gr->gr_gid;
    }
    if (geteuid() != 0) {
        if (pw->pw_uid == geteuid())
            return 0;
        fprintf(stderr, "moonfcgi: --user needs to be started as root\n");
        return -1;
    }
    /* The socket we created goes to the new owner, so the web server's group can use it. */
    if (set->unix_path[0] && chown(set->unix_path, pw->pw_uid, gid) < 0) {
        fprintf(stderr, "moonfcgi: cannot chown %s: %s\n", set->unix_path, strerror(errno));
        return -1;
    }
    if (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(pw->pw_uid) < 0) {
        fprintf(stderr, "moonfcgi: cannot become %s: %s\n", cfg->user, strerror(errno));
        return -1;
    }
    mf_log_info("running as user %s (uid %d, gid %d)", user, (int)pw->pw_uid, (int)gid);
    return 0;
}

static int cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    return n > 0 ? (int)n : 1;
}

int mf_master_run(const mf_config_t *cfg)
{
    mf_listen_set_t set;
    master_t m;
    char err[512];
    struct timeval tick = {0, 250 * 1000};

    memset(&m, 0, sizeof m);
    m.cfg = cfg;
    m.set = &set;
    m.n = cfg->workers > 0 ? cfg->workers : cpu_count();
    if (mf_listener_open(cfg, &set, err, sizeof err) < 0) {
        fprintf(stderr, "moonfcgi: %s\n", err);
        return 1;
    }
    /* Before dropping privileges: the pid file may live in a folder only root writes. */
    if (cfg->pid_file) {
        FILE *f = fopen(cfg->pid_file, "w");
        if (!f) {
            fprintf(stderr, "moonfcgi: cannot write %s: %s\n", cfg->pid_file, strerror(errno));
            return 1;
        }
        fprintf(f, "%d\n", (int)getpid());
        fclose(f);
    }
    if (cfg->user && drop_privileges(cfg, &set) < 0) {
        if (set.unix_path[0])
            unlink(set.unix_path);
        if (cfg->pid_file)
            unlink(cfg->pid_file);
        return 1;
    }
    m.snap.fd = -1;
    m.shared = mf_status_map(m.n);
    m.procs = calloc((size_t)m.n, sizeof *m.procs);
    m.base = event_base_new();
    if (!m.shared || !m.procs || !m.base) {
        mf_log_error("out of memory");
        return 1;
    }
    evsignal_assign(&m.sigchld, m.base, SIGCHLD, on_sigchld, &m);
    evsignal_assign(&m.sigterm, m.base, SIGTERM, on_signal, &m);
    evsignal_assign(&m.sigint, m.base, SIGINT, on_signal, &m);
    evsignal_assign(&m.sighup, m.base, SIGHUP, on_signal, &m);
    evsignal_assign(&m.sigusr1, m.base, SIGUSR1, on_signal, &m);
    event_assign(&m.tick, m.base, -1, EV_PERSIST, on_tick, &m);
    evsignal_add(&m.sigchld, NULL);
    evsignal_add(&m.sigterm, NULL);
    evsignal_add(&m.sigint, NULL);
    evsignal_add(&m.sighup, NULL);
    evsignal_add(&m.sigusr1, NULL);
    event_add(&m.tick, &tick);
    if (cfg->watch)
        m.watch = mf_watch_new(m.base, cfg->app_path, on_watch, &m);
    /* The workers start once the app passed its check (on_checked); the signal handlers
     * are in place meanwhile, so a SIGTERM during the check stops moonfcgi cleanly. */
    start_check(&m, NULL);
    event_base_dispatch(m.base);

    if (m.started || m.exit_status == 0) /* not after "cannot load" */
        mf_log_info("stopped (exit status %d)", m.exit_status);
    mf_watch_free(m.watch);
    mf_snapshot_close(&m.snap);
    if (set.unix_path[0])
        unlink(set.unix_path);
    if (cfg->pid_file)
        unlink(cfg->pid_file);
    for (int i = 0; i < set.n; i++)
        close(set.fds[i]);
    event_base_free(m.base);
    free(m.procs);
    return m.exit_status;
}
