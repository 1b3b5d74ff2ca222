/* Fuzz target: the frame header every connection reads first
 * (kv_frame_header_decode, kv_frame_payload_check), then the payload's
 * decoder for its type, as net_sock.c and net_conn.c do.
 * Input: a flags byte, 32 header bytes, the payload. Flag bit 0 rewrites
 * the header's checksums (keeping its type and length) so the fuzzer gets
 * past them to the length and type checks and the payload decoders. */
#include "fuzz.h"

#include "common/checksum.h"
#include "kv/errors.h"
#include "kv/limits.h"
#include "net/frame.h"
#include "net/net.h"

#include <string.h>

static void decode_payload(uint8_t type, const uint8_t *p, size_t len) {
    switch (type) {
    case KV_FRAME_HELLO: {
        Kv__Hello *h = kv__hello__unpack(NULL, len, p);
        if (h != NULL)
            kv__hello__free_unpacked(h, NULL);
        break;
    }
    case KV_FRAME_HELLO_REPLY: {
        Kv__HelloReply *h = kv__hello_reply__unpack(NULL, len, p);
        if (h != NULL)
            kv__hello_reply__free_unpacked(h, NULL);
        break;
    }
    case KV_FRAME_REQUEST: {
        Kv__Request *q = kv__request__unpack(NULL, len, p);
        if (q != NULL)
            kv__request__free_unpacked(q, NULL);
        break;
    }
    case KV_FRAME_RESPONSE: {
        Kv__Response *q = kv__response__unpack(NULL, len, p);
        if (q != NULL)
            kv__response__free_unpacked(q, NULL);
        break;
    }
    case KV_FRAME_RAFT: {
        Kv__RaftBatch *b = kv__raft_batch__unpack(NULL, len, p);
        for (size_t i = 0; b != NULL && i < b->n_msgs; i++) {
            raft_msg m;
            if (raftwire_from_pb(b->msgs[i], &m) == 0)
                free(m.entries);
        }
        if (b != NULL)
            kv__raft_batch__free_unpacked(b, NULL);
        break;
    }
    default:
        FUZZ_CHECK(0 && "a decoded header has a known type");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 + KV_FRAME_HEADER_BYTES)
        return 0;
    uint8_t flags = data[0];
    uint8_t hdr[KV_FRAME_HEADER_BYTES];
    memcpy(hdr, data + 1, sizeof hdr);
    const uint8_t *payload = data + 1 + KV_FRAME_HEADER_BYTES;
    size_t avail = size - 1 - KV_FRAME_HEADER_BYTES;
    uint32_t len = kv_get_u32(hdr + 8);
    if (flags & 1) {
        uint8_t version = hdr[4];
        uint32_t covered = len <= avail ? len : (uint32_t)avail;
        kv_frame_header_encode(hdr, hdr[5], payload, covered);
        kv_put_u32(hdr + 8, len); /* the length as given, checksums redone */
        hdr[4] = version;
        kv_put_u64(hdr + 24, kv_xxh3(hdr, 24));
    }
    kv_frame_header h;
    int rc = kv_frame_header_decode(hdr, KV_FRAME_BYTES_MAX, &h);
    FUZZ_CHECK(rc == 0 || rc == KV_EPROTO || rc == KV_EVERSION || rc == KV_EINVAL ||
               rc == KV_ETOOBIG);
    if (rc != 0)
        return 0;
    FUZZ_CHECK(h.length <= KV_FRAME_BYTES_MAX && h.version == KV_WIRE_VERSION);
    FUZZ_CHECK(h.type >= KV_FRAME_HELLO && h.type <= KV_FRAME_RAFT);
    if (h.length > avail)
        return 0; /* the reader waits for the rest */
    if (kv_frame_payload_check(&h, payload) != 0)
        return 0;
    decode_payload(h.type, payload, h.length);
    /* encoding what was decoded gives the same header back */
    uint8_t again[KV_FRAME_HEADER_BYTES];
    kv_frame_header_encode(again, h.type, payload, h.length);
    FUZZ_CHECK(memcmp(again, hdr, KV_FRAME_HEADER_BYTES) == 0 || hdr[6] != 0 || hdr[7] != 0 ||
               kv_get_u32(hdr + 12) != 0);
    return 0;
}
