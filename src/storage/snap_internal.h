/* Internals shared by the snapshot files (snap_manifest.c, snapshot.c,
 * snap_ship.c). Not public. */
#ifndef KV_STORAGE_SNAP_INTERNAL_H
#define KV_STORAGE_SNAP_INTERNAL_H

#include "proto/kv.pb-c.h"
#include "storage/snapshot.h"

#include <stdbool.h>

#define SNAP_MAGIC 0x4D53564Bu /* "KVSM" little-endian */
#define SNAP_VERSION 1u
#define SNAP_HEADER_BYTES 24u
#define SNAP_FORMAT 1u /* SnapshotManifest.format */

/* A decoded manifest with its chunk map. */
typedef struct snap_manifest {
    Kv__SnapshotManifest *m; /* owned */
    uint8_t *raw;            /* the framed bytes, owned */
    size_t raw_len;
    uint64_t *first_chunk; /* [files + 1]: number of each file's first chunk */
} snap_manifest;

/* Checks the framing of buf[0..len) and decodes it into *out (copies buf).
 * KV_ECORRUPT (*why says what) or KV_EVERSION. Free with snap__manifest_free. */
int snap__manifest_decode(const uint8_t *buf, size_t len, snap_manifest *out, const char **why);
void snap__manifest_free(snap_manifest *sm);

/* Frames an encoded manifest: *out malloc'd, owned by the caller. */
int snap__manifest_encode(const Kv__SnapshotManifest *m, uint8_t **out, size_t *len);

/* Reads and decodes path/MANIFEST.kv. */
int snap__manifest_read(kv_fs *fs, const char *dir, snap_manifest *out, const char **why);

uint64_t snap__chunks_count(const snap_manifest *sm);

/* Where chunk k lives; k < snap__chunks_count. */
void snap__chunk_locate(const snap_manifest *sm, uint64_t k, snap_chunk *out);

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
