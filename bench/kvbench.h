/*
 * kvbench's cluster workloads, shared by kvbench.c (put, get, mixed, the
 * threads, the histogram) and kvbench_txn_watch.c (txn, watch).
 *
 * Threads: one bench_client per client thread; a cluster_bench is shared by
 * all (its counters through atomics, its histogram through hist_add), and
 * read whole only once every client thread has been joined.
 */
#ifndef KV_BENCH_KVBENCH_H
#define KV_BENCH_KVBENCH_H

#include "hist.h"
#include "kv/client.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define BENCH_CLIENTS_MAX 4096u
#define BENCH_KEYS_MAX 10000000u
#define BENCH_KEY_BYTES 32
#define BENCH_PRELOAD_DEPTH 128u
/* txn: clients x keys, each client's 8 bytes per key (512 MiB at most) */
#define BENCH_TXN_SEEN_MAX (1ull << 26)

typedef struct cluster_bench cluster_bench;
typedef struct bench_client bench_client;

typedef enum bench_op { BENCH_PUT, BENCH_GET, BENCH_MIXED, BENCH_TXN, BENCH_WATCH } bench_op;
typedef struct bench_watch bench_watch;

/* One asynchronous request: when it was queued, for its latency. */
typedef struct bench_req {
    bench_client *cl;
    uint64_t t0_ns;
} bench_req;

struct bench_client {
    cluster_bench *b;
    pthread_t tid;
    kv_client *c;          /* --shared: one of b->shared_clients */
    uint64_t first, count; /* its request numbers */
    uint64_t rng;
    uint8_t *value;
    bench_req *reqs; /* --async: one per request, made before the clock starts */
    uint64_t done;
    int open_rc;
    uint64_t index;  /* 0..clients-1 */
    uint8_t *expect; /* txn: the value compared, size bytes */
    uint64_t *seen;  /* txn: per key, the tag of the value last read (BENCH_TXN_ABSENT) */
    uint64_t tags;   /* txn: values written so far */
};

struct cluster_bench {
    bench_op op;
    const char *name; /* op as typed: put, get, mixed, txn, watch */
    const char *cluster;
    struct kv_client_options opts;
    uint64_t clients, requests, size, depth, keys, timeout_ms;
    uint64_t shared;            /* threads per kv_client; 0: each its own */
    kv_client **shared_clients; /* --shared: ceil(clients / shared), opened first */
    int shared_open_rc;
    double read_ratio; /* mixed: the fraction of gets, in [0, 1] */
    bool json;
    hist lat; /* microseconds, every request, failed ones too */
    pthread_barrier_t start;
    uint64_t errors;
    int first_error;
    uint64_t compares_failed; /* txn: requests whose compare did not hold */
    uint8_t *preload_value;   /* txn: what every key holds at first */
    bench_watch *watch;       /* watch: the watcher */
};

/* xorshift64*: fixed seeds, so a run writes what the last one wrote. */
static inline uint64_t bench_rand(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

static inline void bench_fill(uint64_t *rng, uint8_t *buf, uint64_t len) {
    for (uint64_t i = 0; i < len; i += 8) {
        uint64_t r = bench_rand(rng);
        memcpy(buf + i, &r, len - i < 8 ? len - i : 8);
    }
}

/* The value every preloaded key gets (get, mixed, txn): size bytes. */
void bench_preload_value(uint8_t *buf, uint64_t size);
/* preloaded: one of the K keys that get, mixed and txn use */
int bench_key(char *buf, bool preloaded, uint64_t n);
/* Counts a request that started at t0_ns (kv_now_ns) and ended with status. */
void bench_record(cluster_bench *b, uint64_t t0_ns, int status);
/* CLOCK_REALTIME in nanoseconds: comparable between processes. */
uint64_t bench_realtime_ns(void);

/* txn (kvbench_txn_watch.c): request i of cl, a compare-and-swap on a random
 * preloaded key (the top comment of kvbench.c); 0 or a KV_E* code. */
int bench_txn_request(bench_client *cl);
/* txn: each client's memory of the keys (cl->seen), made before the clock starts. */
void bench_txn_client_init(bench_client *cl);

/* watch: bench_watch_start puts the marker and starts the watcher thread,
 * returning once it receives events (0, or a KV_E* code: nothing started);
 * bench_watch_put is one writer's put of request i (the send time in the
 * value); bench_watch_finish waits for the watcher (every put seen, or 3 s
 * without an event once the writers are done) and gives the seconds from
 * t0_ns to the last event; bench_watch_print prints the line. */
int bench_watch_start(cluster_bench *b);
int bench_watch_put(bench_client *cl, uint64_t i);
double bench_watch_finish(cluster_bench *b, uint64_t t0_ns);
void bench_watch_print(const cluster_bench *b, double secs);
/* The writers' puts the watcher never saw (once finished). */
uint64_t bench_watch_missing(const bench_watch *w);
/* Closes the watcher's client and frees it (NULL: nothing); only once joined. */
void bench_watch_free(bench_watch *w);

#endif
