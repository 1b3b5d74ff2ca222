/* The monotonic clock, for measuring durations (fsync latency, benchmarks).
 * Never used for anything replicated: src/raft has no clock at all. */
#ifndef KV_COMMON_CLOCK_H
#define KV_COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t kv_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif
