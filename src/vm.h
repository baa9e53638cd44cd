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

/* Loads and compiles the app as a worker would; prints the error; returns 0 or 1. */
int mf_vm_check(const char *app_path);

/*
 * Like mf_vm_check, quietly: returns 0, or 1 with the error in err (the master's reload).
 * On success, the app's own files as read are kept as the snapshot that workers started
 * from now on load (mf_ffi_snapshot_file), so a worker that replaces a dead one after a
 * refused reload runs the last version that loaded, not what is on disk.
 */
int mf_vm_check_error(const char *app_path, char *err, size_t errlen);

/* Writes the snapshot to fd (a memfd the master shares with its workers). */
void mf_vm_snapshot_write(int fd);

/* The memfd a worker reloads from, or -1 (no master: reloads read the disk). */
extern int mf_vm_snapshot_fd;

#endif
