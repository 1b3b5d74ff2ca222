/*
 * Wire frames: every message between a client and a node, or between two
 * nodes, is one frame.
 *
 *   header (KV_FRAME_HEADER_BYTES, little-endian)
 *     magic   u32  "KVFR"
 *     version u8   KV_WIRE_VERSION
 *     type    u8   kv_frame_type
 *     flags   u16  0
 *     length  u32  payload bytes (<= the receiver's limit, KV_FRAME_BYTES_MAX)
 *     zero    u32
 *     xxh3    u64  of the payload
 *     hxxh3   u64  of the 24 header bytes before it
 *   payload: one protobuf message of proto/kv.proto, by type.
 *
 * The header has its own checksum so a damaged length is caught before the
 * receiver waits for bytes that will never come. A frame that fails any
 * check closes its connection (the peer is confused or hostile) and is
 * counted; the node keeps serving everyone else.
 *
 * Threads: plain functions, no state.
 */
#ifndef KV_NET_FRAME_H
#define KV_NET_FRAME_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#define KV_FRAME_MAGIC 0x5246564bu /* "KVFR" little-endian */
#define KV_WIRE_VERSION 1u
#define KV_FRAME_HEADER_BYTES 32u

typedef enum kv_frame_type {
    KV_FRAME_HELLO = 1,       /* kv.Hello: first frame of the connecting side */
    KV_FRAME_HELLO_REPLY = 2, /* kv.HelloReply */
    KV_FRAME_REQUEST = 3,     /* kv.Request: client -> node */
    KV_FRAME_RESPONSE = 4,    /* kv.Response: node -> client */
    KV_FRAME_RAFT = 5,        /* kv.RaftBatch: node -> node */
} kv_frame_type;

typedef struct kv_frame_header {
    uint8_t version;
    uint8_t type;
    uint32_t length;
    uint64_t xxh3;
} kv_frame_header;

/* Writes the header of a frame of type with payload[0..len) into out. */
void kv_frame_header_encode(uint8_t out[KV_FRAME_HEADER_BYTES], uint8_t type, const void *payload,
                            uint32_t len);

/* Checks and decodes a received header. Returns 0, or the fault and a code
 * word for it (the caller logs and counts it, then closes):
 *   KV_EPROTO   bad magic or header checksum (not a kv frame, or damaged)
 *   KV_EVERSION another wire version
 *   KV_EINVAL   unknown frame type
 *   KV_ETOOBIG  length over len_max */
int kv_frame_header_decode(const uint8_t in[KV_FRAME_HEADER_BYTES], uint32_t len_max,
                           kv_frame_header *h);

/* 0 when payload[0..h->length) matches h's checksum, else KV_ECORRUPT. */
int kv_frame_payload_check(const kv_frame_header *h, const void *payload);

/* Packs msg into a new frame (header + payload) of type. *out is malloc'd,
 * owned by the caller (free()); *out_len its bytes. KV_ETOOBIG when the
 * payload is over KV_FRAME_BYTES_MAX, KV_ENOMEM. */
int kv_frame_pack(uint8_t type, const ProtobufCMessage *msg, uint8_t **out, size_t *out_len);

/* The packed size of msg as a frame (header included). */
size_t kv_frame_size(const ProtobufCMessage *msg);

/* Packs msg as a frame into buf (cap >= kv_frame_size(msg)); returns the
 * bytes written. For callers that manage their own buffers. */
size_t kv_frame_pack_into(uint8_t type, const ProtobufCMessage *msg, uint8_t *buf);

#endif /* KV_NET_FRAME_H */
