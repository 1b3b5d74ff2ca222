/*
 * The node data directory: its layout and its format-version file.
 *
 *   DIR/FORMAT          one line "kv-data-dir 1\n"
 *   DIR/LOCK            flock'ed by kvd
 *   DIR/wal/            log segments (wal.h)
 *   DIR/hardstate.0|1   the two hard-state slots (hardstate.h)
 *   DIR/db/             RocksDB state machine
 *   DIR/snap/           snapshots
 */
#ifndef KV_STORAGE_DATADIR_H
#define KV_STORAGE_DATADIR_H

#include "storage/check.h"
#include "storage/fs.h"

#include <stddef.h>

#define DD_FORMAT_VERSION 1u
#define DD_FORMAT_FILE "FORMAT"
#define DD_WAL_DIR "wal"
#define DD_PATH_BYTES_MAX 4096u


/* Makes dir a data directory: creates dir when absent, DIR/FORMAT (durably,
 * kv_fs_write_atomic) and DIR/wal/, then syncs dir and its parent. An
 * existing data dir of this version is left as it is (0); one of another
 * version gives KV_EVERSION. A directory that is not writable gives
 * KV_EPERM; every failure is logged naming the path. */
int dd_init(kv_fs *fs, const char *dir);

/* Checks DIR/FORMAT: 0 when it names this version; KV_EMISSING when there
 * is none (not a data dir, or an empty one; reported as MISSING);
 * KV_EVERSION when it names another version or is not a FORMAT line
 * (reported as VERSION, naming the file and what was found). fn may be
 * NULL. */
int dd_check_format(kv_fs *fs, const char *dir, kv_check_fn fn, void *arg);

#endif /* KV_STORAGE_DATADIR_H */
