#include "common/logging.h"

#include <stdarg.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static enum kv_log_level kv__log_level = KV_LOG_INFO;
static int kv__log_env_read; /* KV_LOG is read once, at the first line */
static char kv__log_prefix[64];
static enum { KV__STAMP_NONE, KV__STAMP_TIME, KV__STAMP_JOURNAL } kv__log_stamp;

/* $JOURNAL_STREAM is "DEV:INODE" of the journal's socket when systemd
 * connected stderr to it (systemd.exec(5)); stderr may have been redirected
 * since, so it must still be that file. */
static bool kv__stderr_is_journal(void) {
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev = 0, ino = 0;
    struct stat st;
    if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &st) != 0)
        return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void kv_log_daemon(void) {
    kv__log_stamp = kv__stderr_is_journal() ? KV__STAMP_JOURNAL : KV__STAMP_TIME;
}

/* The line's start by kv_log_daemon's choice into buf; its length. */
static int kv__log_stamp_put(char *buf, size_t cap, enum kv_log_level level) {
    static const char prio[] = {'7', '6', '4', '3'}; /* sd-daemon.h SD_DEBUG.. SD_ERR */
    if (kv__log_stamp == KV__STAMP_JOURNAL)
        return snprintf(buf, cap, "<%c>", prio[level]);
    if (kv__log_stamp == KV__STAMP_NONE)
        return 0;
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    return (int)n + snprintf(buf + n, cap - n, ".%03ldZ ", ts.tv_nsec / 1000000);
}

void kv_log_set_level(enum kv_log_level level) {
    __atomic_store_n(&kv__log_env_read, 1, __ATOMIC_RELAXED); /* wins over KV_LOG */
    kv__log_level = level;
}

void kv_log_set_prefix(const char *prefix) {
    snprintf(kv__log_prefix, sizeof kv__log_prefix, "%s", prefix ? prefix : "");
}

void kv_log(enum kv_log_level level, const char *word, const char *fmt, ...) {
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (!__atomic_exchange_n(&kv__log_env_read, 1, __ATOMIC_RELAXED)) {
        const char *env = getenv("KV_LOG");
        if (env != NULL && strcmp(env, "debug") == 0)
            kv__log_level = KV_LOG_DEBUG;
    }
    if (level < kv__log_level)
        return;
    char line[1024];
    int n = kv__log_stamp_put(line, 64, level);
    n += snprintf(line + n, sizeof line - (size_t)n, "%s%s%s %s ", kv__log_prefix,
                  kv__log_prefix[0] ? " " : "", names[level], word ? word : "-");
    if (n < 0 || (size_t)n >= sizeof line)
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
}
