/*
 * The fake half of the file interface (fs.h): an in-memory file system that
 * injects faults and simulates crashes, deterministic for a given seed.
 *
 * Model (what a crash keeps):
 *  - Each file has a durable copy, taken by sync(). Writes and truncations
 *    since the last sync are kept in order in an "unsynced" list.
 *  - Each directory has a durable copy of its entries, taken by
 *    sync_dir(). Files created, renamed or unlinked since then revert at a
 *    crash (docs/rules.md, etcd#14098).
 *  - fsf_crash(FSF_CRASH_DROP): every file returns to its durable copy.
 *    fsf_crash(FSF_CRASH_TORN): each file keeps, in order, a random prefix of
 *    its unsynced writes; the last one kept may be cut short and its tail
 *    filled with garbage (a torn sector). The seed decides.
 *    fsf_crash(FSF_CRASH_PAGES): what a disk does with the pages written
 *    since the last fdatasync (docs/rules.md "power loss keeps some unsynced pages and not others"
 *    pages"): each page (fsf_set_page_bytes, 4 KiB by default) that the
 *    unsynced writes and truncations made different from the durable copy
 *    comes back new or old, independently, and at most one comes back torn
 *    (a prefix of it new, the rest old; old bytes past the old end are
 *    zeros). The size is the durable one, the current one or a page
 *    boundary between (an unsynced truncate may be lost). In directories,
 *    each name changed since the last sync_dir keeps its new or its old
 *    entry, independently: the two names of a rename too, so a renamed file
 *    may show under both or neither. The seed decides.
 *  - Handles opened before a crash are dead: every call on them gives
 *    KV_EIO. The same fsf is then reopened by the code under test.
 *
 * Faults are countdowns, as in SQLite and canonical/raft: "the Nth call from
 * now fails". Counting starts at 1 (1 = the next call); 0 disarms.
 *
 * Thread safety: every call takes one internal mutex, so the fake may be
 * used by a storage thread and a reader at once. The sync hook runs without
 * the mutex held, so a test can block a sync while others read.
 */
#ifndef KV_STORAGE_FS_FAKE_H
#define KV_STORAGE_FS_FAKE_H

#include "storage/fs.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct fsf fsf;

enum fsf_crash_mode {
    FSF_CRASH_DROP,  /* everything not synced is lost */
    FSF_CRASH_TORN,  /* a random prefix of each file's unsynced writes survives */
    FSF_CRASH_PAGES, /* a random subset of the unsynced pages and names survives */
};

/* A new empty file system holding only the root directory "/". Paths are
 * absolute or relative to "/"; "." and empty components are skipped.
 * Ownership: the caller frees it with fsf_free(); NULL when out of memory. */
fsf *fsf_new(uint64_t seed);

/* Frees f and every file in it. Every kv_file from it must be closed. */
void fsf_free(fsf *f);

/* The kv_fs to hand to the code under test; owned by f, valid until
 * fsf_free(). */
kv_fs *fsf_fs(fsf *f);

/* The nth pwrite from now fails with KV_EIO and writes nothing. */
void fsf_fail_write(fsf *f, uint64_t n);

/* The nth file sync from now fails with KV_EIO; the data stays unsynced. */
void fsf_fail_sync(fsf *f, uint64_t n);

/* The nth pwrite from now stores a random non-empty-or-empty prefix of its
 * bytes and returns KV_EIO. */
void fsf_short_write(fsf *f, uint64_t n);

/* The machine dies at the nth mutating call from now (pwrite, sync,
 * sync_dir, truncate, rename, unlink, mkdir, rmdir, create): that call fails with
 * KV_EIO having done nothing, and so does every later call (reads
 * included) until fsf_crash(). Used by crash loops: N = 1, 2, 3, ... */
void fsf_die_at(fsf *f, uint64_t n);

/* True once fsf_die_at() has fired and fsf_crash() has not run since. */
bool fsf_dead(fsf *f);

/* The page size of FSF_CRASH_PAGES (bytes >= 1; 4096 by default). Smaller
 * pages let tests with tiny files see writes reordered within them. */
void fsf_set_page_bytes(fsf *f, size_t bytes);

/* Simulates power loss as described above; disarms every countdown and
 * brings a dead file system back. */
void fsf_crash(fsf *f, enum fsf_crash_mode mode);

/* XORs the byte at offset of the file at path with mask, in its current and
 * durable contents (a bit flip on the medium). KV_EMISSING when there is no
 * such file, KV_EINVAL when offset is past its end. */
int fsf_flip(fsf *f, const char *path, uint64_t offset, uint8_t mask);

/* Makes a directory read-only (ro) or writable again: creating, renaming
 * into or out of, unlinking in, and mkdir/rmdir in it then fail with
 * KV_EPERM.
 * KV_EMISSING when dir is not a directory. */
int fsf_set_readonly(fsf *f, const char *dir, bool ro);

/* Current size of the file at path; KV_EMISSING when absent. */
int fsf_size(fsf *f, const char *path, uint64_t *out);

/* Counters since fsf_new(): file syncs that returned 0, pwrites that
 * returned 0, directory syncs that returned 0. */
uint64_t fsf_syncs(fsf *f);
uint64_t fsf_writes(fsf *f);
uint64_t fsf_dir_syncs(fsf *f);

/* hook(arg) runs at the start of every file sync, before its data becomes
 * durable and before the sync returns, on the syncing thread and without
 * the fake's mutex held: a test blocks in it to hold a sync open. NULL
 * removes it. */
void fsf_set_sync_hook(fsf *f, void (*hook)(void *arg), void *arg);

#endif /* KV_STORAGE_FS_FAKE_H */
