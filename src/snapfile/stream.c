/* Snapshot streams and files: see snapfile.h. */
#include "snapfile/snapfile.h"

#include "common/checksum.h"
#include "kv/errors.h"
#include "kv/limits.h"

#include <stdlib.h>
#include <string.h>

void snapfile_header_encode(uint8_t out[SNAPFILE_HEADER_BYTES], const snapfile_info *info) {
    kv_put_u64(out, SNAPFILE_MAGIC);
    kv_put_u32(out + 8, SNAPFILE_VERSION);
    kv_put_u32(out + 12, 0);
    kv_put_u64(out + 16, info->index);
    kv_put_u64(out + 24, info->term);
    kv_put_u64(out + 32, info->stream_len);
    kv_put_u64(out + 40, kv_xxh3(out, 40));
}

int snapfile_header_decode(const uint8_t in[SNAPFILE_HEADER_BYTES], snapfile_info *info) {
    if (kv_get_u64(in) != SNAPFILE_MAGIC || kv_get_u64(in + 40) != kv_xxh3(in, 40))
        return KV_ECORRUPT;
    if (kv_get_u32(in + 8) != SNAPFILE_VERSION)
        return KV_EVERSION;
    info->index = kv_get_u64(in + 16);
    info->term = kv_get_u64(in + 24);
    info->stream_len = kv_get_u64(in + 32);
    return 0;
}

static int read_exact(FILE *f, void *buf, size_t len) {
    return fread(buf, 1, len, f) == len ? 0 : KV_ECORRUPT;
}

int snapstream_walk(FILE *f, uint64_t len, snapstream_manifest_fn on_manifest,
                    snapstream_chunk_fn on_chunk, void *arg, uint64_t *bad_offset) {
    uint64_t off = 0, dummy;
    if (bad_offset == NULL)
        bad_offset = &dummy;
    uint8_t hdr[SNAPSTREAM_CHUNK_HEADER_BYTES];
    if (len < 4 || read_exact(f, hdr, 4) != 0) {
        *bad_offset = 0;
        return KV_ECORRUPT;
    }
    uint32_t mlen = kv_get_u32(hdr);
    off = 4;
    if (mlen > KV_SNAPSHOT_MANIFEST_BYTES_MAX + 64u || off + mlen > len) {
        *bad_offset = 0;
        return KV_ECORRUPT;
    }
    size_t cap = mlen > KV_SNAPSHOT_CHUNK_BYTES ? mlen : KV_SNAPSHOT_CHUNK_BYTES;
    uint8_t *buf = malloc(cap ? cap : 1);
    if (buf == NULL)
        return KV_ENOMEM;
    int rc = read_exact(f, buf, mlen);
    if (rc != 0)
        *bad_offset = off;
    else
        rc = on_manifest(arg, buf, mlen);
    off += mlen;
    while (rc == 0 && off < len) {
        if (len - off < SNAPSTREAM_CHUNK_HEADER_BYTES || read_exact(f, hdr, sizeof hdr) != 0) {
            *bad_offset = off;
            rc = KV_ECORRUPT;
            break;
        }
        uint32_t k = kv_get_u32(hdr), clen = kv_get_u32(hdr + 4);
        if (clen > KV_SNAPSHOT_CHUNK_BYTES || len - off - sizeof hdr < clen ||
            read_exact(f, buf, clen) != 0) {
            *bad_offset = off;
            rc = KV_ECORRUPT;
            break;
        }
        rc = on_chunk(arg, k, buf, clen, kv_get_u64(hdr + 8));
        if (rc != 0)
            *bad_offset = off;
        off += sizeof hdr + clen;
    }
    free(buf);
    return rc;
}
