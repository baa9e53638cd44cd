/*
 * The host log: one line per event on stderr, with time, pid and level.
 */
#ifndef MF_LOG_H
#define MF_LOG_H

enum mf_log_level { MF_LOG_ERROR = 0, MF_LOG_WARN = 1, MF_LOG_INFO = 2, MF_LOG_DEBUG = 3 };

extern int mf_log_level;

/* Parses "error", "warn", "info" or "debug"; returns -1 for anything else. */
int mf_log_parse_level(const char *name);

/* A tag put in front of every line, e.g. "worker 2"; the string must outlive its use. */
void mf_log_set_tag(const char *tag);

void mf_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes a message of known length, which may hold any bytes but newlines are kept. */
void mf_log_raw(int level, const char *msg, size_t len);

#define mf_log_error(...) mf_log(MF_LOG_ERROR, __VA_ARGS__)
#define mf_log_warn(...)  mf_log(MF_LOG_WARN, __VA_ARGS__)
#define mf_log_info(...)  mf_log(MF_LOG_INFO, __VA_ARGS__)
#define mf_log_debug(...)                                                                          \
    do {                                                                                           \
        if (mf_log_level >= MF_LOG_DEBUG)                                                          \
            mf_log(MF_LOG_DEBUG, __VA_ARGS__);                                                     \
    } while (0)

#endif
