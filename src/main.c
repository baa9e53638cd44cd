/*
 * moonfcgi: the command line (docs/api.md, "Command line").
 */
#include "check.h"
#include "config.h"
#include "listener.h"
#include "log.h"
#include "master.h"
#include "shdict.h"
#include "vm.h"
#include "worker.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    mf_config_t cfg;
    char err[512];
    struct stat st;

    mf_config_defaults(&cfg);
    if (mf_config_parse(&cfg, argc, argv, err, sizeof err) < 0) {
        fprintf(stderr, "moonfcgi: %s\n", err);
        return 2;
    }
    if (cfg.action == MF_CONFIG_HELP) {
        fputs(mf_config_usage, stdout);
        return 0;
    }
    if (cfg.action == MF_CONFIG_VERSION) {
        printf("moonfcgi %s\n", MF_VERSION_STRING);
        return 0;
    }
    mf_log_level = cfg.log_level;
    if (stat(cfg.app_path, &st) < 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "moonfcgi: app file '%s' not found or not a regular file\n", cfg.app_path);
        return 2;
    }
    /* Before the check and the first fork: the app's top level may use them, and every
     * worker inherits the same mappings. */
    for (int i = 0; i < cfg.nshared; i++)
        if (mf_shdict_declare(cfg.shared[i], err, sizeof err) < 0) {
            fprintf(stderr, "moonfcgi: %s\n", err);
            return 1;
        }
    if (cfg.check) {
        /* The same check as a reload's: the app's top level runs in a child process. */
        char msg[4096], *snapshot;
        size_t len;
        if (mf_check_run(cfg.app_path, cfg.check_timeout, &snapshot, &len, msg, sizeof msg)) {
            fprintf(stderr, "%s\n", msg);
            return 1;
        }
        free(snapshot);
        printf("%s: ok\n", cfg.app_path);
        return 0;
    }
    if (!cfg.allow)
        cfg.allow = getenv("FCGI_WEB_SERVER_ADDRS");
    /* A web server that goes away must not kill us on the next write. */
    signal(SIGPIPE, SIG_IGN);
    return mf_master_run(&cfg);
}
