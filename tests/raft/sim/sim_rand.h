/*
 * The simulator's only source of randomness: xoshiro256** seeded through
 * splitmix64. Everything the simulator decides (delays, drops, faults,
 * client operations) comes from one sim_rand per run, so a seed fixes the
 * whole trace byte for byte.
 */
#ifndef KV_SIM_RAND_H
#define KV_SIM_RAND_H

#include <stdbool.h>
#include <stdint.h>

typedef struct sim_rand {
    uint64_t s[4];
} sim_rand;

void sim_rand_seed(sim_rand *r, uint64_t seed);
uint64_t sim_rand_u64(sim_rand *r);

/* Uniform in [0, n); n > 0. */
uint64_t sim_rand_below(sim_rand *r, uint64_t n);

/* Uniform in [lo, hi]; lo <= hi. */
uint64_t sim_rand_range(sim_rand *r, uint64_t lo, uint64_t hi);

/* True with probability per_mille / 1000. */
bool sim_rand_chance(sim_rand *r, uint32_t per_mille);

#endif
