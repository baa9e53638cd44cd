/*
 * The worker's LuaJIT state: where the moonfcgi Lua modules are found, and the entry into
 * lua/moonfcgi/runtime.lua, which loads the app and runs the scheduler.
 */
#ifndef MF_VM_H
#define MF_VM_H

#include "worker.h"

/* Runs the app in w until the worker stops; returns the process exit status. */
int mf_vm_run(mf_worker_t *w, const char *app_path);

/* Loads and compiles the app as a worker would; prints the error; returns 0 or 1. */
int mf_vm_check(const char *app_path);

#endif
