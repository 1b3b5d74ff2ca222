/*
 * The snapshot formats that travel: the manifest, the stream and the file.
 * One small library (kvsnapfile: libc, xxh3 from src/common, protobuf-c for
 * the manifest body; no RocksDB, no kv_fs) shared by the storage layer
 * (snapshot.h writes and ships snapshots in these formats), the client
 * library (kv_snapshot_save writes a FILE) and kvcli (`snapshot verify`).
 *
 * MANIFEST (MANIFEST.kv in a snapshot directory, and the start of a stream):
 * a kv.SnapshotManifest (index, term, membership, every file with its size,
 * xxh3 and the xxh3 of each chunk) in its own framing, little-endian:
 *   u32 magic "KVSM" | u32 version | u32 body length | u32 zero |
 *   u64 xxh3 of the 16 bytes before it and the body | body
 *
 * STREAM: how a node ships snapshot (index, term) to a follower (as Raft
 * SNAPSHOT chunks) or to an operator (SNAPSHOT_READ), little-endian:
 *   u32 manifest length | MANIFEST.kv bytes as on disk (the MANIFEST above)
 *   then for each snapshot chunk k = 0, 1, ... in order:
 *   u32 k | u32 len | u64 xxh3 of the data | data (len <= KV_SNAPSHOT_CHUNK_BYTES)
 *
 * FILE (kvcli snapshot save; kvd restore --from):
 *   header (SNAPFILE_HEADER_BYTES): magic u64 "KVSNAPF1", version u32 (1),
 *     zero u32, index u64, term u64, stream length u64, xxh3 of the
 *     preceding 40 bytes u64
 *   the stream
 *   trailer: xxh3 u64 of the stream bytes
 *
 * Threads: plain functions, no shared state.
 */
#ifndef KV_SNAPFILE_SNAPFILE_H
#define KV_SNAPFILE_SNAPFILE_H

#include "proto/kv.pb-c.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- manifest ------------------------------------------------------------ */

#define SNAP_MANIFEST_NAME "MANIFEST.kv" /* its name in a snapshot directory */
#define SNAP_MAGIC 0x4D53564Bu           /* "KVSM" little-endian */
#define SNAP_VERSION 1u
#define SNAP_HEADER_BYTES 24u /* the manifest's framing before the body */
#define SNAP_FORMAT 1u        /* SnapshotManifest.format */

/* A decoded manifest with its chunk map. */
typedef struct snap_manifest {
    Kv__SnapshotManifest *m; /* owned */
    uint8_t *raw;            /* the framed bytes, owned */
    size_t raw_len;
    uint64_t *first_chunk; /* [files + 1]: number of each file's first chunk */
} snap_manifest;

/* Where one chunk of a snapshot lives. */
typedef struct snap_chunk {
    uint32_t file;   /* index into the manifest's file list */
    uint64_t offset; /* byte offset in that file */
    uint32_t len;    /* <= KV_SNAPSHOT_CHUNK_BYTES */
    uint64_t xxh3;   /* of the chunk's bytes */
} snap_chunk;

/* Checks the framing of buf[0..len) and decodes it into *out (copies buf).
 * KV_ECORRUPT (*why says what), KV_EVERSION or KV_ENOMEM. On success *out
 * is the caller's: snap_manifest_free(). */
int snap_manifest_decode(const uint8_t *buf, size_t len, snap_manifest *out, const char **why);
void snap_manifest_free(snap_manifest *sm);

/* Frames an encoded manifest: *out malloc'd, owned by the caller.
 * KV_ETOOBIG over KV_SNAPSHOT_MANIFEST_BYTES_MAX, KV_ENOMEM. */
int snap_manifest_encode(const Kv__SnapshotManifest *m, uint8_t **out, size_t *len);

uint64_t snap_manifest_chunks_count(const snap_manifest *sm);

/* Where chunk k lives; k < snap_manifest_chunks_count. */
void snap_manifest_chunk_locate(const snap_manifest *sm, uint64_t k, snap_chunk *out);

/* ---- stream and file ----------------------------------------------------- */

#define SNAPFILE_MAGIC 0x314650414e53564bull /* the bytes "KVSNAPF1", little-endian */
#define SNAPFILE_VERSION 1u
#define SNAPFILE_HEADER_BYTES 48u
#define SNAPSTREAM_CHUNK_HEADER_BYTES 16u

typedef struct snapfile_info {
    uint64_t index;
    uint64_t term;
    uint64_t stream_len;
} snapfile_info;

/* Encodes a file header. */
void snapfile_header_encode(uint8_t out[SNAPFILE_HEADER_BYTES], const snapfile_info *info);
/* Decodes and checks one: 0, KV_ECORRUPT (magic, checksum), KV_EVERSION. */
int snapfile_header_decode(const uint8_t in[SNAPFILE_HEADER_BYTES], snapfile_info *info);

typedef int (*snapstream_manifest_fn)(void *arg, const uint8_t *manifest, size_t len);
typedef int (*snapstream_chunk_fn)(void *arg, uint32_t k, const uint8_t *data, uint32_t len,
                                   uint64_t xxh3);

/* Reads a stream of len bytes from f's current position, calling
 * on_manifest once and then on_chunk for each chunk record (data valid for
 * the call only). A callback's non-zero return stops the walk and is
 * returned. KV_ECORRUPT (with *bad_offset, may be NULL, set to the stream
 * offset) when a record is malformed, a length is over its limit or the
 * stream ends early; KV_ENOMEM. The chunks' xxh3 are NOT checked here
 * (on_chunk gets the recorded one; snap_recv_chunk or snap_file_verify checks). */
int snapstream_walk(FILE *f, uint64_t len, snapstream_manifest_fn on_manifest,
                    snapstream_chunk_fn on_chunk, void *arg, uint64_t *bad_offset);

/* Checks a snapshot file offline: its header, the xxh3 of the whole stream
 * (trailer), the manifest and every chunk against it, each chunk exactly
 * once. 0 when good (*info filled; may be NULL); otherwise KV_ECORRUPT,
 * KV_EVERSION, KV_EMISSING or KV_ENOMEM, and detail (cap bytes) holds one
 * line "CORRUPT FILE offset N: what". */
int snap_file_verify(const char *path, snapfile_info *info, char *detail, size_t cap);

#endif /* KV_SNAPFILE_SNAPFILE_H */
