/*
 * One worker: one event loop, its listeners, connections and requests, and the queue of
 * events that the Lua scheduler takes in mf_ffi_worker_poll().
 */
#ifndef MF_WORKER_H
#define MF_WORKER_H

#include "loop.h"

/* Creates a worker with its own event base; NULL on failure. */
mf_worker_t *mf_worker_new(const mf_config_t *cfg, int number);
/* Ends every listener, connection and request. The blocks their output referenced are then
 * in the released list (mf_ffi_worker_released): Lua can unpin them before the free. */
void mf_worker_close(mf_worker_t *w);
void mf_worker_free(mf_worker_t *w);

/* The worker of this process (the moonfcgi binary has exactly one per process). */
extern mf_worker_t *mf_worker_current;

/* Handles SIGTERM, SIGINT (stop) and SIGHUP (reload) in this worker's loop. */
int mf_worker_catch_signals(mf_worker_t *w);

/* Starts the graceful stop of docs/api.md: no new connections, in-flight requests finish. */
void mf_worker_stop(mf_worker_t *w);

#endif
