/* The RocksDB state machine (sm.h): open, close, reads, flush, check.
 * Applying entries lives in sm_apply.c. */
#include "storage/sm_internal.h"

#include "common/checksum.h"
#include "common/logging.h"
#include "kv/errors.h"
#include "kv/limits.h"

#include <assert.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* RocksDB's ChecksumType kXXH3 (include/rocksdb/table.h). */
#define SM_ROCKSDB_CHECKSUM_XXH3 4

void sm_options_default(sm_options *opt) {
    assert(opt != NULL);
    opt->sessions_max = KV_SESSIONS_MAX;
    opt->history_revs = KV_WATCH_HISTORY_REVS;
    opt->session_log_records = SM_SESSION_LOG_RECORDS;
    opt->key_cache_slots = SM_KEY_CACHE_SLOTS;
}

void sm_replies_free(sm_reply *replies, size_t n) {
    assert(replies != NULL || n == 0);
    for (size_t i = 0; i < n; i++) {
        free(replies[i].current);
        replies[i].current = NULL;
        replies[i].current_len = 0;
        for (size_t j = 0; j < replies[i].n_results; j++)
            free(replies[i].results[j]); /* one block each */
        free(replies[i].results);
        replies[i].results = NULL;
        free(replies[i].why);
        replies[i].why = NULL;
        replies[i].n_results = 0;
    }
}

int sm__rocks_err(const char *err) {
    assert(err != NULL);
    if (strstr(err, "Corruption") != NULL)
        return KV_ECORRUPT;
    if (strstr(err, "No space") != NULL)
        return KV_ENOSPACE;
    if (strstr(err, "lock") != NULL || strstr(err, "Lock") != NULL)
        return KV_ELOCKED;
    return KV_EIO;
}

int sm__fail(sm *s, const char *err) {
    assert(s != NULL && err != NULL);
    pthread_mutex_lock(&s->err_mu);
    snprintf(s->err, sizeof s->err, "%s", err);
    pthread_mutex_unlock(&s->err_mu);
    return sm__rocks_err(err);
}

int sm__failed(sm *s, char *err, bool write, const char *what) {
    int rv = sm__fail(s, err);
    if (write)
        rv = rv == KV_ECORRUPT || rv == KV_ENOSPACE ? rv : KV_EIO;
    KV_LOGE(kv_errword(rv), "state machine %s: %s: %s", s->dir, what, err);
    rocksdb_free(err);
    return rv;
}

int sm__iter_done(sm *s, rocksdb_iterator_t *it, const char *what) {
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    return err == NULL ? 0 : sm__failed(s, err, false, what);
}

int sm__prefix_each(sm *s, const void *prefix, size_t plen, sm__kv_fn fn, void *arg,
                    const char *what) {
    rocksdb_iterator_t *it = rocksdb_create_iterator(s->db, s->ro);
    int rv = 0;
    for (rocksdb_iter_seek(it, prefix, plen); rv == 0 && rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t klen = 0, vlen = 0;
        const char *k = rocksdb_iter_key(it, &klen);
        if (klen < plen || memcmp(k, prefix, plen) != 0)
            break;
        const char *v = rocksdb_iter_value(it, &vlen);
        rv = fn(arg, k, klen, v, vlen);
    }
    int it_rv = sm__iter_done(s, it, what);
    return it_rv != 0 ? it_rv : rv;
}

void sm_last_error(sm *s, char *buf, size_t cap) {
    assert(buf != NULL && cap > 0);
    buf[0] = '\0';
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->err_mu);
    snprintf(buf, cap, "%s", s->err);
    pthread_mutex_unlock(&s->err_mu);
}

rocksdb_options_t *sm__options_new(rocksdb_block_based_table_options_t **table) {
    assert(table != NULL);
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_block_based_table_options_t *t = rocksdb_block_based_options_create();
    assert(o != NULL && t != NULL);
    rocksdb_block_based_options_set_checksum(t, SM_ROCKSDB_CHECKSUM_XXH3);
    /* Every write reads its key first (revisions): bloom filters, in the
     * SSTs and the memtable, answer "absent" for a new key without a
     * search. */
    rocksdb_block_based_options_set_filter_policy(t, rocksdb_filterpolicy_create_bloom_full(10));
    /* ... and a put over a key that exists finds it in its data block by a
     * hash instead of a binary search (RocksDB's data block hash index):
     * puts at 64 and 256 clients over keys written before, 8-10% more puts/s
     * in three alternating runs (docs/benchmarks.md) */
    rocksdb_block_based_options_set_data_block_index_type(
        t, rocksdb_block_based_table_data_block_index_type_binary_search_and_hash);
    rocksdb_block_based_options_set_data_block_hash_ratio(t, 0.75);
    rocksdb_options_set_memtable_prefix_bloom_size_ratio(o, 0.01); /* of the buffer below */
    rocksdb_options_set_memtable_whole_key_filtering(o, 1);
    rocksdb_options_set_block_based_table_factory(o, t);
    rocksdb_options_set_paranoid_checks(o, 1);
    rocksdb_options_set_create_if_missing(o, 1);
    rocksdb_options_set_keep_log_file_num(o, 2);
    rocksdb_options_set_max_background_jobs(o, 2);
    /* The history family (SM_CF_HISTORY) is made at the first open. The
     * keys are flushed by sm_flush (snapshots: every few MiB of entries),
     * which flushes the history right after; a large buffer keeps RocksDB
     * from flushing them alone, ahead of the history, as long as snapshots
     * keep up. Not atomic_flush: RocksDB 7.8 asserts and aborts when its
     * flush requests of different reasons meet (a compaction's and a
     * snapshot's, seen in cluster_ops_nospace). */
    rocksdb_options_set_create_missing_column_families(o, 1);
    rocksdb_options_set_write_buffer_size(o, SM_KEYS_WRITE_BUFFER_BYTES);
    rocksdb_options_set_level0_file_num_compaction_trigger(o, SM_KEYS_L0_FILES_COMPACT);
    rocksdb_options_set_max_bytes_for_level_base(o, SM_KEYS_L1_BYTES);
    rocksdb_options_set_target_file_size_base(o, SM_KEYS_FILE_BYTES);
    *table = t;
    return o;
}

rocksdb_options_t *sm__history_options_new(rocksdb_block_based_table_options_t **table) {
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_block_based_table_options_t *t = rocksdb_block_based_options_create();
    assert(o != NULL && t != NULL);
    rocksdb_block_based_options_set_checksum(t, SM_ROCKSDB_CHECKSUM_XXH3);
    rocksdb_options_set_block_based_table_factory(o, t);
    rocksdb_options_set_paranoid_checks(o, 1);
    /* small files: trimming the oldest revisions then deletes whole files
     * instead of rewriting most of one */
    rocksdb_options_set_target_file_size_base(o, 8u << 20);
    *table = t;
    return o;
}

void sm__options_free(rocksdb_options_t *o, rocksdb_block_based_table_options_t *table) {
    if (o != NULL)
        rocksdb_options_destroy(o);
    if (table != NULL)
        rocksdb_block_based_options_destroy(table);
}

int sm__meta_u64(sm *rec, rocksdb_t *db, const rocksdb_readoptions_t *ro, const char *name,
                 uint64_t *out) {
    assert(db != NULL && name[0] == SM_PREFIX_META);
    char *err = NULL;
    rocksdb_pinnableslice_t *v = rocksdb_get_pinned(db, ro, name, strlen(name), &err);
    if (err != NULL) {
        int rv = rec != NULL ? sm__fail(rec, err) : sm__rocks_err(err);
        KV_LOGE(kv_errword(rv), "state machine: reading %s: %s", name, err);
        rocksdb_free(err);
        return rv;
    }
    *out = 0;
    if (v == NULL)
        return 0;
    size_t len = 0;
    const char *p = rocksdb_pinnableslice_value(v, &len);
    int rv = 0;
    if (len == 8)
        *out = kv_get_u64((const uint8_t *)p);
    else
        rv = KV_ECORRUPT;
    rocksdb_pinnableslice_destroy(v);
    return rv;
}

/* Reads the meta keys into s; *format the stored layout (0: a new db).
 * KV_EVERSION for a layout we do not know. */
static int sm__load_meta(sm *s, uint64_t *format) {
    uint64_t index = 0, term = 0;
    int rv = sm__meta_u64(s, s->db, s->ro, SM_META_FORMAT, format);
    if (rv == 0)
        rv = sm__meta_u64(s, s->db, s->ro, SM_META_APPLIED_INDEX, &index);
    if (rv == 0)
        rv = sm__meta_u64(s, s->db, s->ro, SM_META_APPLIED_TERM, &term);
    uint64_t dropped = 0;
    if (rv == 0)
        rv = sm__meta_u64(s, s->db, s->ro, SM_META_HISTORY_DROPPED, &dropped);
    if (rv != 0)
        return rv;
    s->history_dropped = dropped;
    if (*format > SM_FORMAT) {
        KV_LOGE("VERSION", "state machine %s: format %llu, this build knows 1 to %u", s->dir,
                (unsigned long long)*format, SM_FORMAT);
        return KV_EVERSION;
    }
    assert(index != 0 || term == 0);
    s->applied_index = index;
    s->applied_term = term;
    s->durable_index = index; /* what is in RocksDB after open is durable */
    return 0;
}

/* What a migration puts into its batch, and counts. */
typedef struct sm__migration {
    sm *s;
    rocksdb_writebatch_t *wb;
    uint64_t n, last;
} sm__migration;

static int sm__migrate_v1_one(void *arg, const char *k, size_t klen, const char *v, size_t vlen) {
    sm__migration *m = arg;
    (void)v, (void)vlen;
    rocksdb_writebatch_delete(m->wb, k, klen);
    m->n++;
    return 0;
}

/* Format 1 -> 2 (sm_internal.h), into wb: deletes the 't' order keys and
 * the session count, and checks the count against the 's' records. */
static int sm__migrate_v1(sm *s, rocksdb_writebatch_t *wb, uint64_t *order_v1) {
    uint64_t count_v1 = 0;
    int rv = sm__meta_u64(s, s->db, s->ro, SM_META_SESSIONS_V1, &count_v1);
    sm__migration m = {.s = s, .wb = wb};
    char first = SM_PREFIX_LRU_V1;
    if (rv == 0)
        rv = sm__prefix_each(s, &first, 1, sm__migrate_v1_one, &m, "migrating format 1");
    *order_v1 = m.n;
    if (rv == 0 && (*order_v1 != count_v1 || *order_v1 != s->sessions.count)) {
        KV_LOGE("CORRUPT",
                "state machine %s: format 1 counts %llu sessions, %llu in the order, "
                "%u records",
                s->dir, (unsigned long long)count_v1, (unsigned long long)*order_v1,
                s->sessions.count);
        rv = KV_ECORRUPT;
    }
    rocksdb_writebatch_delete(wb, SM_META_SESSIONS_V1, strlen(SM_META_SESSIONS_V1));
    return rv;
}

static int sm__migrate_v3_one(void *arg, const char *k, size_t klen, const char *v, size_t vlen) {
    sm__migration *m = arg;
    rocksdb_writebatch_put_cf(m->wb, m->s->cf_history, k, klen, v, vlen);
    m->n++;
    uint64_t rev = sm__history_rev(k, klen);
    if (rev != 0)
        m->last = rev;
    return 0;
}

/* Format 3 -> 4 (sm_internal.h), into wb: the 'h' records move from the
 * default family to the history family; *last the revision of the last. */
static int sm__migrate_v3(sm *s, rocksdb_writebatch_t *wb, uint64_t *records, uint64_t *last) {
    sm__migration m = {.s = s, .wb = wb};
    char first = SM_PREFIX_HISTORY, past = SM_PREFIX_HISTORY + 1;
    int rv = sm__prefix_each(s, &first, 1, sm__migrate_v3_one, &m, "migrating format 3");
    rocksdb_writebatch_delete_range(wb, &first, 1, &past, 1);
    *records = m.n;
    *last = m.last;
    return rv;
}

/* Format 1, 2, 3 or 4 -> 5 (sm_internal.h) in one batch: format 1's session
 * order keys go, every user value of format 1 or 2 becomes a record, format
 * 3's history moves to its family (before format 4 the history is marked
 * written through the applied index), and format 5 is stored (format 4's
 * 's' records are format 5's with an empty session log). Like every write
 * here it goes to the memtable only: a crash before the next flush leaves
 * the old format, migrated again at the next open. A new db (format 0) just
 * gets the format. */
static int sm__migrate(sm *s, uint64_t format) {
    assert(format != SM_FORMAT);
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    uint64_t sessions_v1 = 0, keys = 0, records = 0, last = 0;
    int rv = format == SM_FORMAT_V1 ? sm__migrate_v1(s, wb, &sessions_v1) : 0;
    if (rv == 0 && format != 0 && format < SM_FORMAT_V3)
        rv = sm__keys_migrate(s, wb, &keys);
    if (rv == 0 && format == SM_FORMAT_V3)
        rv = sm__migrate_v3(s, wb, &records, &last);
    /* before format 4, the history, whatever there was, is written through it */
    if (format < SM_FORMAT_V4 && s->applied_index > last)
        sm__history_put(s, wb, s->applied_index, "", 0);
    uint8_t v[8];
    kv_put_u64(v, SM_FORMAT);
    rocksdb_writebatch_put(wb, SM_META_FORMAT, strlen(SM_META_FORMAT), (char *)v, sizeof v);
    char *err = NULL;
    if (rv == 0)
        rocksdb_write(s->db, s->wo, wb, &err);
    rocksdb_writebatch_destroy(wb);
    if (err != NULL) {
        rv = sm__fail(s, err);
        KV_LOGE(kv_errword(rv), "state machine %s: migrating format %llu: %s", s->dir,
                (unsigned long long)format, err);
        rocksdb_free(err);
    }
    if (rv == 0 && format != 0)
        KV_LOGI("MIGRATED",
                "state machine %s: format %llu -> %u (%llu sessions, %llu keys, %llu history "
                "records)",
                s->dir, (unsigned long long)format, SM_FORMAT,
                (unsigned long long)(format == SM_FORMAT_V1 ? sessions_v1 : s->sessions.count),
                (unsigned long long)keys, (unsigned long long)records);
    return rv;
}

/* The history must hold every entry applied since its oldest revision. A
 * crash between sm_flush's two flushes can leave it written through less
 * than the applied index (SM_CF_HISTORY): what it misses cannot be made
 * again, so the history before the applied index is dropped, and a watch
 * from there gets COMPACTED rather than a stream with a gap. */
static int sm__history_check(sm *s) {
    uint64_t through = 0;
    int rv = sm__history_last(s, &through);
    if (s->history_dropped > through + 1) /* dropped before it: nothing to miss */
        through = s->history_dropped - 1;
    if (rv != 0 || through >= s->applied_index)
        return rv;
    KV_LOGW("HISTORY",
            "state machine %s: the watch history is written through entry %llu, entries through "
            "%llu are applied",
            s->dir, (unsigned long long)through, (unsigned long long)s->applied_index);
    return sm_history_drop(s);
}

/* The meta keys, the sessions in memory, and the format brought to this
 * build's. */
static int sm__load(sm *s) {
    uint64_t format = 0;
    int rv = sm__load_meta(s, &format);
    if (rv == 0)
        rv = sm__sessions_load(s);
    if (rv == 0)
        rv = sm__leases_load(s);
    if (rv == 0 && format != SM_FORMAT)
        rv = sm__migrate(s, format);
    if (rv == 0)
        rv = sm__history_check(s);
    return rv;
}

enum sm__dir_state { SM_DIR_NONE, SM_DIR_DB, SM_DIR_NO_CURRENT };

/* Whether db_dir holds a RocksDB. Files without CURRENT are not "no db":
 * opening with create_if_missing would start afresh over them and RocksDB
 * would delete them, so that case is corruption, never a new state. */
static enum sm__dir_state sm__dir_state(const char *db_dir) {
    char path[SM_PATH_BYTES_MAX + 16];
    snprintf(path, sizeof path, "%s/CURRENT", db_dir);
    struct stat st;
    if (stat(path, &st) == 0)
        return SM_DIR_DB;
    DIR *d = opendir(db_dir);
    if (d == NULL)
        return SM_DIR_NONE;
    struct dirent *e;
    bool files = false;
    while (!files && (e = readdir(d)) != NULL)
        files = strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
                strncmp(e->d_name, "LOG", 3) != 0;
    closedir(d);
    return files ? SM_DIR_NO_CURRENT : SM_DIR_NONE;
}

static void sm__free(sm *s) {
    if (s->cf_default != NULL)
        rocksdb_column_family_handle_destroy(s->cf_default);
    if (s->cf_history != NULL)
        rocksdb_column_family_handle_destroy(s->cf_history);
    if (s->db != NULL)
        rocksdb_close(s->db);
    sm__sessions_free(&s->sessions);
    sm__leases_free(&s->leases);
    sm__kcache_free(&s->kcache);
    sm__batch_free(s->batch);
    if (s->ro != NULL)
        rocksdb_readoptions_destroy(s->ro);
    if (s->wo != NULL)
        rocksdb_writeoptions_destroy(s->wo);
    sm__options_free(s->options, s->table);
    sm__options_free(s->hoptions, s->htable);
    pthread_mutex_destroy(&s->err_mu);
    free(s);
}

int sm_open(const char *db_dir, const sm_options *opt, sm **out) {
    assert(db_dir != NULL && out != NULL);
    sm *s = calloc(1, sizeof *s);
    if (s == NULL)
        return KV_ENOMEM;
    if (opt != NULL)
        s->opt = *opt;
    else
        sm_options_default(&s->opt);
    if (s->opt.sessions_max < 1 || s->opt.sessions_max > KV_SESSIONS_MAX ||
        s->opt.history_revs < 1 || s->opt.history_revs > KV_WATCH_HISTORY_REVS ||
        s->opt.session_log_records < 1 || s->opt.session_log_records > SM_SESSION_LOG_RECORDS ||
        s->opt.key_cache_slots > SM_KEY_CACHE_SLOTS_MAX ||
        (s->opt.key_cache_slots & (s->opt.key_cache_slots - 1)) != 0 ||
        s->opt.key_cache_slots == 1 || strlen(db_dir) >= sizeof s->dir) {
        free(s);
        return KV_EINVAL;
    }
    snprintf(s->dir, sizeof s->dir, "%s", db_dir);
    pthread_mutex_init(&s->err_mu, NULL);
    if (sm__dir_state(db_dir) == SM_DIR_NO_CURRENT) {
        KV_LOGE("CORRUPT", "state machine %s: files but no CURRENT: not starting afresh", db_dir);
        pthread_mutex_destroy(&s->err_mu);
        free(s);
        return KV_ECORRUPT;
    }
    s->options = sm__options_new(&s->table);
    s->hoptions = sm__history_options_new(&s->htable);
    s->ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_verify_checksums(s->ro, 1);
    s->wo = rocksdb_writeoptions_create();
    rocksdb_writeoptions_disable_WAL(s->wo, 1); /* the Raft log is the WAL */
    char *err = NULL;
    const char *names[2] = {"default", SM_CF_HISTORY};
    const rocksdb_options_t *cfo[2] = {s->options, s->hoptions};
    rocksdb_column_family_handle_t *cf[2] = {NULL, NULL};
    s->db = rocksdb_open_column_families(s->options, db_dir, 2, names, cfo, cf, &err);
    s->cf_default = cf[0];
    s->cf_history = cf[1];
    if (err != NULL) {
        int rv = sm__rocks_err(err);
        KV_LOGE(kv_errword(rv), "state machine: open %s: %s", db_dir, err);
        rocksdb_free(err);
        s->db = NULL;
        sm__free(s);
        return rv;
    }
    int rv = sm__kcache_init(&s->kcache, s->opt.key_cache_slots);
    if (rv == 0)
        rv = sm__load(s);
    if (rv != 0) {
        sm__free(s);
        return rv;
    }
    assert(s->durable_index == s->applied_index);
    *out = s;
    return 0;
}

void sm_close(sm *s) {
    if (s == NULL)
        return;
    assert(s->db != NULL);
    int rv = sm_flush(s);
    if (rv != 0)
        KV_LOGE(kv_errword(rv), "state machine %s: flush at close failed", s->dir);
    sm__free(s);
}

void sm_compact(sm *s) {
    assert(s != NULL && s->db != NULL);
    /* Flushed first, in sm_flush's order: compacting the keys would
     * otherwise flush them alone, ahead of the history (SM_CF_HISTORY). */
    if (sm_flush(s) != 0)
        return; /* logged; the next write or flush fails with it */
    rocksdb_compact_range_cf(s->db, s->cf_default, NULL, 0, NULL, 0);
    rocksdb_compact_range_cf(s->db, s->cf_history, NULL, 0, NULL, 0);
}

int sm_flush(sm *s) {
    assert(s != NULL && s->db != NULL);
    /* The applied index is read before the flush: every batch up to it was
     * written before the flush switched memtables, so the flush covers it,
     * whether apply runs on this thread or on another (snapshot.c's worker
     * flush, snap_create_live). */
    uint64_t applied = atomic_load(&s->applied_index);
    rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
    rocksdb_flushoptions_set_wait(fo, 1);
    char *err = NULL;
    /* The default family first: the history flushed next covers at least
     * the entries it does, whether or not apply runs beside this
     * (SM_CF_HISTORY). */
    rocksdb_flush_cf(s->db, fo, s->cf_default, &err);
    if (err == NULL)
        rocksdb_flush_cf(s->db, fo, s->cf_history, &err);
    rocksdb_flushoptions_destroy(fo);
    if (err != NULL)
        return sm__failed(s, err, true, "flush");
    sm__durable_raise(s, applied);
    assert(s->durable_index <= s->applied_index);
    return 0;
}

uint64_t sm_applied_index(sm *s) {
    assert(s != NULL);
    return s->applied_index;
}

uint64_t sm_applied_term(sm *s) {
    assert(s != NULL);
    return s->applied_term;
}

uint64_t sm_durable_index(sm *s) {
    assert(s != NULL);
    uint64_t d = s->durable_index;
    assert(d <= s->applied_index);
    return d;
}

/*
 * The Raft log is the durability point: a log prefix is dropped only once
 * the state it covers is durable in RocksDB (flushed) or in a snapshot.
 *
 * sm_apply writes with the RocksDB WAL off, so entries after the durable
 * index exist only in the memtable and in the Raft log; a crash loses the
 * memtable and the log replays them. Hence the bound: entries up to
 * max(durable index, newest snapshot index) may go, none after. The
 * snapshot index given must name a snapshot already durable (renamed into
 * place and its directory synced); it can never exceed what was applied.
 */
uint64_t sm_log_drop_bound(sm *s, uint64_t snapshot_index) {
    assert(s != NULL);
    uint64_t durable = sm_durable_index(s);
    assert(snapshot_index <= s->applied_index);
    uint64_t bound = durable > snapshot_index ? durable : snapshot_index;
    assert(bound <= s->applied_index);
    return bound;
}

/* The record stored for a user key: its revisions into *info (may be NULL),
 * its value into *r. KV_ECORRUPT (logged) when it does not decode. */
static int sm__rec_read(sm *s, const void *raw, size_t len, sm__rec *r, sm_key_info *info) {
    if (sm__rec_decode(raw, len, r) != 0) {
        KV_LOGE("CORRUPT", "state machine %s: a key's record of %zu bytes does not decode", s->dir,
                len);
        return KV_ECORRUPT;
    }
    assert(r->len <= KV_VALUE_BYTES_MAX);
    if (info != NULL)
        *info = (sm_key_info){.create_rev = r->create_rev,
                              .mod_rev = r->mod_rev,
                              .version = r->version,
                              .lease = r->lease};
    return 0;
}

int sm_get_ex(sm *s, const void *key, size_t klen, void **val, size_t *vlen, sm_key_info *info) {
    assert(s != NULL && val != NULL && vlen != NULL);
    if (klen > KV_KEY_BYTES_MAX)
        return KV_ENOTFOUND; /* never stored */
    uint8_t k[1 + KV_KEY_BYTES_MAX];
    k[0] = SM_PREFIX_DATA;
    if (klen > 0)
        memcpy(k + 1, key, klen);
    char *err = NULL;
    rocksdb_pinnableslice_t *v = rocksdb_get_pinned(s->db, s->ro, (char *)k, klen + 1, &err);
    if (err != NULL) {
        int rv = sm__fail(s, err);
        KV_LOGE(kv_errword(rv), "state machine %s: get: %s", s->dir, err);
        rocksdb_free(err);
        return rv;
    }
    if (v == NULL)
        return KV_ENOTFOUND;
    size_t len = 0;
    const char *p = rocksdb_pinnableslice_value(v, &len);
    sm__rec r;
    int rv = sm__rec_read(s, p, len, &r, info);
    void *copy = NULL;
    if (rv == 0) {
        copy = malloc(r.len ? r.len : 1);
        if (copy != NULL && r.len > 0)
            memcpy(copy, r.value, r.len);
        rv = copy == NULL ? KV_ENOMEM : 0;
    }
    rocksdb_pinnableslice_destroy(v);
    if (rv != 0)
        return rv;
    *val = copy;
    *vlen = r.len;
    return 0;
}

int sm_get(sm *s, const void *key, size_t klen, void **val, size_t *vlen) {
    return sm_get_ex(s, key, klen, val, vlen, NULL);
}

int sm_membership(sm *s, uint8_t **buf, size_t *len) {
    assert(s != NULL && buf != NULL && len != NULL);
    char *err = NULL;
    size_t n = 0;
    char *v = rocksdb_get(s->db, s->ro, SM_META_MEMBERSHIP, strlen(SM_META_MEMBERSHIP), &n, &err);
    if (err != NULL) {
        int rv = sm__fail(s, err);
        rocksdb_free(err);
        return rv;
    }
    if (v == NULL)
        return KV_ENOTFOUND;
    uint8_t *copy = malloc(n ? n : 1);
    if (copy != NULL)
        memcpy(copy, v, n);
    rocksdb_free(v);
    if (copy == NULL)
        return KV_ENOMEM;
    *buf = copy;
    *len = n;
    return 0;
}

/* Iterator over user keys (without the 'd') from one RocksDB snapshot. */
typedef struct sm__iter {
    rocksdb_iterator_t *it;
    rocksdb_readoptions_t *ro;
    const rocksdb_snapshot_t *snap;
    rocksdb_t *db;
    sm *s;
} sm__iter;

static void sm__iter_open(sm *s, sm__iter *it, const void *seek, size_t len) {
    assert(len <= KV_KEY_BYTES_MAX + 1);
    it->s = s;
    it->db = s->db;
    it->snap = rocksdb_create_snapshot(s->db);
    it->ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_verify_checksums(it->ro, 1);
    rocksdb_readoptions_set_snapshot(it->ro, it->snap);
    it->it = rocksdb_create_iterator(s->db, it->ro);
    uint8_t k[2 + KV_KEY_BYTES_MAX];
    k[0] = SM_PREFIX_DATA;
    if (len > 0)
        memcpy(k + 1, seek, len);
    rocksdb_iter_seek(it->it, (char *)k, len + 1);
    assert(it->it != NULL);
}

/* The current user key, or NULL when past the user keys. */
static const uint8_t *sm__iter_key(sm__iter *it, size_t *klen) {
    if (!rocksdb_iter_valid(it->it))
        return NULL;
    size_t n = 0;
    const char *k = rocksdb_iter_key(it->it, &n);
    if (n < 1 || k[0] != SM_PREFIX_DATA)
        return NULL;
    *klen = n - 1;
    return (const uint8_t *)k + 1;
}

/* Closes it; returns the iterator's error, if any, as a KV_E* code. */
static int sm__iter_close(sm__iter *it) {
    char *err = NULL;
    rocksdb_iter_get_error(it->it, &err);
    int rv = 0;
    if (err != NULL) {
        rv = sm__fail(it->s, err);
        KV_LOGE(kv_errword(rv), "state machine: iterator: %s", err);
        rocksdb_free(err);
    }
    rocksdb_iter_destroy(it->it);
    rocksdb_readoptions_destroy(it->ro);
    rocksdb_release_snapshot(it->db, it->snap);
    return rv;
}

int sm_scan(sm *s, const void *prefix, size_t plen, const void *start_after, size_t salen,
            uint32_t keys_max, uint64_t bytes_max, sm_scan_fn fn, void *arg, bool *more) {
    assert(s != NULL && fn != NULL && more != NULL);
    if (keys_max < 1 || keys_max > KV_SCAN_KEYS_MAX || plen > KV_KEY_BYTES_MAX ||
        salen > KV_KEY_BYTES_MAX || bytes_max < 1)
        return KV_EINVAL;
    bool after = salen > 0 && (salen > plen || memcmp(start_after, prefix, plen) >= 0);
    sm__iter it;
    sm__iter_open(s, &it, after ? start_after : prefix, after ? salen : plen);
    uint32_t keys = 0;
    uint64_t bytes = 0;
    int rv = 0;
    *more = false;
    size_t klen = 0;
    const uint8_t *k;
    while ((k = sm__iter_key(&it, &klen)) != NULL) {
        if (klen < plen || memcmp(k, prefix, plen) != 0)
            break;
        if (after && klen == salen && memcmp(k, start_after, salen) == 0) {
            rocksdb_iter_next(it.it);
            continue;
        }
        size_t vlen = 0;
        const char *v = rocksdb_iter_value(it.it, &vlen);
        sm__rec r;
        sm_key_info info;
        rv = sm__rec_read(s, v, vlen, &r, &info);
        if (rv != 0)
            break;
        if (keys == keys_max || (keys > 0 && bytes + klen + r.len > bytes_max)) {
            *more = true;
            break;
        }
        rv = fn(arg, k, klen, r.value, r.len, &info);
        if (rv != 0)
            break;
        keys++;
        bytes += klen + r.len;
        rocksdb_iter_next(it.it);
    }
    int irv = sm__iter_close(&it);
    assert(keys <= keys_max);
    return irv != 0 ? irv : rv;
}

struct sm_view {
    sm__iter it;
    kv_xxh3_state h;
    uint64_t applied;
    int rv;
};

int sm_view_open(sm *s, sm_view **out) {
    assert(s != NULL && out != NULL);
    sm_view *v = calloc(1, sizeof(*v));
    if (v == NULL)
        return KV_ENOMEM;
    int rv = kv_xxh3_init(&v->h);
    if (rv != 0) {
        free(v);
        return rv;
    }
    sm__iter_open(s, &v->it, "", 0);
    v->rv = sm__meta_u64(s, s->db, v->it.ro, SM_META_APPLIED_INDEX, &v->applied);
    *out = v;
    return 0;
}

/* The view's next key that the hash covers, prefix included: user keys
 * ('d'), lease indexes ('k') and leases ('l'), the replicated state that
 * every node must hold alike. The watch history is in its own family: a
 * node may have dropped or not yet trimmed some of it (sm_history_drop).
 * NULL past them. */
static const uint8_t *sm__view_key(sm_view *v, size_t *klen) {
    if (!rocksdb_iter_valid(v->it.it))
        return NULL;
    const char *k = rocksdb_iter_key(v->it.it, klen);
    return *klen < 1 || k[0] > SM_PREFIX_LEASE ? NULL : (const uint8_t *)k;
}

int sm_view_hash_step(sm_view *v, uint32_t keys_max, bool *done, uint64_t *hash) {
    size_t klen = 0;
    const uint8_t *k;
    uint8_t len8[8];
    *done = false;
    for (uint32_t n = 0; n < keys_max && (k = sm__view_key(v, &klen)) != NULL; n++) {
        size_t vlen = 0;
        const char *val = rocksdb_iter_value(v->it.it, &vlen);
        /* lengths first, so ("ab","c") and ("a","bc") differ */
        kv_put_u64(len8, klen);
        kv_xxh3_update(&v->h, len8, 8);
        kv_xxh3_update(&v->h, k, klen);
        kv_put_u64(len8, vlen);
        kv_xxh3_update(&v->h, len8, 8);
        kv_xxh3_update(&v->h, val, vlen);
        rocksdb_iter_next(v->it.it);
    }
    if (sm__view_key(v, &klen) != NULL)
        return 0;
    char *err = NULL;
    rocksdb_iter_get_error(v->it.it, &err);
    if (err != NULL) {
        v->rv = sm__fail(v->it.s, err);
        KV_LOGE(kv_errword(v->rv), "state machine: iterator: %s", err);
        rocksdb_free(err);
    }
    kv_put_u64(len8, v->applied);
    kv_xxh3_update(&v->h, len8, 8);
    *hash = kv_xxh3_digest(&v->h);
    *done = true;
    return v->rv;
}

void sm_view_close(sm_view *v) {
    if (v == NULL)
        return;
    sm__iter_close(&v->it);
    kv_xxh3_free(&v->h);
    free(v);
}

int sm_hash(sm *s, uint64_t *hash) {
    assert(s != NULL && hash != NULL);
    sm_view *v;
    int rv = sm_view_open(s, &v);
    if (rv != 0)
        return rv;
    bool done = false;
    while (rv == 0 && !done)
        rv = sm_view_hash_step(v, UINT32_MAX, &done, hash);
    sm_view_close(v);
    return rv;
}

/* Reports a RocksDB error as CORRUPT, naming the SST file when the text
 * names one ("... in /path/000009.sst offset 0 size 98"). */
static void sm__check_report(const char *db_dir, const char *err, kv_check_fn fn, void *arg) {
    char file[SM_PATH_BYTES_MAX];
    snprintf(file, sizeof file, "%s", db_dir);
    uint64_t offset = KV_CHECK_NO_OFFSET;
    const char *sst = strstr(err, ".sst");
    if (sst != NULL) {
        const char *start = sst;
        while (start > err && start[-1] != ' ' && start[-1] != ':')
            start--;
        int n = (int)(sst + 4 - start);
        snprintf(file, sizeof file, "%.*s", n, start);
        unsigned long long off = 0;
        if (sscanf(sst + 4, " offset %llu", &off) == 1)
            offset = off; /* the bad block's offset in that file */
    }
    kv_check_problem p = {
        .word = "CORRUPT", .file = file, .offset = offset, .index = 0, .detail = err};
    if (fn != NULL)
        fn(arg, &p);
}

/* Reads every key of an open db with checksums verified. */
static int sm__check_scan(rocksdb_t *db, rocksdb_column_family_handle_t *cf, const char *db_dir,
                          kv_check_fn fn, void *arg) {
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_verify_checksums(ro, 1);
    rocksdb_readoptions_set_fill_cache(ro, 0);
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(db, ro, cf);
    assert(it != NULL);
    uint64_t keys = 0;
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it))
        keys++;
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    if (err == NULL)
        return 0;
    sm__check_report(db_dir, err, fn, arg);
    KV_LOGE("CORRUPT", "state machine %s: after %llu keys: %s", db_dir, (unsigned long long)keys,
            err);
    rocksdb_free(err);
    return KV_ECORRUPT;
}

int sm_check(const char *db_dir, kv_check_fn fn, void *arg) {
    assert(db_dir != NULL);
    enum sm__dir_state state = sm__dir_state(db_dir);
    if (state == SM_DIR_NONE)
        return 0; /* a data dir holding only a log is valid */
    if (state == SM_DIR_NO_CURRENT) {
        kv_check_problem p = {.word = "CORRUPT",
                              .file = db_dir,
                              .offset = KV_CHECK_NO_OFFSET,
                              .detail = "RocksDB files but no CURRENT"};
        if (fn != NULL)
            fn(arg, &p);
        return KV_ECORRUPT;
    }
    rocksdb_block_based_table_options_t *table = NULL;
    rocksdb_options_t *o = sm__options_new(&table);
    rocksdb_options_set_create_if_missing(o, 0);
    char *err = NULL;
    /* every column family there is (a format 3 db has no history one) */
    size_t n = 0;
    char **names = rocksdb_list_column_families(o, db_dir, &n, &err);
    rocksdb_t *db = NULL;
    rocksdb_column_family_handle_t *cf[4] = {NULL};
    if (err == NULL && (n < 1 || n > 4))
        err = strdup("unexpected column families");
    if (err == NULL) {
        const rocksdb_options_t *cfo[4] = {o, o, o, o};
        db = rocksdb_open_for_read_only_column_families(o, db_dir, (int)n, (const char **)names,
                                                        cfo, cf, 0, &err);
    }
    int rv = 0;
    if (err != NULL) {
        sm__check_report(db_dir, err, fn, arg);
        KV_LOGE("CORRUPT", "state machine %s: open read-only: %s", db_dir, err);
        rocksdb_free(err);
        rv = KV_ECORRUPT;
    } else {
        for (size_t i = 0; i < n && rv == 0; i++)
            rv = sm__check_scan(db, cf[i], db_dir, fn, arg);
        for (size_t i = 0; i < n; i++)
            rocksdb_column_family_handle_destroy(cf[i]);
        rocksdb_close(db);
    }
    if (names != NULL)
        rocksdb_list_column_families_destroy(names, n);
    sm__options_free(o, table);
    assert(rv == 0 || rv == KV_ECORRUPT);
    return rv;
}
