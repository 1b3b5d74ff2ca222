/* Checksums for every record on disk and on the wire: xxh3, 64 bits. */
#ifndef KV_COMMON_CHECKSUM_H
#define KV_COMMON_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

/* xxh3-64 of buf[0..len). */
uint64_t kv_xxh3(const void *buf, size_t len);

/* Incremental form, for a record whose header and payload are apart. */
typedef struct kv_xxh3_state {
    void *impl; /* XXH3_state_t *, owned */
} kv_xxh3_state;

int kv_xxh3_init(kv_xxh3_state *s);
void kv_xxh3_update(kv_xxh3_state *s, const void *buf, size_t len);
uint64_t kv_xxh3_digest(const kv_xxh3_state *s);
void kv_xxh3_free(kv_xxh3_state *s);

/* Little-endian fixed-width encoding for on-disk headers. */
static inline void kv_put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void kv_put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint32_t kv_get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}
static inline uint64_t kv_get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

#endif
