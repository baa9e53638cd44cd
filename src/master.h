/*
 * The process that owns the listening sockets and runs the workers.
 */
#ifndef MF_MASTER_H
#define MF_MASTER_H

#include "config.h"

/* Opens the listeners, runs the workers until they stop; returns the exit status. */
int mf_master_run(const mf_config_t *cfg);

#endif
