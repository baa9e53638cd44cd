/*
 * The worker's LuaJIT state: where the moonfcgi Lua modules are found, and the entry into
 * lua/moonfcgi/runtime.lua, which loads the app and runs the scheduler.
 */
#ifndef MF_VM_H
#define MF_VM_H

#include <stddef.h>

#include "worker.h"

/* Runs the app in w until the worker stops; returns the process exit status. */
int mf_vm_run(mf_worker_t *w, const char *app_path);

/*
 * Loads the app as a worker would, running its top level in this process: only the
 * throwaway check process (check.c) calls this, never the master. Returns 0 with the app's
 * own files as read, encoded as a snapshot payload (malloc'd, in *snapshot and *len), or 1
 * with the error (file:line where there is one) in err.
 */
int mf_vm_check_here(const char *app_path, char **snapshot, size_t *len, char *err, size_t errlen);

#endif
