/* Internals shared by sm.c, sm_apply.c and the snapshot files. Not public. */
#ifndef KV_STORAGE_SM_INTERNAL_H
#define KV_STORAGE_SM_INTERNAL_H

#include "storage/sm.h"

#include <pthread.h>
#include <rocksdb/c.h>
#include <stdatomic.h>

#define SM_PREFIX_DATA 'd'
#define SM_PREFIX_META 'm'
#define SM_PREFIX_SESSION 's'
#define SM_PREFIX_LRU 't'

#define SM_META_APPLIED_INDEX "mapplied_index"
#define SM_META_APPLIED_TERM "mapplied_term"
#define SM_META_MEMBERSHIP "mmembership"
#define SM_META_SESSIONS "msessions_count"
#define SM_META_FORMAT "mformat"

/* Version of the key layout above; stored under SM_META_FORMAT. */
#define SM_FORMAT 1u

#define SM_PATH_BYTES_MAX 4096u

struct sm {
    rocksdb_t *db;
    rocksdb_options_t *options;
    rocksdb_block_based_table_options_t *table;
    rocksdb_readoptions_t *ro;
    rocksdb_writeoptions_t *wo; /* WAL disabled */
    sm_options opt;
    char dir[SM_PATH_BYTES_MAX];
    _Atomic uint64_t applied_index;
    _Atomic uint64_t applied_term;
    _Atomic uint64_t durable_index;
    uint64_t sessions_count; /* apply thread only */
    pthread_mutex_t err_mu;  /* guards err: readers fail on other threads */
    char err[SM_ERROR_BYTES]; /* the last RocksDB error text, "" when none */
};

/* Options for opening a db of ours: paranoid checks, xxh3 block checksums.
 * Owned by the caller: sm__options_free(). */
rocksdb_options_t *sm__options_new(rocksdb_block_based_table_options_t **table);
void sm__options_free(rocksdb_options_t *o, rocksdb_block_based_table_options_t *table);

/* Reads a u64 meta key (8 bytes little-endian; 0 when absent). A RocksDB
 * error is kept in rec (sm__fail) when rec is not NULL. */
int sm__meta_u64(sm *rec, rocksdb_t *db, const rocksdb_readoptions_t *ro, const char *name,
                 uint64_t *out);

/* Maps a RocksDB error text to a KV_E* code (frees nothing). */
int sm__rocks_err(const char *err);

/* sm__rocks_err, and keeps err for sm_last_error (frees nothing). */
int sm__fail(sm *s, const char *err);

/* Big-endian u64, so keys sort by number. */
static inline void sm__put_be64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}
static inline uint64_t sm__get_be64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

#endif
