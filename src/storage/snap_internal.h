/* Internals shared by the snapshot files (snap_manifest.c, snapshot.c,
 * snap_ship.c). Not public. */
#ifndef KV_STORAGE_SNAP_INTERNAL_H
#define KV_STORAGE_SNAP_INTERNAL_H

#include "storage/snapshot.h"

#include <stdbool.h>

/* Reads and decodes path/MANIFEST.kv. */
int snap__manifest_read(kv_fs *fs, const char *dir, snap_manifest *out, const char **why);

/* Hashes a file by chunks of chunk_bytes: its size, whole xxh3 and the
 * chunk hashes (*chunks malloc'd, owned by the caller). Syncs it when sync. */
int snap__hash_file(kv_fs *fs, const char *path, uint32_t chunk_bytes, bool sync, uint64_t *size,
                    uint64_t *xxh3, uint64_t **chunks, size_t *chunks_count);

/* "<16 hex>-<16 hex>" -> index, term. */
bool snap__parse_name(const char *name, uint64_t *index, uint64_t *term);

/* fs->ops->list, except that a missing dir is an empty list (0, *count 0).
 * *names is the caller's: kv_fs_free_list(). */
int snap__list_dir(kv_fs *fs, const char *dir, char ***names, size_t *count);

#endif
