/*
 * Snapshot streams and snapshot files.
 *
 * STREAM: how a node ships snapshot (index, term) to a follower (as Raft
 * SNAPSHOT chunks) or to an operator (SNAPSHOT_READ), little-endian:
 *   u32 manifest length | MANIFEST.kv bytes as on disk (their own framing
 *   and xxh3, src/storage/snapshot.h)
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
#ifndef KV_STORAGE_SNAPFILE_H
#define KV_STORAGE_SNAPFILE_H

#include <stdint.h>
#include <stdio.h>

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
 * (on_chunk gets the recorded one; snap_recv_chunk or the verifier checks). */
int snapstream_walk(FILE *f, uint64_t len, snapstream_manifest_fn on_manifest,
                    snapstream_chunk_fn on_chunk, void *arg, uint64_t *bad_offset);

/* The offline check of a whole snapshot file is snap_file_verify()
 * (snapshot.h): it needs the manifest decoder of the storage library. */

#endif /* KV_STORAGE_SNAPFILE_H */
