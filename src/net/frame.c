/* Wire frames: see frame.h. */
#include "net/frame.h"

#include "common/checksum.h"
#include "kv/errors.h"
#include "kv/limits.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

void kv_frame_header_encode(uint8_t out[KV_FRAME_HEADER_BYTES], uint8_t type, const void *payload,
                            uint32_t len) {
    kv_put_u32(out, KV_FRAME_MAGIC);
    out[4] = (uint8_t)KV_WIRE_VERSION;
    out[5] = type;
    out[6] = 0;
    out[7] = 0;
    kv_put_u32(out + 8, len);
    kv_put_u32(out + 12, 0);
    kv_put_u64(out + 16, kv_xxh3(payload, len));
    kv_put_u64(out + 24, kv_xxh3(out, 24));
}

int kv_frame_header_decode(const uint8_t in[KV_FRAME_HEADER_BYTES], uint32_t len_max,
                           kv_frame_header *h) {
    if (kv_get_u32(in) != KV_FRAME_MAGIC || kv_get_u64(in + 24) != kv_xxh3(in, 24))
        return KV_EPROTO;
    h->version = in[4];
    h->type = in[5];
    h->length = kv_get_u32(in + 8);
    h->xxh3 = kv_get_u64(in + 16);
    if (h->version != KV_WIRE_VERSION)
        return KV_EVERSION;
    if (h->type < KV_FRAME_HELLO || h->type > KV_FRAME_RAFT)
        return KV_EINVAL;
    if (h->length > len_max)
        return KV_ETOOBIG;
    return 0;
}

int kv_frame_payload_check(const kv_frame_header *h, const void *payload) {
    return kv_xxh3(payload, h->length) == h->xxh3 ? 0 : KV_ECORRUPT;
}

size_t kv_frame_size(const ProtobufCMessage *msg) {
    return KV_FRAME_HEADER_BYTES + protobuf_c_message_get_packed_size(msg);
}

size_t kv_frame_pack_into(uint8_t type, const ProtobufCMessage *msg, uint8_t *buf) {
    size_t n = protobuf_c_message_pack(msg, buf + KV_FRAME_HEADER_BYTES);
    assert(n <= UINT32_MAX);
    kv_frame_header_encode(buf, type, buf + KV_FRAME_HEADER_BYTES, (uint32_t)n);
    return KV_FRAME_HEADER_BYTES + n;
}

int kv_frame_pack(uint8_t type, const ProtobufCMessage *msg, uint8_t **out, size_t *out_len) {
    size_t payload = protobuf_c_message_get_packed_size(msg);
    if (payload > KV_FRAME_BYTES_MAX)
        return KV_ETOOBIG;
    uint8_t *buf = malloc(KV_FRAME_HEADER_BYTES + payload);
    if (buf == NULL)
        return KV_ENOMEM;
    *out_len = kv_frame_pack_into(type, msg, buf);
    *out = buf;
    return 0;
}
