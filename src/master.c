#include "master.h"
#include "listener.h"
#include "log.h"
#include "vm.h"
#include "worker.h"

#include <stdio.h>
#include <unistd.h>

/* Runs one worker in this process on the given listeners; returns its exit status. */
static int run_worker(const mf_config_t *cfg, const mf_listen_set_t *set, int number)
{
    char err[512];
    mf_worker_t *w = mf_worker_new(cfg, number);
    int status;

    if (!w) {
        mf_log_error("cannot create worker %d", number);
        return 1;
    }
    if (mf_worker_catch_signals(w) < 0) {
        mf_log_error("cannot install signal handlers");
        mf_worker_free(w);
        return 1;
    }
    for (int i = 0; i < set->n; i++) {
        if (mf_listener_attach(w, set->fds[i], cfg->allow, err, sizeof err) < 0) {
            mf_log_error("%s", err);
            mf_worker_free(w);
            return 1;
        }
    }
    status = mf_vm_run(w, cfg->app_path);
    mf_worker_free(w);
    return status;
}

int mf_master_run(const mf_config_t *cfg)
{
    mf_listen_set_t set;
    char err[512];
    int status;

    if (mf_listener_open(cfg, &set, err, sizeof err) < 0) {
        fprintf(stderr, "moonfcgi: %s\n", err);
        return 1;
    }
    mf_log_info("moonfcgi %s serving %s (listening: %s%s%s)", MF_VERSION_STRING, cfg->app_path,
                set.source, cfg->listen ? " " : "", cfg->listen ? cfg->listen : "");
    status = run_worker(cfg, &set, 1);
    if (set.unix_path[0])
        unlink(set.unix_path);
    return status;
}
