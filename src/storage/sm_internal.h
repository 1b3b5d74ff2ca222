/* Internals shared by sm.c, sm_apply.c and the snapshot files. Not public. */
#ifndef KV_STORAGE_SM_INTERNAL_H
#define KV_STORAGE_SM_INTERNAL_H

#include "storage/sm.h"

#include <pthread.h>
#include <rocksdb/c.h>
#include <stdatomic.h>

#define SM_PREFIX_DATA 'd'
#define SM_PREFIX_HISTORY 'h'
#define SM_PREFIX_LEASE_KEYS 'k'
#define SM_PREFIX_LEASE 'l'
#define SM_PREFIX_META 'm'
#define SM_PREFIX_SESSION 's'
/* Format 5: 'u' + be64(index), the session log (kv.SessionLog): the session
 * records of one write, the one whose last entry is index (sm_session.c).
 * Past SM_PREFIX_LEASE, so state hashes never cover it. */
#define SM_PREFIX_SESSION_LOG 'u'
/* Format 1 only: 't' + be64(last index) + be64(id), the sessions in eviction
 * order. Format 2 rebuilds that order in memory from the 's' records, and
 * sm_open deletes these keys when it migrates a format 1 db. */
#define SM_PREFIX_LRU_V1 't'

#define SM_META_APPLIED_INDEX "mapplied_index"
#define SM_META_APPLIED_TERM "mapplied_term"
#define SM_META_MEMBERSHIP "mmembership"
#define SM_META_SESSIONS_V1 "msessions_count" /* format 1 only */
#define SM_META_FORMAT "mformat"
#define SM_META_HISTORY_DROPPED "mhistory_dropped" /* sm_history_drop's oldest */

/* The watch history's column family: 'h' + be64(revision) records only, so
 * its files never overlap and its compactions never rewrite older ones.
 * Each batch (sm_batch.c) writes a record for its last entry, empty when
 * that entry changed nothing, so the last record tells how far the history
 * is written. It is written in the same batches as the default family. The
 * keys are flushed by sm_flush, which flushes the history right after them
 * (and RocksDB does not flush the keys on its own while snapshots keep up:
 * SM_KEYS_WRITE_BUFFER_BYTES), so the history on disk is behind the keys
 * only when a crash falls between the two flushes, or after RocksDB had to
 * flush the keys alone: then sm_open finds the last record below the
 * applied index and drops the history before it (COMPACTED), never
 * serving a gap. The history may be ahead: its records past the applied
 * index are never read, and written again when their entries are. */
#define SM_CF_HISTORY "history"
/* The keys' write buffer: twice a snapshot's worth (a snapshot flushes
 * every SERVER_SNAPSHOT_BYTES_DEFAULT, 64 MiB, of entries at the most), so
 * RocksDB flushes the keys by itself only when snapshots fall behind; two
 * such buffers (one being flushed) stay well under a node's memory budget. */
#define SM_KEYS_WRITE_BUFFER_BYTES (128u << 20)
/* The keys' compaction. Snapshots flush small files into L0 (a few MiB
 * every SERVER_SNAPSHOT_ENTRIES_DEFAULT entries), and keys written at
 * random overlap every file of L1, so each L0 -> L1 compaction rewrites the
 * whole of L1. With RocksDB's defaults (4 files, L1 of 256 MiB) that is a
 * rewrite of up to 256 MiB for every 12 MiB written: the compaction's CPU
 * grew with the data (3 kvd nodes, 600,000 puts: 6 CPU-seconds of
 * compaction per node, and put throughput fell by a third). Eight files
 * per compaction and an L1 of about their size (RocksDB's tuning guide)
 * keep each compaction's rewrite near its input; the levels below take the
 * rest ten to one. Reads look into at most eight L0 files, each behind a
 * bloom filter. docs/benchmarks.md "Compaction" has the figures. */
#define SM_KEYS_L0_FILES_COMPACT 8
#define SM_KEYS_L1_BYTES (32u << 20)
#define SM_KEYS_FILE_BYTES (8u << 20)

/* Version of the key layout above; stored under SM_META_FORMAT.
 *   1: sessions with their eviction order in 't' keys and a count in
 *      msessions_count (four writes and a read per session command).
 *   2: the 's' records only; the order and the count live in memory,
 *      rebuilt at open.
 *   3: 'd' values are records with revisions (below); watch history 'h' and
 *      lease indexes 'k'.
 *   4: the watch history in its own column family (SM_CF_HISTORY), flushed
 *      and compacted apart from the keys, whose compactions no longer
 *      rewrite it.
 *   5: the session log ('u'): a write's session records go into one key,
 *      folded into the 's' records now and then (sm_session.c).
 * sm_open migrates a format 1, 2, 3 or 4 db in place, in one batch. */
#define SM_FORMAT 5u
#define SM_FORMAT_V1 1u
#define SM_FORMAT_V2 2u
#define SM_FORMAT_V3 3u
#define SM_FORMAT_V4 4u

/* ---- user keys (sm_keys.c) -------------------------------------------------
 * A 'd' value: SM_REC_HEADER_BYTES of header (byte 0 SM_REC_TAG, then
 * create_rev, mod_rev, version, lease as u64 little-endian) and the value. */
#define SM_REC_TAG 1u
#define SM_REC_HEADER_BYTES 33u

typedef struct sm__rec {
    uint64_t create_rev, mod_rev, version, lease;
    const uint8_t *value; /* points into the stored bytes */
    size_t len;
} sm__rec;

/* Decodes a stored 'd' value; KV_ECORRUPT when it is not a record. */
int sm__rec_decode(const void *raw, size_t len, sm__rec *r);

/* The key cache (sm_options.key_cache_slots): sets of two slots chosen by
 * the key's hash, the one used last first (a new key pushes out the other),
 * each slot a key of up to SM_KEY_CACHE_KEY_BYTES and its record header, or
 * that the key is absent. Its one rule: a slot that names a key
 * holds that key's state as the call's writes left it. sm__key_put and
 * sm__key_delete set the slot of every key they write (every change of a
 * user key goes through them) and sm__key_read the slot of every key it
 * reads, so a hit is the answer RocksDB (and the call's overlay) would
 * give. A failed call may have set slots for writes that never reached
 * RocksDB: sm__apply_undo empties the cache. A new sm (open, a restored
 * snapshot) starts empty. Longer keys are never cached. A hit means the
 * put does not read the old record, so a record damaged on disk since it
 * was cached is overwritten rather than reported by that put; RocksDB's
 * block checksums still report it to the next read, compaction or check
 * (sm_check) of its block. test_sm_kcache runs every kind of entry with
 * the cache off, at 2 slots and at 4, and compares replies and hashes. */
#define SM_KEY_CACHE_KEY_BYTES 54u

typedef struct sm__kslot {
    uint64_t create_rev, mod_rev, version, lease;
    uint8_t state; /* SM__KSLOT_FREE, _PRESENT or _ABSENT */
    uint8_t klen;
    uint8_t key[SM_KEY_CACHE_KEY_BYTES];
} sm__kslot;

typedef struct sm__kcache {
    sm__kslot *slot;       /* NULL: off */
    size_t mask;           /* slots - 1 */
    uint64_t hits, misses; /* sm__key_head's, since the open */
} sm__kcache;

int sm__kcache_init(sm__kcache *c, uint32_t slots);
void sm__kcache_free(sm__kcache *c);
void sm__kcache_clear(sm__kcache *c);

/* One entry's history record: events[from, to) of its sm__batch. */
typedef struct sm__hist {
    uint64_t rev;
    size_t from, to;
} sm__hist;

/* The batch's writes by key, for reads during the apply (sm_batch.c). */
typedef struct sm__overlay {
    struct sm__ov_slot *slot; /* open addressing, cap a power of two */
    size_t cap, count;
    uint32_t gen; /* the slots of this generation are used; never 0 */
    uint8_t *mem; /* the keys and values */
    size_t len, mem_cap;
} sm__overlay;

/* One sm_apply call (sm_batch.c): the writes of its entries not yet in the
 * db, in a plain RocksDB batch and, by key, in an overlay that reads
 * consult before the db, so an entry sees what the earlier entries of the
 * call and its own earlier ops wrote (PUT then CAS on one key, a txn's get
 * after its put); and the watch events of those entries (kv.HistoryRecord
 * bytes, one record per entry that changed keys, put into the history
 * family when the batch is written, sm__batch_write). */
typedef struct sm__batch {
    sm *s;
    rocksdb_writebatch_t *wb;
    sm__overlay ov;
    int err;                /* a write that failed to reach ov: KV_ENOMEM */
    uint64_t rev;           /* the index of the entry being applied */
    int entry_writes;       /* the batch's count when it started */
    uint64_t done_index;    /* the last entry applied whole (at first: applied) */
    uint64_t done_term;     /* ... its term */
    uint8_t *events;        /* the encoded events of the entries in wb */
    size_t events_len, events_cap;
    size_t entry_from;      /* where the entry being applied starts in events */
    sm__hist *hist;         /* the records so far, hist_count of them */
    size_t hist_count, hist_cap;
    uint8_t *slog;          /* the session records of the entries in wb
                               (kv.SessionLog bytes, sm__session_log_add) */
    size_t slog_len, slog_cap;
    size_t slog_from;       /* where the entry being applied starts in slog */
    uint64_t slog_records;
} sm__batch;

/* Makes *buf (malloc'd, *cap bytes) hold at least need bytes, doubling.
 * 0 or KV_ENOMEM (*buf unchanged). */
int sm__reserve(uint8_t **buf, size_t *cap, size_t need);
/* s's batch for a call of up to n entries, empty; its buffers are kept from
 * call to call (apply thread only). NULL when out of memory. */
sm__batch *sm__batch_begin(sm *s, size_t n);
/* After the call: what it left unwritten is dropped, and buffers grown past
 * SM_BATCH_KEEP_BYTES by a large call are given back. */
#define SM_BATCH_KEEP_BYTES (4u << 20)
void sm__batch_end(sm__batch *b);
/* Frees s's batch (sm_close). */
void sm__batch_free(sm__batch *b);
/* Starts entry e; ends it once applied whole (its history record noted). */
void sm__entry_start(sm__batch *b, const sm_entry *e);
void sm__entry_end(sm__batch *b, const sm_entry *e);
/* Writes to the batch (and its overlay). */
void sm__bput(sm__batch *b, const void *k, size_t klen, const void *v, size_t vlen);
/* A value in two parts (a record's header and its value). */
void sm__bput2(sm__batch *b, const void *k, size_t klen, const void *v1, size_t len1,
               const void *v2, size_t len2);
void sm__bdelete(sm__batch *b, const void *k, size_t klen);
/* Reads k through the batch and the db. 0 with *v malloc'd (rocksdb_free)
 * when present, KV_ENOTFOUND when absent, another code on a read error
 * (logged, kept for sm_last_error). */
int sm__bget(sm__batch *b, const void *k, size_t klen, char **v, size_t *vlen);
/* An iterator over the db, for an entry that has written nothing yet: the
 * entries before it are written first (sm__batch_write), so it sees them.
 * 0 with *it (rocksdb_iter_destroy) or sm__batch_write's error. */
int sm__biter(sm__batch *b, rocksdb_iterator_t **it);
/* Writes the entries applied whole so far in one RocksDB write, with their
 * history records and the applied index (and term, when it changed), and
 * moves sm_applied_index to them. 0, or KV_ENOSPACE, KV_ECORRUPT or KV_EIO
 * (logged). */
int sm__batch_write(sm__batch *b);

/* Reads user key through the batch and the db: 0 with *rec filled, pointing
 * into *raw (the caller rocksdb_free()s it; NULL when absent), KV_ENOTFOUND,
 * KV_ECORRUPT for a record that does not decode, or a RocksDB error. */
int sm__key_read(sm__batch *b, const void *key, size_t klen, sm__rec *rec, char **raw);
/* The same without the value (rec->value NULL, rec->len 0), from the key
 * cache when it holds key: what a PUT or a DELETE needs. */
int sm__key_head(sm__batch *b, const void *key, size_t klen, sm__rec *rec);
/* The only ways a user key changes. Each writes the record (revisions from
 * prev, NULL when absent, and b->rev), keeps the lease index, and adds the
 * watch event to the entry's history record. 0 or KV_ENOMEM. */
int sm__key_put(sm__batch *b, const void *key, size_t klen, const void *val, size_t vlen,
                uint64_t lease, const sm__rec *prev);
int sm__key_delete(sm__batch *b, const void *key, size_t klen, const sm__rec *prev);
/* Puts into wb the history record of rev (kv.HistoryRecord bytes; empty,
 * no events, marks the history written through rev: SM_CF_HISTORY). */
void sm__history_put(sm *s, rocksdb_writebatch_t *wb, uint64_t rev, const void *rec, size_t len);
/* The revision of the last history record, 0 when there is none. */
int sm__history_last(sm *s, uint64_t *rev);
/* The oldest revision kept at applied index applied, with sm_history_drop's
 * oldest dropped (0: none): sm_history_oldest, also of a RocksDB snapshot. */
uint64_t sm__history_oldest_at(sm *s, uint64_t applied, uint64_t dropped);
/* Deletes the history files below sm_history_oldest when the applied index
 * went from before to after across a multiple of SM_HISTORY_TRIM_EVERY. */
#define SM_HISTORY_TRIM_EVERY 4096u
void sm__history_trim(sm *s, uint64_t before, uint64_t after);

/* ---- transactions and delete by prefix (sm_txn.c) ----
 * c's effect, its reply in r (code 0 preset); 0 or an error that fails the
 * whole apply (a RocksDB read error, KV_ENOMEM). */
struct Kv__Command;
struct Kv__TxnResult;
int sm__txn(sm__batch *b, const struct Kv__Command *c, sm_reply *r);
int sm__delete_prefix(sm__batch *b, const struct Kv__Command *c, sm_reply *r);
/* A copy of r as one block (free()); NULL when out of memory. */
struct Kv__TxnResult *sm__txn_result_dup(const struct Kv__TxnResult *r);

/* Rewrites every format 1/2 'd' value as a record (revisions 0, version 1)
 * into wb. 0 or a RocksDB error. */
int sm__keys_migrate(sm *s, rocksdb_writebatch_t *wb, uint64_t *keys);

#define SM_PATH_BYTES_MAX 4096u

/* ---- sessions (sm_session.c) ----------------------------------------------
 * One client session in memory: everything of its 's' record but what a
 * reply holds beyond code, index and client id (a COMPARE's current value,
 * a TXN's results, a DELETE_PREFIX's count), which stays in RocksDB only
 * and is read back for a duplicate (reply_full). */
typedef struct sm__session {
    uint64_t id;              /* client id: the index of its REGISTER; 0: free slot */
    uint64_t last_seq;        /* seq of the last command applied (0: none) */
    uint64_t last_index;      /* log index of its last use: the eviction order */
    uint64_t reply_index;     /* the reply to last_seq ... */
    uint64_t reply_client_id; /* ... */
    int32_t reply_code;       /* ... */
    bool has_reply;           /* the record holds a reply */
    bool reply_full;          /* the reply holds more than these fields (in RocksDB) */
    uint32_t prev, next;      /* eviction list (next: free list for free slots) */
    uint32_t hnext;           /* hash chain */
} sm__session;

/* Sessions by client id (hash table over a pool of cap slots) and in
 * eviction order (a list from head, least recently used, to tail). */
typedef struct sm__sessions {
    sm__session *pool;
    uint32_t *buckets; /* 1 << bucket_bits chains of slot numbers */
    uint32_t bucket_bits;
    uint32_t cap, count;
    uint32_t head, tail, free;
} sm__sessions;

/* Rebuilds s->sessions from the 's' records of s->db, in (last_index, id)
 * order. 0, KV_ECORRUPT (a record that does not decode), KV_ENOMEM, or a
 * RocksDB error; on an error s->sessions is left as it was. */
int sm__sessions_load(sm *s);
void sm__sessions_free(sm__sessions *t);
/* NULL when id has no session. */
sm__session *sm__sessions_find(sm__sessions *t, uint64_t id);
/* Adds session id, used at last_index (the tail of the order); the table
 * must have room (count < cap). Returns the slot, owned by the table. */
sm__session *sm__sessions_insert(sm__sessions *t, uint64_t id, uint64_t last_index);
/* x used at index: moved to the tail. */
void sm__sessions_touch(sm__sessions *t, sm__session *x, uint64_t index);
/* Removes the least recently used session; returns its id. */
uint64_t sm__sessions_evict(sm__sessions *t);
/* Copies the reply fields and last_seq of a record into x. */
struct Kv__Session;
struct Kv__Reply;
void sm__session_from_pb(sm__session *x, const struct Kv__Session *pb);
/* Whether a stored reply holds more than a session keeps in memory: then a
 * duplicate reads it back from the record. */
bool sm__reply_full(const struct Kv__Reply *pb);
/* The session log (format 5). Every session record an entry makes (a
 * REGISTER, a command, a duplicate; an eviction as a record with last_index
 * 0) is appended to its batch's log, and a batch write puts the whole log
 * under one 'u' + be64(last index) key: one write per batch instead of one
 * per command, each of which cost a search of the keys' memtable about as
 * dear as the user key's own (callgrind, `kvbench sm`). Once the logs in
 * the db hold opt.session_log_records records or SM_SESSION_LOG_BYTES, a
 * batch write folds them: each live session whose last record is in them
 * gets it as its 's' record, and the 'u' keys are deleted, in the same
 * batch. At open the 's' records are read, then the logs in order, the
 * last record of each session winning. */
#define SM_SESSION_LOG_BYTES (16u << 20)
/* Appends a session record (or, with last_index 0, an eviction) to b's log.
 * 0 or KV_ENOMEM. */
int sm__session_log_add(sm__batch *b, const struct Kv__Session *ss);
/* Puts b's log into b->wb, folding the logs when they are due (*folded).
 * 0 or a RocksDB error (reading the logs to fold them). */
int sm__session_log_write(sm__batch *b, bool *folded);
/* The stored record of session id as of its use at index (the record made
 * then), read from b's log, the db's logs or its 's' record: NULL and
 * KV_ENOTFOUND when there is none, KV_ENOMEM, or a RocksDB error.
 * kv__session__free_unpacked. */
int sm__session_record(sm__batch *b, uint64_t id, uint64_t index, struct Kv__Session **out);

/* A hash of the table in eviction order (ids, seqs, indexes, replies): two
 * state machines that will evict alike and answer duplicates alike have the
 * same digest. For tests. */
uint64_t sm__sessions_digest(sm *s);

/* ---- leases (sm_lease.c) -------------------------------------------------
 * The leases in memory, sorted by id (sm_lease.c has the invariants). */
typedef struct sm__leases {
    sm_lease_info *v;
    size_t n, cap;
    uint64_t gen; /* changes with every change of the table (sm_leases_generation) */
} sm__leases;

struct sm {
    rocksdb_t *db;
    rocksdb_column_family_handle_t *cf_default;
    rocksdb_column_family_handle_t *cf_history; /* SM_CF_HISTORY */
    rocksdb_options_t *options;
    rocksdb_block_based_table_options_t *table;
    rocksdb_options_t *hoptions; /* the history family's */
    rocksdb_block_based_table_options_t *htable;
    rocksdb_readoptions_t *ro;
    rocksdb_writeoptions_t *wo; /* WAL disabled */
    sm_options opt;
    char dir[SM_PATH_BYTES_MAX];
    _Atomic uint64_t applied_index;
    _Atomic uint64_t applied_term;
    _Atomic uint64_t durable_index;
    _Atomic uint64_t history_dropped; /* oldest revision after sm_history_drop, 0: none */
    sm__sessions sessions;    /* apply thread only */
    uint64_t slog_records;    /* apply thread: session records in the db's logs ('u') */
    uint64_t slog_bytes;      /* ... and their bytes */
    sm__leases leases;        /* apply thread only (sm_lease.c) */
    sm__kcache kcache;        /* apply thread only (sm_keys.c) */
    sm__batch *batch;         /* apply thread only (sm_batch.c), NULL until the first apply */
    int broken;               /* apply thread: a failed apply whose sessions
                                 could not be reloaded; every later apply fails */
    pthread_mutex_t err_mu;   /* guards err: readers fail on other threads */
    char err[SM_ERROR_BYTES]; /* the last RocksDB error text, "" when none */
};

/* Options for opening a db of ours: paranoid checks, xxh3 block checksums.
 * Owned by the caller: sm__options_free(). */
rocksdb_options_t *sm__options_new(rocksdb_block_based_table_options_t **table);
/* The same for the history family: no bloom filters (it is only scanned). */
rocksdb_options_t *sm__history_options_new(rocksdb_block_based_table_options_t **table);
void sm__options_free(rocksdb_options_t *o, rocksdb_block_based_table_options_t *table);

/* Reads a u64 meta key (8 bytes little-endian; 0 when absent). A RocksDB
 * error is kept in rec (sm__fail) when rec is not NULL. */
int sm__meta_u64(sm *rec, rocksdb_t *db, const rocksdb_readoptions_t *ro, const char *name,
                 uint64_t *out);

/* Maps a RocksDB error text to a KV_E* code (frees nothing). */
int sm__rocks_err(const char *err);

/* sm__rocks_err, and keeps err for sm_last_error (frees nothing). */
int sm__fail(sm *s, const char *err);

/* A RocksDB call that set err failed: err is kept for sm_last_error, logged
 * ("state machine DIR: what: ERR") and freed; returns sm__fail's code, or
 * for a write, a flush or a checkpoint (write true) the one the node stops
 * with: KV_ENOSPACE, KV_ECORRUPT or else KV_EIO. */
int sm__failed(sm *s, char *err, bool write, const char *what);

/* Destroys it; its error, if any, goes through sm__failed, else 0. */
int sm__iter_done(sm *s, rocksdb_iterator_t *it, const char *what);
/* Calls fn for every key of the default family that starts with prefix
 * (plen bytes), in key order, until fn returns non-zero. The iterator's
 * error (sm__iter_done, logged with what), else fn's code, else 0. */
typedef int (*sm__kv_fn)(void *arg, const char *k, size_t klen, const char *v, size_t vlen);
int sm__prefix_each(sm *s, const void *prefix, size_t plen, sm__kv_fn fn, void *arg,
                    const char *what);

/* durable_index := max(durable_index, index), from any thread (sm_flush on
 * the apply thread, snap_create_live on another). */
static inline void sm__durable_raise(sm *s, uint64_t index) {
    uint64_t d = atomic_load(&s->durable_index);
    while (d < index && !atomic_compare_exchange_weak(&s->durable_index, &d, index)) {
    }
}

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

/* prefix + be64(v): a history record's key ('h' + revision), a session's
 * ('s' + id), a session log's ('u' + index) and a lease's ('l' + id). */
static inline void sm__key9(uint8_t k[9], uint8_t prefix, uint64_t v) {
    k[0] = prefix;
    sm__put_be64(k + 1, v);
}

/* The v of sm__key9(k, prefix, v); 0 when k is not such a key. */
static inline uint64_t sm__key9_value(const char *k, size_t klen, uint8_t prefix) {
    return klen == 9 && (uint8_t)k[0] == prefix ? sm__get_be64((const uint8_t *)k + 1) : 0;
}

/* 'h' + be64(rev): the key of revision rev's history record. */
static inline void sm__history_key(uint8_t k[9], uint64_t rev) {
    sm__key9(k, SM_PREFIX_HISTORY, rev);
}

/* The tag and length of a length-delimited field 1 of len bytes (a
 * HistoryRecord's event, a SessionLog's session), written at p: at most
 * SM_FIELD1_HEADER_BYTES. Returns where the field's bytes go. */
#define SM_FIELD1_HEADER_BYTES 11u
static inline uint8_t *sm__field1_header(uint8_t *p, size_t len) {
    *p++ = (1u << 3) | 2u;
    uint64_t v = len;
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}
/* The revision of history key k, 0 when k is not one. */
static inline uint64_t sm__history_rev(const char *k, size_t klen) {
    return sm__key9_value(k, klen, SM_PREFIX_HISTORY);
}

/* ---- leases, continued (sm_lease.c) ---------------------------------------- */

/* Rebuilds s->leases from the 'l' records and the 'k' index (sm_open, and
 * after a failed apply). 0, KV_ECORRUPT, KV_ENOMEM or a RocksDB error; on
 * an error s->leases is left as it was. */
int sm__leases_load(sm *s);
void sm__leases_free(sm__leases *t);
/* A key moved from lease `from` to lease `to` (0: none): its index entry
 * was moved by the caller. Called by sm__key_put and sm__key_delete only. */
void sm__lease_keys_moved(sm *s, uint64_t from, uint64_t to);
struct Kv__Command;
/* LEASE_GRANT at entry b->rev: a lease with that id and c->ttl; r->lease. */
int sm__lease_grant(sm__batch *b, const struct Kv__Command *c, sm_reply *r);
/* LEASE_REVOKE c->lease: every key attached deleted (sm__key_delete), then
 * the lease; r->deleted. Unknown lease: r->code KV_ENOTFOUND. */
int sm__lease_revoke(sm__batch *b, const struct Kv__Command *c, sm_reply *r);
/* Before a write attaches key to lease (0: none, always fine): r->code
 * KV_ENOTFOUND "lease not found" when the lease does not exist, KV_ETOOBIG
 * when it has KV_LEASE_KEYS_MAX keys and key is not one of them; the
 * caller then writes nothing. Returns 0 or a read error (fail-stop). */
int sm__lease_attach_check(sm__batch *b, uint64_t lease, const void *key, size_t klen,
                           sm_reply *r);
/* sm__lease_attach_check for the puts of a transaction's ops[0..n) that
 * will run, before any runs: every lease must exist, and have room for
 * all of the txn's puts on it (each counted as a new key: at the limit, a
 * txn re-putting keys already attached is refused too). */
struct Kv__TxnOp;
int sm__lease_txn_check(sm__batch *b, struct Kv__TxnOp *const *ops, size_t n, sm_reply *r);

#endif
