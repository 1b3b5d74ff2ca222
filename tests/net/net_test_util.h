/* Helpers shared by the src/net tests: a seeded PRNG (KV_SEED replays) and
 * a field-by-field comparison of raft messages. Header-only. */
#ifndef KV_TESTS_NET_UTIL_H
#define KV_TESTS_NET_UTIL_H

#include "raft/raft.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The test's seed: KV_SEED from the environment, else the clock; printed. */
static inline uint64_t nt_seed(const char *test) {
    const char *e = getenv("KV_SEED");
    uint64_t seed = e != NULL ? strtoull(e, NULL, 10) : (uint64_t)time(NULL) ^ (uint64_t)clock();
    fprintf(stderr, "%s: seed=%" PRIu64 " (replay with KV_SEED=%" PRIu64 ")\n", test, seed, seed);
    return seed;
}

static inline uint64_t nt_rand(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline void nt_fill(uint64_t *s, void *buf, size_t len) {
    uint8_t *p = buf;
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)nt_rand(s);
}

static inline bool nt_bytes_eq(const void *a, size_t alen, const void *b, size_t blen) {
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* Every field of two raft messages, entries and chunk data included. */
static inline bool nt_msg_eq(const raft_msg *a, const raft_msg *b) {
    if (a->type != b->type || a->from != b->from || a->to != b->to || a->term != b->term ||
        a->log_term != b->log_term || a->index != b->index || a->commit != b->commit ||
        a->entries_count != b->entries_count || a->reject != b->reject ||
        a->transfer != b->transfer || a->reject_hint != b->reject_hint ||
        a->hint_term != b->hint_term || a->context != b->context ||
        a->snap.index != b->snap.index || a->snap.term != b->snap.term ||
        a->snap_offset != b->snap_offset || a->snap_total != b->snap_total ||
        a->snap_last != b->snap_last)
        return false;
    const raft_membership *ma = &a->snap.membership, *mb = &b->snap.membership;
    if (ma->voters_count != mb->voters_count || ma->learners_count != mb->learners_count)
        return false;
    for (uint32_t i = 0; i < ma->voters_count; i++)
        if (ma->voters[i] != mb->voters[i])
            return false;
    for (uint32_t i = 0; i < ma->learners_count; i++)
        if (ma->learners[i] != mb->learners[i])
            return false;
    if (!nt_bytes_eq(a->snap_data, a->snap_len, b->snap_data, b->snap_len))
        return false;
    for (size_t i = 0; i < a->entries_count; i++) {
        const raft_entry *x = &a->entries[i], *y = &b->entries[i];
        if (x->index != y->index || x->term != y->term || x->type != y->type ||
            !nt_bytes_eq(x->data, x->len, y->data, y->len))
            return false;
    }
    return true;
}

#endif
