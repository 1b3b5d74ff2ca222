/* Helpers for the state machine and snapshot tests. */
#ifndef KV_TEST_SM_UTIL_H
#define KV_TEST_SM_UTIL_H

#include "storage/check.h"
#include "storage/sm.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A fresh directory under $TMPDIR (or /tmp), into buf (1024 bytes). */
void tu_tmpdir(char *buf);
/* rm -rf path. */
void tu_rmrf(const char *path);

/* The seed of a random test: $KV_SEED when set, else from the clock;
 * printed so a failure replays with KV_SEED=<seed>. */
uint64_t tu_seed(const char *test);
uint64_t tu_rand(uint64_t *state);

/* An encoded kv.Command; *len its bytes. malloc'd, owned by the caller. */
uint8_t *tu_cmd(int op, uint64_t client, uint64_t seq, const void *key, size_t klen,
                const void *val, size_t vlen, const void *exp, size_t elen, size_t *len);

/* The term tu_apply gives its entries (1 unless a test moves it). */
extern uint64_t tu_term;

/* Applies one entry at index, term tu_term, and returns the reply's code; *r gets
 * the reply when not NULL (then the caller frees it: sm_replies_free). */
int tu_apply(sm *s, uint64_t index, int op, uint64_t client, uint64_t seq, const char *key,
             const char *val, const char *exp, sm_reply *r);

/* Opens db_dir with sessions_max (0: default), failing the test on error. */
sm *tu_open(const char *db_dir, uint32_t sessions_max);
/* The same with sm_options.session_log_records (1: every write folds the
 * session log, so only 's' records stay, as before format 5). */
sm *tu_open_log(const char *db_dir, uint32_t sessions_max, uint32_t session_log_records);
/* The same with sm_options.key_cache_slots (0: off). */
sm *tu_open_cache(const char *db_dir, uint32_t key_cache_slots);

/* A value of key as a NUL-terminated malloc'd string, NULL when absent. */
char *tu_get(sm *s, const char *key);

/* Problems collected by tu_problem (a kv_check_fn). */
typedef struct tu_problems {
    int count;
    char word[32];
    char file[4096];
    uint64_t offset;
} tu_problems;
void tu_problem(void *arg, const kv_check_problem *p);

/* Flips one byte of path at off. */
void tu_flip(const char *path, uint64_t off);

/* The first file in dir whose name ends with suffix, into out. */
bool tu_find(const char *dir, const char *suffix, char *out);

/* A state machine's RocksDB opened as is, with both column families (the
 * default one and the history, *history): for tests that write what no
 * sm_* call would. tu_raw_close closes both. */
#include <rocksdb/c.h>
rocksdb_t *tu_raw_open(const char *db_dir, rocksdb_column_family_handle_t **history);
void tu_raw_close(rocksdb_t *db, rocksdb_column_family_handle_t *history);
/* Writes wb to db (failing the test on an error) and destroys it. */
void tu_raw_write(rocksdb_t *db, rocksdb_writebatch_t *wb);

/* The path of an SST of column family cf ("default" or "history") in
 * db_dir (closed), into out (4096 bytes); false when it has none. */
bool tu_find_sst(const char *db_dir, const char *cf, char *out);

#endif
