/*
 * The write-ahead log: Raft log entries in segmented, checksummed files
 * under DIR/wal/, appended with group commit (one pwrite and one fdatasync
 * for many appends) by one storage thread.
 *
 * FORMAT (version 2, little-endian)
 *
 *   segment file  "%016x.wal" (segment sequence, hex), written as ".tmp",
 *                 synced, renamed, directory synced: a segment under its
 *                 final name always has a complete header.
 *   segment header (WAL_SEGMENT_HEADER_BYTES = 48)
 *       magic u64 "KVWALSEG", version u32, flags u32 (bit 0: RESET, this
 *       segment starts a new log and every earlier segment is obsolete),
 *       sequence u64, first index u64, term of (first index - 1) u64,
 *       xxh3 of the preceding 40 bytes u64.
 *   batches, back to back: what one group commit wrote with one pwrite
 *     batch header (WAL_BATCH_HEADER_BYTES = 48)
 *       xxh3 u64 of the next 40 bytes, magic u32 "KVWB", flags u32 (bit 0:
 *       OVERRIDE, see rule 6), segment sequence u64, first index u64,
 *       record count u32 (>= 1, or 0 for an override marker), payload
 *       bytes u32, xxh3 u64 of the payload.
 *     payload: count records, back to back (KV_WAL_RECORD_HEADER_BYTES +
 *       data each): xxh3 u64 over every following byte of the record, data
 *       length u32, type u8, 3 zero bytes, term u64, index u64, data. (The
 *       record's own checksum lets wal_read verify one entry alone.)
 *   zeros: segments are zero-filled ahead of the batches (1 MiB at a time)
 *       so an fdatasync rarely has to journal a size change.
 *
 * Format 1 (records without batches) is not read: its segments are
 * reported as VERSION and wal_open fails with KV_EVERSION. kv is pre-1.0;
 * a node is upgraded by wiping its data dir and rejoining.
 *
 * DEFINITIONS
 *
 *   synced   bytes covered by an fdatasync (of the file) that returned 0, and
 *            names covered by a directory sync that returned 0. Only synced
 *            data is ever acknowledged.
 *   damaged  a batch whose header or payload checksum fails or that is cut
 *            short by the end of the file.
 *   torn     a damaged batch that may be the one in flight at a crash: the
 *            pages written since the last fdatasync reach the disk in any
 *            order and any subset (docs/rules.md "power loss keeps some unsynced pages and not
 * others"), so that batch can be any mix of its new bytes, zeros and garbage. It was never
 * acknowledged: it is cut off (wal_open) and reported TORN; the node starts. corrupt  damage in
 * synced data, or a batch that is whole (its checksums hold) and still wrong: a bad sequence, index
 * or term. Reported CORRUPT with file, offset and the index expected there; nothing is truncated
 * and the log does not open (KV_ECORRUPT).
 *
 * RULES (the writer keeps them; the scan relies on them)
 *
 *   1. A batch is written with one pwrite and acknowledged only after the
 *      fdatasync covering it returned 0. The next batch is written only
 *      after that fdatasync, so a segment holds at most one unsynced batch
 *      and it is the last batch in the file.
 *   2. Every segment but the last was synced whole before its successor was
 *      created: damage in it is CORRUPT.
 *   3. In the last segment, a damaged batch followed by a valid batch header
 *      of the same segment (magic, header checksum, sequence) was synced
 *      (rule 1): CORRUPT. A damaged batch with no valid batch header after
 *      it is the batch in flight: TORN.
 *   4. After the last valid batch, an all-zero remainder is the end of the
 *      log (preallocated space, or a batch in flight none of whose pages
 *      reached the disk): neither torn nor corrupt. The limit of rules 3-4:
 *      a synced last batch that the medium turns into garbage or zeros is
 *      indistinguishable from a batch in flight (TORN, or the end).
 *      Assumed of the disk (SQLite's "powersafe overwrite"): a power loss
 *      while a sector is written never damages the bytes of that sector
 *      that were rewritten unchanged. A batch starts right after the last
 *      one, so the sector they share is rewritten with the synced batch's
 *      tail as it was; a disk that garbles that tail would make the synced
 *      batch look torn. Aligning batches to sectors would drop the
 *      assumption at the cost of up to a sector of padding per batch.
 *   5. Indexes are consecutive within and across segments (a segment's
 *      first index continues its predecessor's last) and terms never
 *      decrease: a segment's base term equals the term of the entry before
 *      its first index, and every record's term is >= the previous one.
 *      wal_append refuses (KV_EINVAL) what would break this.
 *   6. A conflicting suffix (Raft: entries >= k are replaced) is never cut
 *      out of a segment in place: cutting a batch in its middle means
 *      rewriting its header, and a crash tearing that header would lose
 *      the acknowledged entries before k in it. Instead the
 *      segments holding only entries > k are unlinked, newest first, each
 *      unlink followed by a directory sync (so a crash leaves a prefix of
 *      the log, never a gap), and the next batch, written in the segment
 *      holding k, carries OVERRIDE with first index k: the scan drops the
 *      segment's entries >= k read before it. When that segment is full,
 *      the override goes as a marker (no records) before the next segment
 *      is started. The old records stay in the file, dead; since the
 *      override is synced before its append is acknowledged and is removed
 *      only with its whole segment, a replaced suffix never comes back. A
 *      batch without OVERRIDE must start at the next index; one with it
 *      must start within its segment and at most at the next index.
 *   7. A segment is created as ".tmp" (synced), renamed, and the directory
 *      synced before any batch goes in it. Segments are unlinked one at a
 *      time with a directory sync after each (drop prefix oldest first,
 *      conflicting suffix newest first), so every crash leaves a sequence
 *      without gaps; a gap is MISSING. A reset makes its RESET segment
 *      durable first; the older segments may then go in any order.
 *      The only cut in place is wal_open's, of a torn batch: it is synced
 *      before anything is written over it.
 *   8. A write or sync error is final (docs/rules.md, "fsync errors are final (fsyncgate)"): every
 *      pending and later append fails with KV_EIO.
 *
 * Threads: the log runs two threads. The storage thread writes batches and
 * syncs them; the callbacks of a synced batch run in queue order either on
 * the storage thread (when nothing else is waiting) or on the log's
 * completion thread (so they overlap the next batch's fdatasync); on the
 * caller's thread only for wal_append_now on an idle log. wal_append* and
 * the readers (wal_first_index,
 * wal_last_index, wal_term_at, wal_read) may be called from any thread;
 * one internal mutex guards the in-memory index. wal_drop_prefix, wal_reset
 * and wal_close block the caller; call them from one thread, never from an
 * append callback.
 */
#ifndef KV_STORAGE_WAL_H
#define KV_STORAGE_WAL_H

#include "storage/check.h"
#include "storage/fs.h"

#include <stddef.h>
#include <stdint.h>

#define WAL_FORMAT_VERSION 2u
#define WAL_SEGMENT_HEADER_BYTES 48u
#define WAL_BATCH_HEADER_BYTES 48u

typedef struct wal wal;

/* One Raft log entry. type is the caller's entry type, opaque to the log;
 * len <= KV_ENTRY_BYTES_MAX (checked on append and on decode). */
typedef struct wal_entry {
    uint64_t index;
    uint64_t term;
    uint8_t type;
    uint32_t len;
    uint8_t *data; /* payload; owned as documented by the call */
} wal_entry;

typedef struct wal_options {
    /* A new segment is started when a record would take the current one
     * past this size (a record larger than it goes alone in a segment).
     * Tests make it tiny; default KV_WAL_SEGMENT_BYTES_DEFAULT. */
    uint64_t segment_bytes;
    /* Bytes of appends queued and not yet acknowledged; past it wal_append
     * returns KV_EBUSY. Default and maximum KV_WAL_QUEUE_BYTES_MAX. */
    uint64_t queue_bytes_max;
    /* Bytes one fdatasync covers at most (a single larger append still
     * goes alone). Default and maximum KV_WAL_BATCH_BYTES_MAX. */
    uint64_t batch_bytes_max;
    /* An fdatasync slower than this is logged (SLOWDISK) and counted;
     * 0: never. Default 100 ms. */
    uint64_t slow_sync_ns;
} wal_options;

/* Fills o with the defaults. */
void wal_options_default(wal_options *o);

/* Called once per accepted append, on one of the log's threads (see
 * above), in queue order, after the fdatasync covering all its entries
 * returned (status 0), or with KV_EIO when a write or sync failed (this
 * append's or an earlier one's), or KV_EINVAL when a wal_drop_prefix or
 * wal_reset queued before it made its index impossible, or its first term
 * is below the term of the entry before it (rule 5). It may call
 * wal_append; it must not call wal_append_wait, wal_drop_prefix, wal_reset
 * or wal_close, and should return quickly: later callbacks wait for it. */
typedef void (*wal_done_fn)(void *arg, int status);

/* Opens the log of the data dir dir (DIR/wal/ must exist: dd_init). Scans
 * every segment and rebuilds the in-memory index (rules above):
 *  - a torn batch is truncated durably, reported as TORN (file, offset of
 *    the batch, index expected there) and open succeeds;
 *  - corruption: KV_ECORRUPT, reported as CORRUPT (file, offset, index
 *    expected), nothing truncated;
 *  - a gap in segment sequence or index: MISSING, KV_ECORRUPT; an empty or
 *    headerless segment: CORRUPT, KV_ECORRUPT; another format version:
 *    VERSION, KV_EVERSION.
 * A fresh directory gets its first segment (first index 1). fn may be NULL.
 * Ownership: *out is the caller's; free it with wal_close(). */
int wal_open(kv_fs *fs, const char *dir, const wal_options *opt, kv_check_fn fn, void *arg,
             wal **out);

/* The same scan, read-only: reports TORN without truncating. 0 when clean
 * or only torn, KV_ECORRUPT (or KV_EVERSION, KV_EMISSING when DIR/wal is
 * absent) otherwise. When last_term is not NULL and the scan succeeded, it
 * gets the highest term in the log (the last entry's, or the term before
 * the first index of an empty log), as hs_check wants it. */
int wal_check(kv_fs *fs, const char *dir, kv_check_fn fn, void *arg, uint64_t *last_term);

/* Stops the log's threads after everything already queued has been
 * written and synced and its callbacks have run; closes the files, frees
 * w. Appends racing with wal_close get KV_ESHUTDOWN. */
void wal_close(wal *w);

/* Queues n >= 1 entries with contiguous indexes for the storage thread and
 * returns; the entries and payloads are copied (the caller keeps them).
 * If e[0].index <= the last index (counting appends still queued), the log
 * first drops every entry >= e[0].index (Raft: a conflicting suffix is
 * truncated), then appends, in queue order. cb(arg, status) runs exactly
 * once when this call returned 0, never otherwise. Returns:
 *   KV_EINVAL   n == 0, indexes not contiguous, terms decreasing within e,
 *               e[0].index below the first index or past last + 1;
 *   KV_ETOOBIG  a payload over KV_ENTRY_BYTES_MAX, or the append alone over
 *               the queue limit;
 *   KV_EBUSY    the queue is full: nothing kept, retry later;
 *   KV_EIO      the log failed earlier (fail-stop): nothing kept;
 *   KV_ESHUTDOWN the log is closing. */
int wal_append(wal *w, const wal_entry *e, size_t n, wal_done_fn cb, void *arg);

/* wal_append, but when the log is idle (nothing queued, being written or
 * waiting for its callback) and its last fdatasync took under
 * WAL_NOW_SYNC_NS_MAX, the caller's thread writes and syncs the entries and
 * runs cb before it returns: two thread hand-offs fewer on the way from an
 * append to its callback, for a caller that would wait for it anyway (a
 * follower acknowledges entries only once durable). Otherwise it queues
 * them as wal_append does, so a disk that turns slow holds the caller up
 * once, not on every append. The same returns; cb runs exactly once when it
 * returned 0. */
#define WAL_NOW_SYNC_NS_MAX (10u * 1000u * 1000u)
int wal_append_now(wal *w, const wal_entry *e, size_t n, wal_done_fn cb, void *arg);

/* wal_append, then waits for its callback: its status, or wal_append's
 * error. For tests and the benchmark. */
int wal_append_wait(wal *w, const wal_entry *e, size_t n);

/* Readers see durable entries only: an append becomes visible when its
 * sync returned. A conflicting append makes the dropped suffix vanish when
 * the storage thread reaches it. first_index = last_index + 1 when the log
 * is empty (after wal_reset). */
uint64_t wal_first_index(wal *w);
uint64_t wal_last_index(wal *w);

/* Term of the entry at index. The entry just before the first one (the
 * last one compacted, or the snapshot of wal_reset) is known too. Returns
 * KV_ECOMPACTED below that, KV_ENOTFOUND past the last index. */
int wal_term_at(wal *w, uint64_t index, uint64_t *term);

/* Reads the entries [lo, hi), hi clamped to last + 1, stopping once their
 * payloads exceed bytes_max, but always at least one entry. Checksums are
 * verified again (KV_ECORRUPT). KV_ECOMPACTED when lo < first index,
 * KV_ENOTFOUND when lo > last index, KV_EINVAL when hi <= lo.
 * Ownership: *out (with the payloads) is the caller's; free it with
 * wal_entries_free(*out, *n). */
int wal_read(wal *w, uint64_t lo, uint64_t hi, uint64_t bytes_max, wal_entry **out, size_t *n);

/* Frees what wal_read returned; NULL is fine. */
void wal_entries_free(wal_entry *e, size_t n);

/* Deletes every whole segment all of whose entries are <= index; the
 * segment being written is always kept. Blocks until done (after the
 * appends queued before it).
 * The caller must only pass an index whose state is durable elsewhere:
 * flushed in RocksDB or in a snapshot on disk. The Raft log is the
 * durability point; a prefix dropped too early is data lost at a crash. */
int wal_drop_prefix(wal *w, uint64_t index);

/* Empties the log after installing a snapshot (index, term) beyond it: the
 * next append must carry index + 1, and term_at(index) gives term. Durable
 * on return: a new segment with the RESET flag records (index, term), then
 * the older segments are deleted. Blocks, after the appends queued
 * before it. */
int wal_reset(wal *w, uint64_t index, uint64_t term);

/* Counters since open: fdatasyncs the log did on segment files, and
 * batches written. */
/* Upper bounds (µs) of the fdatasync latency histogram's buckets; a last
 * bucket counts everything slower. */
#define WAL_SYNC_BUCKETS 12u
extern const uint64_t wal_sync_bucket_us[WAL_SYNC_BUCKETS];

typedef struct wal_stats {
    uint64_t syncs;
    uint64_t sync_ns_total; /* time spent in those fdatasyncs */
    uint64_t sync_ns_max;   /* the slowest (a slow disk shows here first) */
    uint64_t batches;
    uint64_t records;
    uint64_t bytes;                           /* record bytes written (headers included) */
    uint64_t sync_hist[WAL_SYNC_BUCKETS + 1]; /* fdatasyncs by latency bucket */
    uint64_t slow_syncs;                      /* over wal_options.slow_sync_ns */
} wal_stats;
void wal_get_stats(wal *w, wal_stats *out);

#endif /* KV_STORAGE_WAL_H */
