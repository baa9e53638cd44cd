#include <stddef.h>

#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int mf_log_level = MF_LOG_INFO;
static const char *log_tag = "moonfcgi";
static const char *const level_names[] = {"error", "warn", "info", "debug"};

int mf_log_parse_level(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

void mf_log_set_tag(const char *tag)
{
    log_tag = tag;
}

/* Formats the line prefix; returns its length. */
static int prefix(char *buf, size_t cap, int level)
{
    struct timeval tv;
    struct tm tm;

    gettimeofday(&tv, NULL);
    localtime_r(&tv.tv_sec, &tm);
    return snprintf(buf, cap, "%04d-%02d-%02d %02d:%02d:%02d.%03d [%s] %s[%d]: ", tm.tm_year + 1900,
                    tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                    (int)(tv.tv_usec / 1000), level_names[level], log_tag, (int)getpid());
}

/* One write per line, so lines from several processes sharing stderr never mix. */
static void emit(int level, const char *msg, size_t len)
{
    char buf[8192];
    int n = prefix(buf, sizeof buf, level);
    size_t room;

    if (n < 0)
        return;
    room = sizeof buf - (size_t)n - 1;
    if (len > room)
        len = room;
    memcpy(buf + n, msg, len);
    buf[(size_t)n + len] = '\n';
    if (write(STDERR_FILENO, buf, (size_t)n + len + 1) < 0) {
        /* Nothing sensible to do when the log itself cannot be written. */
    }
}

void mf_log(int level, const char *fmt, ...)
{
    char msg[4096];
    va_list ap;
    int n;

    if (level > mf_log_level)
        return;
    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    emit(level, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
}

void mf_log_raw(int level, const char *msg, size_t len)
{
    if (level > mf_log_level)
        return;
    while (len > 0 && msg[len - 1] == '\n')
        len--;
    emit(level, msg, len);
}
