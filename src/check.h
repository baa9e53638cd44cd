/*
 * Checking an app before it is installed, without running any of it in the caller: the app's
 * top level runs in a throwaway child process, bounded by a timeout.
 */
#ifndef MF_CHECK_H
#define MF_CHECK_H

#include <stddef.h>
#include <sys/types.h>

struct event_base;

typedef struct mf_check mf_check_t;

/* What a check found: ok with the app's files as it read them, or an error message. */
typedef struct mf_check_result {
    int ok;
    const char *error;    /* when !ok: one line, with file:line where there is one */
    const char *snapshot; /* when ok: the snapshot payload (snapshot.h) */
    size_t len;
} mf_check_result_t;

/* Called once per check, from the event loop; r and its strings live until it returns. */
typedef void (*mf_check_done_fn)(void *arg, const mf_check_result_t *r);

/*
 * Forks a child that loads app_path as a worker would and reports back; a child still running
 * `timeout` seconds later is killed. Returns the check, or NULL (errno set) when no child
 * could be started. The caller reaps children: it passes each one it reaps to
 * mf_check_reaped, which calls done and frees the check.
 */
mf_check_t *mf_check_start(struct event_base *base, const char *app_path, double timeout,
                           mf_check_done_fn done, void *arg);

/* Returns 1 when pid was c's child (c then reports and is freed: do not use it again), 0
 * otherwise. status is waitpid's. */
int mf_check_reaped(mf_check_t *c, pid_t pid, int status);

/* Kills c's child and frees c without calling done; the caller still reaps the child. */
void mf_check_cancel(mf_check_t *c);

/* In a process forked from the one that started c: frees c, leaving its child alone. */
void mf_check_forget(mf_check_t *c);

/*
 * Runs one check to its end with a loop of its own (the master's start, --check). Returns 0
 * with the snapshot payload in *snapshot (malloc'd) and *len, or 1 with the error in err.
 */
int mf_check_run(const char *app_path, double timeout, char **snapshot, size_t *len, char *err,
                 size_t errlen);

#endif
