/* Fuzz target: a client's Request as net hands it to the server
 * (kv__request__unpack: the server's own size checks are static to
 * src/server and run on the decoded message). Whatever decodes without
 * unknown fields must encode again and decode to the same encoding
 * (protobuf-c round trip), and every string and bytes field must be
 * readable to its length. */
#include "fuzz.h"

#include "proto/kv.pb-c.h"

#include <string.h>

static uint64_t touch(const ProtobufCBinaryData *b) {
    uint64_t sum = 0;
    for (size_t i = 0; i < b->len; i++)
        sum += b->data[i];
    return sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Kv__Request *q = kv__request__unpack(NULL, size, data);
    if (q == NULL)
        return 0;
    FUZZ_CHECK(q->name != NULL && q->address != NULL);
    volatile uint64_t sum = touch(&q->key) + touch(&q->value) + touch(&q->expected) +
                            touch(&q->start_after) + strlen(q->name) + strlen(q->address);
    (void)sum;
    if (q->base.n_unknown_fields > 0) {
        /* protobuf-c 1.4 keeps unknown fields, field number 0 included,
         * and re-encodes them as it cannot decode (crash-53b4c8cf...):
         * no round trip then. kv never re-encodes a received message. */
        kv__request__free_unpacked(q, NULL);
        return 0;
    }
    size_t n = kv__request__get_packed_size(q);
    uint8_t *buf = malloc(n > 0 ? n : 1);
    FUZZ_CHECK(buf != NULL && kv__request__pack(q, buf) == n);
    Kv__Request *back = kv__request__unpack(NULL, n, buf);
    FUZZ_CHECK(back != NULL);
    FUZZ_CHECK(kv__request__get_packed_size(back) == n);
    FUZZ_CHECK(back->id == q->id && back->type == q->type && back->key.len == q->key.len);
    kv__request__free_unpacked(back, NULL);
    free(buf);
    kv__request__free_unpacked(q, NULL);
    return 0;
}
