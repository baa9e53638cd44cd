/*
 * The worker's shared state (loop.h): its clock, the queue of events for Lua, and the
 * released tokens of referenced blocks.
 */
#include "loop.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static void read_clocks(mf_worker_t *w)
{
    struct timespec mono, wall;

    clock_gettime(CLOCK_MONOTONIC, &mono);
    clock_gettime(CLOCK_REALTIME, &wall);
    w->now = (double)mono.tv_sec + (double)mono.tv_nsec / 1e9;
    w->wall = (double)wall.tv_sec + (double)wall.tv_nsec / 1e9;
    w->now_valid = 1;
}

double mf_worker_now(mf_worker_t *w)
{
    if (!w->now_valid)
        read_clocks(w);
    return w->now;
}

double mf_worker_wall(mf_worker_t *w)
{
    if (!w->now_valid)
        read_clocks(w);
    return w->wall;
}

void mf__worker_new_turn(mf_worker_t *w)
{
    w->now_valid = 0;
}

mf_event_t *mf__worker_event(mf_worker_t *w, int type, uint64_t token)
{
    mf_event_queue_t *q = &w->pending;
    mf_event_t *e;

    if (q->len == q->cap) {
        uint32_t cap = q->cap ? q->cap * 2 : 256;
        mf_event_t *ev = realloc(q->ev, cap * sizeof *ev);
        if (!ev) {
            mf_log_error("out of memory for the event queue");
            return NULL;
        }
        q->ev = ev;
        q->cap = cap;
    }
    e = &q->ev[q->len++];
    memset(e, 0, sizeof *e);
    e->type = type;
    e->token = token;
    return e;
}

void mf__worker_released(mf_worker_t *w, uint64_t token)
{
    if (w->nreleased == w->released_cap) {
        uint32_t cap = w->released_cap ? w->released_cap * 2 : 64;
        uint64_t *t = realloc(w->released, cap * sizeof *t);
        if (!t)
            return; /* the string stays pinned: a leak in Lua, never a use after free */
        w->released = t;
        w->released_cap = cap;
    }
    w->released[w->nreleased++] = token;
}
