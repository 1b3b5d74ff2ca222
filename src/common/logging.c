#include "common/logging.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static enum kv_log_level kv__log_level = KV_LOG_INFO;
static int kv__log_env_read; /* KV_LOG is read once, at the first line */
static char kv__log_prefix[64];

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
    int n = snprintf(line, sizeof line, "%s%s%s %s ", kv__log_prefix, kv__log_prefix[0] ? " " : "",
                     names[level], word ? word : "-");
    if (n < 0 || (size_t)n >= sizeof line)
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
}
