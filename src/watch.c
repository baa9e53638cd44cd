#include "watch.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event_struct.h>

/* Saves of several files (or an editor's write-then-rename) make one reload. */
#define DEBOUNCE_MS 150
#define MAX_DEPTH   8

struct mf_watch {
    int fd;
    struct event ev, debounce;
    void (*on_change)(void *);
    void *arg;
};

static void add_dir(mf_watch_t *wt, const char *dir, int depth)
{
    DIR *d;
    struct dirent *e;
    char path[PATH_MAX];

    if (inotify_add_watch(wt->fd, dir,
                          IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MOVED_FROM) <
        0) {
        mf_log_warn("--watch: cannot watch %s: %s", dir, strerror(errno));
        return;
    }
    if (depth >= MAX_DEPTH || !(d = opendir(dir)))
        return;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
            add_dir(wt, path, depth + 1);
    }
    closedir(d);
}

static int is_lua(const char *name, size_t len)
{
    return len > 4 && memcmp(name + len - 4, ".lua", 4) == 0;
}

static void on_debounce(evutil_socket_t fd, short what, void *arg)
{
    mf_watch_t *wt = arg;

    (void)fd;
    (void)what;
    wt->on_change(wt->arg);
}

static void on_inotify(evutil_socket_t fd, short what, void *arg)
{
    mf_watch_t *wt = arg;
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    ssize_t n;
    int changed = 0;

    (void)what;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            size_t len = ev->len ? strlen(ev->name) : 0;
            if (len && is_lua(ev->name, len))
                changed = 1;
            p += sizeof *ev + ev->len;
        }
    }
    if (changed) {
        struct timeval tv = {0, DEBOUNCE_MS * 1000};
        evtimer_add(&wt->debounce, &tv);
    }
}

mf_watch_t *mf_watch_new(struct event_base *base, const char *app_path, void (*on_change)(void *),
                         void *arg)
{
    mf_watch_t *wt = calloc(1, sizeof *wt);
    char dir[PATH_MAX], *slash;

    if (!wt)
        return NULL;
    if (!realpath(app_path, dir)) {
        free(wt);
        return NULL;
    }
    if ((slash = strrchr(dir, '/')) != NULL)
        *(slash == dir ? slash + 1 : slash) = '\0';
    wt->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (wt->fd < 0) {
        free(wt);
        return NULL;
    }
    wt->on_change = on_change;
    wt->arg = arg;
    add_dir(wt, dir, 0);
    event_assign(&wt->ev, base, wt->fd, EV_READ | EV_PERSIST, on_inotify, wt);
    evtimer_assign(&wt->debounce, base, on_debounce, wt);
    event_add(&wt->ev, NULL);
    mf_log_info("--watch: reloading when a .lua file under %s changes", dir);
    return wt;
}

void mf_watch_free(mf_watch_t *wt)
{
    if (!wt)
        return;
    event_del(&wt->ev);
    evtimer_del(&wt->debounce);
    close(wt->fd);
    free(wt);
}
