/*
 * Snapshots of the state machine: a RocksDB checkpoint plus a checksummed
 * manifest, one directory each:
 *
 *   SNAP_DIR/<16-hex index>-<16-hex term>/   checkpoint files + MANIFEST.kv
 *   SNAP_DIR/tmp-...                         in progress; ignored, removed by snap_gc
 *
 * MANIFEST.kv is a kv.SnapshotManifest (index, term, membership, every file
 * with its size, xxh3 and the xxh3 of each chunk) in its own framing, whose
 * format is src/snapfile/snapfile.h. A snapshot is valid only when the
 * manifest's framing and every file it lists check.
 *
 * Files are made durable before a snapshot gets its final name: every file
 * and the directory are synced, then the directory is renamed into place and
 * SNAP_DIR synced. A snapshot directory with its final name is complete.
 *
 * Shipping: the sender opens a snap_reader and sends the manifest bytes and
 * then chunks by number; the receiver (snap_recv) takes them in any order,
 * any number of times, checks each against the manifest, tells which are
 * missing, and installs the snapshot only when all are in and the whole
 * manifest checks.
 *
 * Snapshot files are real files (RocksDB writes the checkpoint itself); the
 * kv_fs given is used for everything kv writes and reads here.
 */
#ifndef KV_STORAGE_SNAPSHOT_H
#define KV_STORAGE_SNAPSHOT_H

#include "snapfile/snapfile.h"
#include "storage/check.h"
#include "storage/fs.h"
#include "storage/sm.h"

#include <stddef.h>
#include <stdint.h>

#define SNAP_PATH_BYTES_MAX 4096u

typedef struct snap_meta {
    uint64_t index;                 /* last log index the snapshot covers */
    uint64_t term;                  /* its term */
    char path[SNAP_PATH_BYTES_MAX]; /* SNAP_DIR/<index>-<term> */
    bool fresh;                     /* snap_create*: written by this call (false: a snapshot of
                                     * that name was there already, and was kept) */
} snap_meta;

/* Takes a snapshot of s into snap_dir (created when missing). index and
 * term are read back from the checkpoint itself, so they are exactly the
 * state in it. The checkpoint flushes the memtable first, so afterwards
 * sm_durable_index(s) >= out->index. Call it from the apply thread. An
 * existing snapshot of the same index and term is kept and described. */
int snap_create(sm *s, kv_fs *fs, const char *snap_dir, snap_meta *out);

/* How long each step of taking a snapshot took, in nanoseconds. */
typedef struct snap_timing {
    uint64_t flush_ns;      /* RocksDB's memtable flushed (and waited for) */
    uint64_t checkpoint_ns; /* the checkpoint: hard links, MANIFEST copied, synced */
    uint64_t meta_ns;       /* index, term and membership read back (a read-only open) */
    uint64_t manifest_ns;   /* files hashed and synced, MANIFEST.kv written and synced */
    uint64_t install_ns;    /* renamed into place, SNAP_DIR synced */
} snap_timing;

/* snap_create, and the time of each step into *t (may be NULL). */
int snap_create_timed(sm *s, kv_fs *fs, const char *snap_dir, snap_meta *out, snap_timing *t);

/* snap_create_timed from a thread other than the apply thread, while it
 * goes on applying (kvd's snapshot worker: the loop never waits for the
 * flush, the hashing or the syncs). RocksDB flushes its memtable (applies
 * go on into a new one) and the checkpoint takes the flushed state only:
 * each apply batch is one WriteBatch and a memtable switch falls between
 * two, so that state is the state after a whole batch, and its index, term
 * and membership are read back from it as always. out->index is at least
 * the applied index when the call began (every batch applied before it is
 * flushed) and at most the applied index at its end; sm_durable_index(s)
 * moves as for snap_create. s must stay open until it returns: no sm_close,
 * snap_restore or other snapshot call on s or snap_dir meanwhile (snap_gc
 * removes tmp-* directories). Crash points (common/crashpoint.h):
 * snapshot.checkpoint (the checkpoint made, no manifest yet),
 * snapshot.manifest (the manifest written, not renamed into place); a
 * crash at either leaves a tmp-* directory that snap_latest ignores. */
int snap_create_live(sm *s, kv_fs *fs, const char *snap_dir, snap_meta *out, snap_timing *t);

/* Checks one snapshot directory: the manifest's framing, then every file's
 * size, chunks and xxh3. Problems go to fn (may be NULL): CORRUPT with the
 * file and the offset of the first bad chunk, MISSING for a missing file.
 * Returns 0, KV_ECORRUPT (any corruption) or KV_EMISSING. */
int snap_verify(kv_fs *fs, const char *path, kv_check_fn fn, void *arg);

/* snap_verify on every snapshot in snap_dir (tmp-* ignored). 0 or the worst
 * code found (KV_ECORRUPT before KV_EMISSING). */
int snap_check_all(kv_fs *fs, const char *snap_dir, kv_check_fn fn, void *arg);

/* The snapshots in snap_dir by name, oldest first, not verified. *out is
 * malloc'd, owned by the caller (free()); NULL when *count is 0. A missing
 * snap_dir is an empty list. */
int snap_list(kv_fs *fs, const char *snap_dir, snap_meta **out, size_t *count);

/* The newest snapshot that verifies; invalid newer ones are skipped and
 * logged (CORRUPT/MISSING). KV_ENOTFOUND when there is none. */
int snap_latest(kv_fs *fs, const char *snap_dir, snap_meta *out);

/* The membership stored with the snapshot at path (its MANIFEST.kv): the
 * one in effect at the snapshot's index, which Raft must restart from (the
 * state machine's own may be later). *out is unpacked and owned by the
 * caller: kv__membership__free_unpacked(*out, NULL). KV_ENOTFOUND when the
 * snapshot holds none (no membership applied before its index);
 * KV_ECORRUPT, KV_EVERSION or KV_EMISSING when the manifest does not
 * check. The files are not verified (snap_verify does that). */
struct Kv__Membership;
int snap_membership(kv_fs *fs, const char *path, struct Kv__Membership **out);

/* Keeps the newest keep (>= 1) snapshots by name, and the newest one that
 * verifies when none of those does; deletes the other older ones and every
 * tmp-* directory. Call it when no snap_create or snap_recv is in
 * progress in snap_dir (from the thread that runs them, or at start-up).
 * made (may be NULL): what snap_create* just returned for snap_dir. When
 * it wrote that snapshot (made->fresh), its manifest reads and every file
 * the manifest names has its size there, it is kept as the valid one
 * without hashing its files; otherwise the snapshots are verified as
 * above. Verifying hashes every file of a snapshot, the whole state
 * machine, and kvd cleans up after every snapshot it takes (that was half
 * of the snapshot worker's CPU, 14% of a node's, over 600,000 puts, and
 * grows with the data). A fresh snapshot's files were hashed as the
 * checkpoint made them, or earlier under the same name and size: RocksDB
 * never writes a table again, and the checkpoint hard-links its tables
 * (snap_dir and the state machine are in one data directory, one file
 * system), so a table shared with an older snapshot is one inode. */
int snap_gc(kv_fs *fs, const char *snap_dir, uint32_t keep, const snap_meta *made);

/* Replaces the state machine *s (open on db_dir) with the snapshot at
 * snap_path: verifies the snapshot (nothing changes when it fails), copies
 * its files (SSTs hard-linked when possible) into db_dir.restore, syncs
 * them, closes *s, swaps the directories atomically (renameat2 EXCHANGE,
 * or two renames where the file system lacks it), syncs, removes the old
 * db and reopens with the same options. After it sm_applied_index(*s) is
 * the snapshot's index and sm_hash what it was at the source. On an error
 * after the close, *s is NULL and the caller fail-stops (the snapshot is
 * still in its directory for the next start). */
int snap_restore(sm **s, const char *db_dir, const char *snap_path);

/* ---- shipping: the sender ----------------------------------------------- */

typedef struct snap_reader snap_reader;

/* Opens the snapshot at path for sending (checks the manifest's framing).
 * *out is owned by the caller: snap_reader_close(). */
int snap_reader_open(kv_fs *fs, const char *path, snap_reader **out);
void snap_reader_close(snap_reader *r);

/* The manifest's bytes as on disk (framing included), borrowed from r. */
void snap_reader_manifest(const snap_reader *r, const uint8_t **buf, size_t *len);

uint64_t snap_reader_chunks_count(const snap_reader *r);

/* The name of file number file (snap_chunk.file) in the manifest, borrowed
 * from r; "?" past the end. */
const char *snap_reader_file_name(const snap_reader *r, uint32_t file);

/* Describes chunk k (< chunks count); KV_EINVAL past the end. */
int snap_reader_chunk(const snap_reader *r, uint64_t k, snap_chunk *out);

/* Reads chunk k into buf (cap >= its len; KV_SNAPSHOT_CHUNK_BYTES always
 * does), checked against the manifest: KV_ECORRUPT when the file on disk no
 * longer matches it. *len and *xxh3 describe the chunk. */
int snap_reader_read(snap_reader *r, uint64_t k, void *buf, size_t cap, size_t *len,
                     uint64_t *xxh3);

/* ---- shipping: the receiver --------------------------------------------- */

typedef struct snap_recv snap_recv;

/* Starts receiving the snapshot described by manifest[0..len) (framing
 * included) into snap_dir/tmp-recv-<index>-<term>. KV_ECORRUPT or
 * KV_EVERSION when the manifest does not check. *out is owned by the caller
 * until snap_recv_finish() succeeds or snap_recv_abort(). */
int snap_recv_begin(kv_fs *fs, const char *snap_dir, const uint8_t *manifest, size_t len,
                    snap_recv **out);

/* Takes chunk k, in any order; a chunk already received is accepted and
 * ignored. KV_ECORRUPT when data does not match xxh3 or the manifest (it is
 * not written: re-send it), KV_EINVAL when k is past the end. */
int snap_recv_chunk(snap_recv *r, uint64_t k, const void *data, size_t len, uint64_t xxh3);

/* Lists up to cap chunk numbers not received yet, lowest first, into
 * chunks; *missing_count is how many are missing in all. */
void snap_recv_missing(const snap_recv *r, uint64_t *chunks, size_t cap, uint64_t *missing_count);

/* Installs the snapshot once every chunk is in: syncs every file, writes
 * the manifest, verifies the whole snapshot, renames it into place and
 * syncs snap_dir; then frees r. KV_EMISSING while chunks are missing (see
 * snap_recv_missing) and KV_ECORRUPT when the result does not verify: r
 * stays valid and nothing is installed. A failed write, sync or rename is
 * final (never retried, docs/rules.md "fsync errors are final (fsyncgate)"): this and every later
 * call on r return that error; the caller aborts r and starts over. */
int snap_recv_finish(snap_recv *r, snap_meta *out);

/* Drops what was received and frees r; r may be NULL. */
void snap_recv_abort(snap_recv *r);

#endif /* KV_STORAGE_SNAPSHOT_H */
