/* kvbench sm: the state machine's apply path alone (sm_bench.c). */
#ifndef KV_BENCH_SM_BENCH_H
#define KV_BENCH_SM_BENCH_H

#include <stdbool.h>
#include <stdint.h>

/* Runs "kvbench sm" with the flags after the subcommand; returns the exit
 * status (0 done, 1 failed, 2 bad usage). */
int kvbench_sm(int argc, char **argv);

/* kvbench.c's flag parser, shared: a decimal in [lo, hi] into *out; false
 * when s is not one. */
bool kvbench_parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out);

#endif
