/*
 * Log lines: "<level> <CODEWORD> <message>" on stderr, one line each, so a
 * fault is found by its code word (grep CORRUPT) and counted by it.
 * The code word is a kv_errword() word or another stable word (TORN, ...).
 */
#ifndef KV_COMMON_LOGGING_H
#define KV_COMMON_LOGGING_H

enum kv_log_level { KV_LOG_DEBUG, KV_LOG_INFO, KV_LOG_WARN, KV_LOG_ERROR };

/* Lines below this level are dropped (default INFO; KV_LOG=debug sets it). */
void kv_log_set_level(enum kv_log_level level);

/* For a long-running process (kvd): when stderr is the systemd journal
 * ($JOURNAL_STREAM names it), every line starts with its syslog priority
 * ("<3>" error, "<4>" warn, "<6>" info, "<7>" debug) and the journal adds
 * the time; otherwise every line starts with the time, UTC, to the
 * millisecond ("2026-12-05T21:34:05.123Z "). Without this call (tools,
 * tests): neither. */
void kv_log_daemon(void);

/* Prefix for every line (the node name), copied; NULL clears it. */
void kv_log_set_prefix(const char *prefix);

void kv_log(enum kv_log_level level, const char *word, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define KV_LOGI(word, ...) kv_log(KV_LOG_INFO, word, __VA_ARGS__)
#define KV_LOGW(word, ...) kv_log(KV_LOG_WARN, word, __VA_ARGS__)
#define KV_LOGE(word, ...) kv_log(KV_LOG_ERROR, word, __VA_ARGS__)

#endif
