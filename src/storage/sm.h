/*
 * The state machine: committed Raft entries applied to RocksDB.
 *
 * The replicated state is one column family; keys carry a one-byte prefix so
 * that one memtable flush is atomic for all of it (docs/rules.md,
 * etcd#13967):
 *   'd' + user key                   user data: a record (sm_internal.h) of
 *                                    the key's revisions, lease and value
 *   'k' + be64(lease) + user key     the keys attached to a lease (empty)
 *   'l' + be64(lease id)             a lease (kv.Lease: id, ttl); "leases" below
 *   'm' + name                       meta: applied index and term, membership,
 *                                    format (5; sm_open migrates 1 to 4)
 *   's' + be64(client id)            a client session (kv.Session, with the
 *                                    log index of its last use)
 *   'u' + be64(log index)            the session log: the session records
 *                                    made by the write whose last entry is
 *                                    that index (kv.SessionLog), until folded
 *                                    into the 's' records
 * The watch history is a second family ("history", sm_internal.h):
 *   'h' + be64(revision)             the events of the entry at that log
 *                                    index (kv.HistoryRecord); the newest
 *                                    history_revs revisions
 *
 * Revisions are log indexes (proto/kv.proto): a key's mod_rev is the index
 * of the entry that last wrote it, create_rev the index that created it,
 * version its writes since. Keys written before format 3 read as revisions
 * 0, version 1.
 *
 * Sessions: the table and its eviction order (least recently used by log
 * index, ties by client id) live in memory, rebuilt from the 's' records and
 * the session log at sm_open, so also after snap_restore, which reopens. A
 * session command appends its record to its write's log and reads nothing
 * (a retry of a failed CAS reads its stored value back); an eviction
 * deletes the 's' record and says so in the log.
 *
 * Durability: sm_apply writes with the RocksDB WAL disabled, because the Raft
 * log is the durability point. After a crash RocksDB holds a consistent older
 * state (data, applied index and sessions of the same entry), and the caller
 * replays the log after sm_applied_index(). The log may drop a prefix only up
 * to sm_log_drop_bound().
 *
 * Threads: sm_apply, sm_flush, sm_close and the snapshot calls that take an
 * sm come from one thread (the apply thread), except snap_create_live
 * (snapshot.h), which may run on one other thread while it applies. sm_get,
 * sm_scan, sm_hash, sm_membership and the index getters may run on other
 * threads at the same time; each sees the state after some whole apply
 * batch.
 */
#ifndef KV_STORAGE_SM_H
#define KV_STORAGE_SM_H

#include "storage/check.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sm sm;

typedef struct sm_options {
    /* Client sessions kept, 1..KV_SESSIONS_MAX. It must be the same on every
     * node: eviction is part of the replicated state. */
    uint32_t sessions_max;
    /* Revisions of watch history kept, 1..KV_WATCH_HISTORY_REVS; the same
     * on every node and across restarts (lowering it leaves older records
     * behind). Smaller only in tests. */
    uint32_t history_revs;
    /* Session records kept in the session log before it is folded into one
     * record per session (sm_session.c), 1..SM_SESSION_LOG_RECORDS: a
     * node's own layout, free to differ between nodes. Smaller only in
     * tests. */
    uint32_t session_log_records;
    /* Slots of the key cache (sm_keys.c): the revisions and lease of keys
     * written or read lately, so that a PUT or DELETE over one does not
     * read RocksDB; 0 (off) or a power of two from 2 up to
     * SM_KEY_CACHE_SLOTS_MAX, SM_KEY_CACHE_SLOT_BYTES each. A node's own,
     * free to differ between nodes: it changes no reply and no stored
     * byte. */
    uint32_t key_cache_slots;
} sm_options;

/* The default of sm_options.session_log_records, and its largest value. */
#define SM_SESSION_LOG_RECORDS 8192u
/* The key cache's default and largest slot counts (sm_options); each slot
 * takes SM_KEY_CACHE_SLOT_BYTES, so the default costs 11 MiB a node. */
#define SM_KEY_CACHE_SLOTS 131072u
#define SM_KEY_CACHE_SLOTS_MAX (1u << 22)
#define SM_KEY_CACHE_SLOT_BYTES 88u

/* Fills *opt with the defaults (sessions_max = KV_SESSIONS_MAX,
 * history_revs = KV_WATCH_HISTORY_REVS, session_log_records =
 * SM_SESSION_LOG_RECORDS). */
void sm_options_default(sm_options *opt);

enum sm_entry_type {
    SM_ENTRY_NOOP = 0,
    SM_ENTRY_COMMAND = 1,    /* payload: an encoded kv.Command */
    SM_ENTRY_MEMBERSHIP = 2, /* payload: an encoded kv.Membership */
};

typedef struct sm_entry {
    uint64_t index;
    uint64_t term;
    enum sm_entry_type type;
    const uint8_t *payload; /* borrowed for the call */
    size_t len;
} sm_entry;

/* The outcome of one entry. */
typedef struct sm_reply {
    int code;             /* 0 or KV_ENOTFOUND, KV_ECOMPARE, KV_ETOOBIG, ... */
    uint64_t index;       /* log index at which the command was applied */
    uint64_t client_id;   /* REGISTER: the new session id (its index) */
    bool current_present; /* COMPARE: whether the key has a value */
    uint8_t *current;     /* COMPARE: the current value; malloc'd, owned by
                             the caller (sm_replies_free); NULL when none */
    size_t current_len;   /* bytes at current */
    const char *detail;   /* static text or NULL, e.g. "session expired", or why */
    char *why;            /* a detail made for this reply (detail points here);
                             malloc'd (sm_replies_free) */
    bool succeeded;       /* TXN: every compare held */
    struct Kv__TxnResult **results; /* TXN: one per op run; malloc'd, each one
                                       block (sm_replies_free) */
    size_t n_results;
    uint64_t deleted; /* DELETE_PREFIX, LEASE_REVOKE: keys deleted */
    bool more;        /* DELETE_PREFIX: keys remain past the limit */
    uint64_t lease;   /* LEASE_GRANT: the new lease's id (the entry's index) */
} sm_reply;

/* Frees what replies[0..n) own (not the array). */
void sm_replies_free(sm_reply *replies, size_t n);

/* A transaction's limits, checked before anything runs (by the state
 * machine, and by the server before it proposes one): at most
 * KV_TXN_OPS_MAX compares and ops, keys 1..KV_KEY_BYTES_MAX bytes, values
 * at most KV_VALUE_BYTES_MAX, known enums. 0, or KV_EINVAL / KV_ETOOBIG
 * with words naming the op in why (cap bytes). */
struct Kv__Txn;
int sm_txn_check(const struct Kv__Txn *t, char *why, size_t cap);

/* Opens (creating when missing) the RocksDB state machine at db_dir. opt may
 * be NULL for the defaults; it is copied. On success *out is owned by the
 * caller and released with sm_close(). A format 1 db is migrated in place
 * (its 't' order keys deleted). KV_EVERSION for an unknown format,
 * KV_ECORRUPT when RocksDB reports corruption, KV_EIO otherwise. */
int sm_open(const char *db_dir, const sm_options *opt, sm **out);

/* Flushes (sm_flush) and closes; s may be NULL. Never fails: a flush error
 * is logged and the state is recovered from the Raft log on the next open. */
void sm_close(sm *s);

/* Applies entries e[0..n) in one RocksDB write batch, together with the new
 * applied index/term, the session changes and the watch history (a prefix
 * delete or a lease revoke first writes the entries before it: RocksDB
 * always holds whole entries with the index of the last). e[0].index must
 * be greater than the applied index, the indexes contiguous, the terms not
 * decreasing: KV_EINVAL otherwise, and nothing is applied. replies[0..n)
 * (caller provided) get one reply per entry; their current values are owned
 * by the caller (sm_replies_free). KV_ECORRUPT (RocksDB reports corruption)
 * or KV_EIO when RocksDB refuses a write, KV_ENOMEM when memory ran out
 * (also while decoding a payload, which must not become a "does not decode"
 * reply on this node only): the caller fail-stops; replies then hold
 * nothing to free, and sm_applied_index tells how far the call got. */
int sm_apply(sm *s, const sm_entry *e, size_t n, sm_reply *replies);

/* A key's revisions (log indexes) and lease (0: none). */
typedef struct sm_key_info {
    uint64_t create_rev;
    uint64_t mod_rev;
    uint64_t version;
    uint64_t lease;
} sm_key_info;

/* The value of key: *val malloc'd, owned by the caller (free()), *vlen its
 * bytes; *info (when not NULL) its revisions. KV_ENOTFOUND when absent,
 * KV_ECORRUPT when the stored record does not decode. */
int sm_get_ex(sm *s, const void *key, size_t klen, void **val, size_t *vlen, sm_key_info *info);
/* sm_get_ex without the revisions. */
int sm_get(sm *s, const void *key, size_t klen, void **val, size_t *vlen);

/* Called once per key in order; the pointers live only for the call. A
 * non-zero return stops the scan and is returned by sm_scan. */
typedef int (*sm_scan_fn)(void *arg, const void *key, size_t klen, const void *val, size_t vlen,
                          const sm_key_info *info);

/* Calls fn for keys starting with prefix[0..plen) and greater than
 * start_after[0..salen) (salen 0: from the first), in key order, at most
 * keys_max keys (1..KV_SCAN_KEYS_MAX) and about bytes_max key+value bytes
 * (at least one key is given even when it alone is larger). *more is true
 * when matching keys remain after the last one given. */
int sm_scan(sm *s, const void *prefix, size_t plen, const void *start_after, size_t salen,
            uint32_t keys_max, uint64_t bytes_max, sm_scan_fn fn, void *arg, bool *more);

uint64_t sm_applied_index(sm *s);
uint64_t sm_applied_term(sm *s);

/* The oldest revision whose watch history is kept: applied index -
 * history_revs + 1 (1 while fewer revisions exist), or later after
 * sm_history_drop. Any thread. */
uint64_t sm_history_oldest(sm *s);

/* Drops the watch history up to the applied index, on this node only, to
 * give disk space back (the NOSPACE alarm): a watch from an earlier
 * revision is then refused with COMPACTED here, never given less. A range
 * delete of the records and the new oldest revision go in one write, so a
 * crash keeps both or neither; the history files below it are deleted at
 * once, the rest at the next sm_compact. On the apply thread. 0 or a
 * RocksDB error. */
int sm_history_drop(sm *s);

/* The applied index known durable in RocksDB (flushed); <= applied index. */
uint64_t sm_durable_index(sm *s);

/* The encoded kv.Membership last applied: *buf malloc'd, owned by the
 * caller (free()). KV_ENOTFOUND when none was applied yet. */
int sm_membership(sm *s, uint8_t **buf, size_t *len);

/* xxh3 over every user key and record, lease and lease index entry in key
 * order (not the watch history, which a node may have dropped), plus the
 * applied index, taken from one consistent RocksDB snapshot. */
int sm_hash(sm *s, uint64_t *hash);

/* A consistent view of the state machine as it is at sm_view_open (a
 * RocksDB snapshot), for hashing a large store in steps between other work
 * (kvcli check must not stall the node's loop for a whole scan). The view
 * must be closed before sm_close or snap_restore of its sm. */
typedef struct sm_view sm_view;
int sm_view_open(sm *s, sm_view **out);
/* Hashes up to keys_max more keys; *done and *hash (sm_hash's value at the
 * view's moment) once all are in. 0 or a RocksDB error (KV_ECORRUPT, ...). */
int sm_view_hash_step(sm_view *v, uint32_t keys_max, bool *done, uint64_t *hash);
void sm_view_close(sm_view *v);

/* Flushes the memtable and waits; then sm_durable_index() >= the applied
 * index at the call. Also from snap_create_live's thread while apply runs. KV_ECORRUPT when RocksDB found corruption (a
 * background compaction that read a damaged SST fails every later flush
 * and write), KV_EIO on another failure; the caller fail-stops. */
int sm_flush(sm *s);

/* Compacts all of RocksDB now (deleted keys give their space back). Slow:
 * for the NOSPACE alarm. */
void sm_compact(sm *s);
/* RocksDB's status text of the last failure of a call on s, into buf
 * (cap bytes, NUL-terminated; "" when none). For corruption RocksDB names
 * the file: "Corruption: block checksum mismatch: ... in DIR/000013.sst
 * offset 902 size 909". Any thread. */
#define SM_ERROR_BYTES 512u /* room for a status text with a path */
void sm_last_error(sm *s, char *buf, size_t cap);

/* ---- watch history (sm_history.c) ------------------------------------------
 * Each applied entry that changed keys leaves a record of its events, in
 * their order, under its revision (its log index). The records of the
 * newest history_revs revisions are kept (sm_history_oldest, above). */

enum sm_event_type { SM_EVENT_PUT = 0, SM_EVENT_DELETE = 1 }; /* kv.WatchEvent.Type */

/* One event; the pointers live only for the callback. */
typedef struct sm_event {
    enum sm_event_type type;
    uint64_t rev; /* the revision (log index) of the entry that made it */
    const void *key;
    size_t klen;
    const void *value; /* PUT: the new value; DELETE: empty */
    size_t vlen;
    uint64_t create_rev, mod_rev, version, lease; /* PUT: the new record; DELETE: mod_rev = rev */
} sm_event;

/* A non-zero return stops sm_history_read, which returns it. */
typedef int (*sm_history_fn)(void *arg, const sm_event *ev);

/* A place in the history: the event number `event` (counting every event
 * of the record, whatever its key) of revision rev. {rev, 0}: from the
 * start of rev. */
typedef struct sm_history_pos {
    uint64_t rev;
    uint32_t event;
} sm_history_pos;

/* Calls fn for each event from *pos whose key starts with prefix[0..plen),
 * in revision order (an entry's events in their order), from one RocksDB
 * snapshot, until about bytes_max key+value bytes were given (at least one
 * event per call; a record may be split between calls). *pos moves to
 * where the next call resumes: once every applied record was read, to
 * {applied index + 1, 0} of the snapshot, so that pos->rev - 1 is always
 * the revision through which the events were all given. KV_ECOMPACTED when
 * pos->rev is applied but older than sm_history_oldest; KV_EINVAL for
 * pos->rev 0 or plen over KV_KEY_BYTES_MAX; KV_ECORRUPT, a RocksDB error,
 * or fn's return. Any thread (like sm_scan). */
int sm_history_read(sm *s, sm_history_pos *pos, const void *prefix, size_t plen,
                    uint64_t bytes_max, sm_history_fn fn, void *arg);

/* The highest log index whose entries may be deleted (see sm.c). */
uint64_t sm_log_drop_bound(sm *s, uint64_t snapshot_index);

/* ---- leases (sm_lease.c) ------------------------------------------------
 * A lease ('l' + be64(id)) has the id of its LEASE_GRANT entry and a TTL in
 * seconds; keys attached to it ('k' + be64(id) + key, kept by the writes)
 * are deleted with it by LEASE_REVOKE, in one entry. The state machine
 * knows no clock: when a lease expires is the leader's to decide
 * (src/server/server_lease.c), which then proposes LEASE_REVOKE. The
 * leases live in memory too (id, ttl, keys attached), rebuilt at sm_open
 * (so after a snapshot restore). Limits: KV_LEASES_MAX leases (a grant past
 * it: KV_ETOOBIG), KV_LEASE_KEYS_MAX keys on one (an attach past it:
 * KV_ETOOBIG), ttl 1..KV_LEASE_TTL_MAX (else KV_EINVAL); a put with a lease
 * that does not exist: KV_ENOTFOUND "lease not found", nothing written.
 * Threads: these calls run on the apply thread only (kvd: the loop). */
typedef struct sm_lease_info {
    uint64_t id;   /* the index of its LEASE_GRANT entry */
    int64_t ttl;   /* seconds */
    uint64_t keys; /* attached now */
} sm_lease_info;
/* Called per lease in id order; a non-zero return stops the walk and is
 * returned by sm_leases_each. l lives only for the call. */
typedef int (*sm_lease_fn)(void *arg, const sm_lease_info *l);
int sm_leases_each(sm *s, sm_lease_fn fn, void *arg);
/* 0 and *out, or KV_ENOTFOUND. */
int sm_lease_get(sm *s, uint64_t id, sm_lease_info *out);
size_t sm_leases_count(sm *s);
/* The key cache's hits and misses (sm_options.key_cache_slots) since the
 * open: lookups by PUT and DELETE that did and did not find the key there.
 * Apply thread. */
void sm_key_cache_counts(sm *s, uint64_t *hits, uint64_t *misses);
/* Changes whenever a lease is granted or revoked or its key count changes,
 * also across a reload: equal values mean the table is as it was. */
uint64_t sm_leases_generation(sm *s);

/* Checks the RocksDB at db_dir read-only: opens it with paranoid checks and
 * reads every key with checksums verified. Problems go to fn as CORRUPT with
 * the db dir or the SST file named by RocksDB. A missing db_dir is nothing
 * to check: 0. Returns 0 or KV_ECORRUPT. */
int sm_check(const char *db_dir, kv_check_fn fn, void *arg);

#endif /* KV_STORAGE_SM_H */
