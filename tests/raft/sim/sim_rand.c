#include "sim_rand.h"

#include <assert.h>

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

void sim_rand_seed(sim_rand *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
    assert(r->s[0] | r->s[1] | r->s[2] | r->s[3]);
}

uint64_t sim_rand_u64(sim_rand *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t sim_rand_below(sim_rand *r, uint64_t n) {
    assert(n > 0);
    /* Rejection sampling: no modulo bias, and still deterministic. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do {
        x = sim_rand_u64(r);
    } while (x >= limit);
    return x % n;
}

uint64_t sim_rand_range(sim_rand *r, uint64_t lo, uint64_t hi) {
    assert(lo <= hi);
    if (hi - lo == UINT64_MAX)
        return sim_rand_u64(r);
    return lo + sim_rand_below(r, hi - lo + 1);
}

bool sim_rand_chance(sim_rand *r, uint32_t per_mille) {
    assert(per_mille <= 1000);
    return sim_rand_below(r, 1000) < per_mille;
}
