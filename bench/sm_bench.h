/* kvbench sm: the state machine's apply path alone (sm_bench.c). */
#ifndef KV_BENCH_SM_BENCH_H
#define KV_BENCH_SM_BENCH_H

/* Runs "kvbench sm" with the flags after the subcommand; returns the exit
 * status (0 done, 1 failed, 2 bad usage). */
int kvbench_sm(int argc, char **argv);

#endif
