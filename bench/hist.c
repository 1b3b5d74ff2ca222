#include "hist.h"

#include <assert.h>
#include <stdbool.h>

_Static_assert(HIST_BUCKETS == 3328u, "26 buckets of powers of two, 128 each");

uint32_t hist_bucket(uint64_t value) {
    uint64_t v = value > HIST_VALUE_MAX ? HIST_VALUE_MAX : value;
    if (v < 2u * HIST_SUB_COUNT)
        return (uint32_t)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* floor(log2 v) >= HIST_SUB_BITS + 1 */
    unsigned shift = e - HIST_SUB_BITS;
    uint32_t b = shift * HIST_SUB_COUNT + (uint32_t)(v >> shift);
    assert(b >= 2u * HIST_SUB_COUNT && b < HIST_BUCKETS);
    return b;
}

uint64_t hist_bucket_upper(uint32_t bucket) {
    assert(bucket < HIST_BUCKETS);
    if (bucket < 2u * HIST_SUB_COUNT)
        return bucket;
    unsigned shift = bucket / HIST_SUB_COUNT - 1u;
    uint64_t m = bucket - (uint64_t)shift * HIST_SUB_COUNT; /* in [SUB_COUNT, 2 * SUB_COUNT) */
    assert(m >= HIST_SUB_COUNT && m < 2u * HIST_SUB_COUNT);
    return ((m + 1u) << shift) - 1u;
}

void hist_add(hist *h, uint64_t value) {
    uint64_t v = value > HIST_VALUE_MAX ? HIST_VALUE_MAX : value;
    __atomic_fetch_add(&h->buckets[hist_bucket(v)], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->count, 1, __ATOMIC_RELAXED);
    uint64_t seen = __atomic_load_n(&h->value_max, __ATOMIC_RELAXED);
    while (v > seen && !__atomic_compare_exchange_n(&h->value_max, &seen, v, true, __ATOMIC_RELAXED,
                                                    __ATOMIC_RELAXED)) {
    }
}

uint64_t hist_percentile(const hist *h, double q) {
    assert(q > 0 && q <= 1);
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->count);
    if ((double)rank < q * (double)h->count)
        rank++; /* ceil */
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (uint32_t b = 0; b < HIST_BUCKETS; b++) {
        seen += h->buckets[b];
        if (seen >= rank) {
            uint64_t upper = hist_bucket_upper(b);
            return upper < h->value_max ? upper : h->value_max;
        }
    }
    assert(0 && "count is the sum of the buckets");
    return h->value_max;
}
