#include "common/checksum.h"

#include "kv/errors.h"

#include <assert.h>
#include <xxhash.h>

uint64_t kv_xxh3(const void *buf, size_t len) {
    assert(buf != NULL || len == 0);
    return XXH3_64bits(buf, len);
}

int kv_xxh3_init(kv_xxh3_state *s) {
    XXH3_state_t *st = XXH3_createState();
    if (st == NULL)
        return KV_ENOMEM;
    XXH3_64bits_reset(st);
    s->impl = st;
    return 0;
}

void kv_xxh3_update(kv_xxh3_state *s, const void *buf, size_t len) {
    assert(s->impl != NULL);
    XXH3_64bits_update(s->impl, buf, len);
}

uint64_t kv_xxh3_digest(const kv_xxh3_state *s) {
    assert(s->impl != NULL);
    return XXH3_64bits_digest(s->impl);
}

void kv_xxh3_free(kv_xxh3_state *s) {
    XXH3_freeState(s->impl);
    s->impl = NULL;
}
