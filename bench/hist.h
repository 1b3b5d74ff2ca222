/*
 * hist: a latency histogram of bounded size for the benchmarks, log-linear
 * in the manner of HdrHistogram. Values (microseconds) below 2 * 2^HIST_SUB_BITS
 * each have a bucket of their own; above, every power of two is cut into
 * 2^HIST_SUB_BITS buckets of equal width, so a reported percentile is at most
 * 1/2^HIST_SUB_BITS (0.8%) above the true one and never below it. Values
 * above HIST_VALUE_MAX count as HIST_VALUE_MAX.
 *
 * Memory: HIST_BUCKETS counters (26 KiB), whatever the number of values.
 *
 * Threads: hist_add may run on any number of threads at once (relaxed
 * atomic increments); hist_percentile and hist_count only once every adder
 * has been joined.
 */
#ifndef KV_BENCH_HIST_H
#define KV_BENCH_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 7u
#define HIST_SUB_COUNT (1u << HIST_SUB_BITS)
/* about 71 minutes in microseconds: longer than any request's timeout */
#define HIST_VALUE_MAX UINT32_MAX
/* exact buckets for [0, 2 * HIST_SUB_COUNT), then HIST_SUB_COUNT per power
 * of two up to 2^32 */
#define HIST_BUCKETS ((32u - HIST_SUB_BITS + 1u) * HIST_SUB_COUNT)

typedef struct hist {
    uint64_t count;
    uint64_t value_max; /* the largest value added */
    uint64_t buckets[HIST_BUCKETS];
} hist;

/* Counts one value (clamped to HIST_VALUE_MAX). */
void hist_add(hist *h, uint64_t value);

/* The smallest bucket bound at or above the value of rank ceil(q * count)
 * (at least 1), capped by the largest value added; 0 when empty.
 * q is in (0, 1]. */
uint64_t hist_percentile(const hist *h, double q);

/* Bucket of a value, and the largest value that falls in a bucket: exposed
 * for bench/test_hist.c. */
uint32_t hist_bucket(uint64_t value);
uint64_t hist_bucket_upper(uint32_t bucket);

#endif
