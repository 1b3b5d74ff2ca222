/*
 * kvbench: benchmarks as programs (docs/rules.md "Code" rule 12). Each subcommand prints
 * exactly one machine-readable line of results on stdout.
 *
 *   kvbench wal --data-dir DIR [--records N] [--size BYTES] [--writers W]
 *               [--threads T]
 *
 * wal: makes DIR a node data dir (dd_init) and writes N records of BYTES
 * bytes through the real log and the real file layer from W concurrent
 * writers, each appending one record at a time and appending the next only
 * once the log completed the last (a record counts once the fsync covering
 * it returned). The writers run on T threads (default min(W, 4); T = W gives
 * each writer its own thread). Each record is its own append unless
 * --coalesce, where a thread appends its ready writers' records in one call. Measures each
 * record's latency, and the raw fsync rate of the same disk (4 KiB pwrite +
 * fdatasync on a file in DIR, up to 1 s or 200 rounds, then deleted; run
 * before and after the log, the faster figure is printed):
 *   records=N secs=S records_per_s=R fsyncs=F p50_us=X p99_us=Y fsyncs_per_s_raw=Z
 *
 *   kvbench put --cluster HOST:PORT,... [--clients C] [--requests N]
 *               [--size BYTES] [--async DEPTH | --shared S] [--timeout-ms T]
 *               [--token-file F]
 *   kvbench get --cluster HOST:PORT,... [same flags] [--keys K]
 *   kvbench mixed --cluster HOST:PORT,... [same flags] [--keys K] [--read-ratio R]
 *   kvbench txn --cluster HOST:PORT,... [same flags but --async] [--keys K]
 *   kvbench watch --cluster HOST:PORT,... [same flags but --async]
 *   any of these with --json: the same fields as one JSON object
 *
 * put: C clients (threads, each with its own kv_client and connection) write
 * N values of BYTES bytes (fixed-seed random) to N distinct keys, each
 * client one synchronous kv_put at a time; with --async DEPTH each client
 * keeps DEPTH puts in flight on its connection instead (use fewer clients);
 * with --shared S the C threads share kv_clients S at a time (C/S clients,
 * each with one connection carrying the synchronous calls of S threads: the
 * line then ends with shared=S).
 * get: writes K keys first, then reads N of them (fixed-seed random) the
 * same way. mixed: writes K keys first, then each request is, with
 * probability R (default 0.9), a linearizable get of a random one of them,
 * else a put of BYTES bytes to a random one. txn: writes K keys first, then
 * each request is one transaction on a random one of them, a compare-and-
 * swap: if its value is the one this client last read (at first the value
 * written first; version 0 if it was absent) then put a new value (its first
 * 8 bytes a tag unique to the write) else get it, which the client then
 * remembers. A failed compare is an answer, not an error: the line adds
 * compares_failed= and keys=. watch (default 16 clients): one watcher on the
 * prefix kvbench/watch/ from a marker's revision, then the C clients put N
 * values under it, the first 8 bytes of each the CLOCK_REALTIME ns of the
 * send; ops_per_s is events received / seconds from the first put to the
 * last event, p50_us... run from a put's send to its event's arrival,
 * errors counts the puts the watcher never saw (it stops once it saw all,
 * or at its first idle second after the writers are done); the line adds
 * events=, duplicates= and put_errors= (puts that failed). A request's
 * latency runs from the call (or the queueing) to its answer; every request
 * counts, failed ones too. Percentiles come from a log-linear histogram
 * (hist.h: at most 0.8% above the true value, bounded memory):
 *   op=put clients=C depth=D requests=N size=B secs=S ops_per_s=R p50_us=X p99_us=Y
 *   p999_us=Z errors=E          (one line; mixed adds read_ratio=R keys=K,
 *                                txn and watch what is said above)
 * errors: requests whose status was not 0; the first one's code word goes
 * to stderr. Only built with libkvclient (the kvd components).
 *
 *   kvbench writer --cluster HOST:PORT,... [--size BYTES] [--seconds S]
 *                  [--timeout-ms T] [--token-file F]
 *
 * writer: one client putting BYTES-byte values in a loop for S seconds
 * (default 60), each put retried by the library within T ms and then again
 * by the loop until it is acknowledged; prints one line per acknowledged
 * put, flushed at once: "SEND_NS ACK_NS" (CLOCK_REALTIME nanoseconds of the
 * first attempt and of the acknowledgement), and one line per failed call:
 * "SEND_NS FAIL_NS WORD". bench/compare.sh measures failover with it: from
 * kill -9 of the leader to the acknowledgement of the first put sent after.
 *
 * Exit status: 0 done, 1 failed (put/get: or some request failed; the line
 * is printed anyway), 2 bad usage (the flag is named).
 */
#include "common/clock.h"
#ifdef KVBENCH_CLUSTER
#include "kv/client.h"
#include "kvbench.h"
#endif
#include "bench/sm_bench.h"
#include "kv/errors.h"
#include "hist.h"
#include "kv/limits.h"
#include "storage/datadir.h"
#include "storage/fs.h"
#include "storage/wal.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_WRITERS_MAX 4096u
#define BENCH_THREADS_DEFAULT 4u
#define BENCH_RECORDS_MAX 100000000u
#define BENCH_PROBE_ROUNDS 200
#define BENCH_PROBE_NS 1000000000ull

static void usage(FILE *out) {
    fprintf(out,
            "usage: kvbench <subcommand> [flags]\n"
            "subcommands:\n"
            "  wal --data-dir DIR [--records N] [--size BYTES] [--writers W] [--threads T]\n"
            "      [--coalesce]\n"
            "      write N records of BYTES bytes from W concurrent writers (on T\n"
            "      threads, default min(W, 4)) through the WAL; each record is its own\n"
            "      append, or with --coalesce a thread appends its ready writers'\n"
            "      records in one call\n"
            "  put --cluster HOST:PORT,... [--clients C] [--requests N] [--size BYTES]\n"
            "      [--async DEPTH | --shared S] [--timeout-ms T] [--token-file F]\n"
            "      C clients each doing synchronous puts of BYTES-byte values to distinct\n"
            "      keys (default 64 clients, 10000 requests, 256 bytes); --async: each\n"
            "      client keeps DEPTH puts in flight on its connection; --shared: the C\n"
            "      threads share one kv_client (and connection) per S threads\n"
            "  get --cluster HOST:PORT,... [same flags] [--keys K]\n"
            "      writes K keys (default 1000), then N gets of random ones\n"
            "  mixed --cluster HOST:PORT,... [same flags] [--keys K] [--read-ratio R]\n"
            "      writes K keys, then N requests over them: a fraction R (default 0.9)\n"
            "      linearizable gets, the rest puts\n"
            "  txn --cluster HOST:PORT,... [same flags] [--keys K]\n"
            "      writes K keys, then N compare-and-swaps over them: put if the value is\n"
            "      the one this client last read, else get it\n"
            "  watch --cluster HOST:PORT,... [same flags]\n"
            "      one watcher on a prefix, C writers (default 16) putting N values under\n"
            "      it; events/s and latency from a put's send to its event\n"
            "      put, get, mixed, txn, watch: --json prints the result as one JSON object\n"
            "  writer --cluster HOST:PORT,... [--size BYTES] [--seconds S]\n"
            "      one client putting in a loop for S seconds (default 60), retrying\n"
            "      until acknowledged; a line \"SEND_NS ACK_NS\" per acknowledgement\n"
            "  sm --data-dir DIR [--entries N] [--size BYTES] [--clients C] [--batch K]\n"
            "     [--keys seq|random] [--flush-every F]\n"
            "      applies N session PUTs to a fresh state machine, K per call, flushed\n"
            "      every F entries as snapshots do (sm_bench.c)\n");
}

static int bad_flag(const char *sub, const char *flag, const char *why) {
    fprintf(stderr, "kvbench %s: %s: %s\n", sub, flag, why);
    usage(stderr);
    return 2;
}

/* Parses a decimal in [lo, hi]; false when it is not one (sm_bench.h). */
bool kvbench_parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out) {
    char *end = NULL;
    errno = 0;
    if (s == NULL || *s == '\0' || *s == '-')
        return false;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

typedef struct wal_bench wal_bench;
typedef struct bench_thread bench_thread;

/* One writer: a stream of records, one in flight at a time. */
typedef struct bench_writer {
    uint64_t no; /* record number in flight */
} bench_writer;

/* The records of some writers, appended in one wal_append call. */
typedef struct bench_group {
    bench_thread *th;
    uint64_t t0_ns; /* when it was appended */
    int status;     /* from the log's callback */
    size_t count;
    struct bench_group *next_done;
    bench_writer *writers[]; /* count */
} bench_group;

/* A thread driving some writers: it appends the next record of every
 * writer that is ready, sleeps until the log completes any of its appends,
 * and goes again. By default each record is its own wal_append, so the log's
 * group commit alone decides how many share an fdatasync; with --coalesce a
 * thread appends all its ready writers' records in one call, as a server's
 * loop turns a turn's proposals into one append. Few threads: with one OS
 * thread per writer, waking 64 threads costs more CPU than the fsync they
 * wait for, and the benchmark would measure the scheduler instead of the
 * log. --threads W gives each writer its own thread. */
struct bench_thread {
    wal_bench *b;
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bench_group *done; /* completed, not yet seen by the thread */
    bench_writer *writers;
    size_t writers_count;
    bench_writer **ready; /* writers_count slots */
    wal_entry *entries;   /* writers_count slots */
};

struct wal_bench {
    const char *dir;
    uint64_t records, size, writers, threads;
    bool coalesce; /* a thread appends its ready writers' records in one call */
    wal *w;
    pthread_mutex_t mu; /* index order = queue order */
    uint64_t next_index, claimed;
    uint32_t *latency_us; /* by record number */
    int failed;
    uint8_t *payload;
};

static void group_done(void *arg, int status) {
    bench_group *g = arg;
    bench_thread *th = g->th;
    g->status = status;
    pthread_mutex_lock(&th->mu);
    g->next_done = th->done;
    th->done = g;
    pthread_mutex_unlock(&th->mu);
    pthread_cond_signal(&th->cond);
}

static void bench_fail(wal_bench *b, int rv) {
    fprintf(stderr, "kvbench wal: append: %s\n", kv_strerror(rv));
    pthread_mutex_lock(&b->mu);
    b->failed = rv;
    pthread_mutex_unlock(&b->mu);
}

/* Appends the next records of up to n ready writers (at most a batch's
 * bytes) in one call. Returns how many writers now have a record in flight
 * (0: nothing left to write), or KV_EBUSY (the queue is full, nothing was
 * kept) or another KV_E* code. */
static int group_append(bench_thread *th, bench_writer **ready, size_t n) {
    wal_bench *b = th->b;
    size_t k_max =
        b->coalesce ? KV_WAL_BATCH_BYTES_MAX / (b->size + KV_WAL_RECORD_HEADER_BYTES) : 1;
    size_t k = n < k_max ? n : (k_max ? k_max : 1);
    bench_group *g = malloc(sizeof *g + k * sizeof *g->writers);
    assert(g != NULL);
    pthread_mutex_lock(&b->mu);
    k = b->failed ? 0 : (b->records - b->claimed < k ? (size_t)(b->records - b->claimed) : k);
    for (size_t i = 0; i < k; i++) {
        th->entries[i] = (wal_entry){
            .index = b->next_index + i, .term = 1, .len = (uint32_t)b->size, .data = b->payload};
        ready[i]->no = b->claimed + i;
        g->writers[i] = ready[i];
    }
    *g = (bench_group){.th = th, .t0_ns = kv_now_ns(), .count = k};
    int rv = k ? wal_append(b->w, th->entries, k, group_done, g) : 0;
    if (rv == 0) {
        b->claimed += k;
        b->next_index += k;
    }
    pthread_mutex_unlock(&b->mu);
    if (rv != 0 || k == 0)
        free(g);
    return rv != 0 ? rv : (int)k;
}

/* Appends for all n ready writers (waiting out BUSY); returns how many now
 * have a record in flight. */
static size_t writers_next(bench_thread *th, bench_writer **ready, size_t n) {
    size_t started = 0;
    while (started < n) {
        int rv = group_append(th, ready + started, n - started);
        if (rv == 0)
            break; /* nothing left to write */
        if (rv == KV_EBUSY) {
            sched_yield(); /* the queue is full: completions make room */
            continue;
        }
        if (rv < 0) {
            bench_fail(th->b, rv);
            break;
        }
        started += (size_t)rv;
    }
    return started;
}

static void *bench_thread_run(void *arg) {
    bench_thread *th = arg;
    wal_bench *b = th->b;
    for (size_t i = 0; i < th->writers_count; i++)
        th->ready[i] = &th->writers[i];
    size_t active = writers_next(th, th->ready, th->writers_count);
    while (active > 0) {
        pthread_mutex_lock(&th->mu);
        while (th->done == NULL)
            pthread_cond_wait(&th->cond, &th->mu);
        bench_group *list = th->done;
        th->done = NULL;
        pthread_mutex_unlock(&th->mu);
        uint64_t t = kv_now_ns();
        size_t n = 0;
        for (bench_group *g = list, *next; g != NULL; g = next) {
            next = g->next_done;
            uint64_t us = (t - g->t0_ns) / 1000;
            for (size_t i = 0; i < g->count; i++) {
                b->latency_us[g->writers[i]->no] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
                th->ready[n++] = g->writers[i];
            }
            if (g->status != 0)
                bench_fail(b, g->status);
            active -= g->count;
            free(g);
        }
        assert(n <= th->writers_count);
        active += writers_next(th, th->ready, n);
    }
    return NULL;
}

/* Starts b->threads threads sharing b->writers writers and waits for them. */
static void run_writers(wal_bench *b) {
    bench_thread *ths = calloc(b->threads, sizeof *ths);
    bench_writer *wrs = calloc(b->writers, sizeof *wrs);
    assert(ths != NULL && wrs != NULL);
    for (uint64_t t = 0, first = 0; t < b->threads; t++) {
        uint64_t n = b->writers / b->threads + (t < b->writers % b->threads);
        ths[t] = (bench_thread){.b = b,
                                .writers = wrs + first,
                                .writers_count = n,
                                .ready = calloc(n, sizeof(bench_writer *)),
                                .entries = calloc(n, sizeof(wal_entry))};
        assert(ths[t].ready != NULL && ths[t].entries != NULL);
        first += n;
        pthread_mutex_init(&ths[t].mu, NULL);
        pthread_cond_init(&ths[t].cond, NULL);
    }
    for (uint64_t t = 0; t < b->threads; t++)
        if (pthread_create(&ths[t].tid, NULL, bench_thread_run, &ths[t]) != 0)
            abort();
    for (uint64_t t = 0; t < b->threads; t++) {
        pthread_join(ths[t].tid, NULL);
        pthread_mutex_destroy(&ths[t].mu);
        pthread_cond_destroy(&ths[t].cond);
        free(ths[t].ready);
        free(ths[t].entries);
    }
    free(wrs);
    free(ths);
}

/* The disk's raw fsync rate: 4 KiB pwrite + fdatasync on a probe file. */
static int probe_fsync(kv_fs *fs, const char *dir, double *per_s) {
    char path[DD_PATH_BYTES_MAX];
    if (kv_fs_join(path, sizeof path, dir, "fsync-probe.tmp") != 0)
        return KV_EINVAL;
    kv_file *f = NULL;
    int rv = fs->ops->open(fs, path, KV_FS_CREATE, &f);
    if (rv != 0)
        return rv;
    static uint8_t block[4096];
    uint64_t t0 = kv_now_ns(), t = t0;
    int rounds = 0;
    for (; rv == 0 && rounds < BENCH_PROBE_ROUNDS && t - t0 < BENCH_PROBE_NS; rounds++) {
        memset(block, rounds, sizeof block);
        rv = fs->ops->pwrite(f, block, sizeof block, 0);
        if (rv == 0)
            rv = fs->ops->sync(f);
        t = kv_now_ns();
    }
    fs->ops->close(f);
    (void)fs->ops->unlink(fs, path);
    assert(rv != 0 || rounds > 0);
    *per_s = rounds / ((double)(t - t0) / 1e9);
    return rv;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int run_wal(wal_bench *b) {
    kv_fs *fs = kv_fs_posix();
    int rv = dd_init(fs, b->dir);
    double raw = 0;
    if (rv == 0)
        rv = probe_fsync(fs, b->dir, &raw);
    if (rv == 0)
        rv = wal_open(fs, b->dir, NULL, NULL, NULL, &b->w);
    if (rv != 0) {
        fprintf(stderr, "kvbench wal: %s: %s\n", b->dir, kv_strerror(rv));
        return 1;
    }
    b->next_index = wal_last_index(b->w) + 1;
    wal_stats before, after;
    wal_get_stats(b->w, &before);
    uint64_t t0 = kv_now_ns();
    run_writers(b);
    double secs = (double)(kv_now_ns() - t0) / 1e9;
    wal_get_stats(b->w, &after);
    wal_close(b->w);
    /* Again after the run, keeping the faster figure: the disk is shared,
     * and a slow probe would flatter the log. */
    double raw2 = 0;
    if (probe_fsync(fs, b->dir, &raw2) == 0 && raw2 > raw)
        raw = raw2;
    if (b->failed != 0)
        return 1;
    qsort(b->latency_us, b->records, sizeof *b->latency_us, cmp_u32);
    uint32_t p50 = b->latency_us[(b->records - 1) * 50 / 100];
    uint32_t p99 = b->latency_us[(b->records - 1) * 99 / 100];
    uint64_t syncs = after.syncs - before.syncs;
    double sync_us = syncs ? (double)(after.sync_ns_total - before.sync_ns_total) / syncs / 1e3 : 0;
    printf("records=%" PRIu64 " secs=%.3f records_per_s=%.0f fsyncs=%" PRIu64 " p50_us=%" PRIu32
           " p99_us=%" PRIu32 " fsyncs_per_s_raw=%.0f\n",
           b->records, secs, b->records / secs, syncs, p50, p99, raw);
    /* Diagnostics on stderr, so stdout stays the one line of the contract:
     * the log's own fdatasync time tells the disk from the log's overhead. */
    fprintf(stderr, "kvbench wal: log fdatasync mean_us=%.0f max_us=%.0f; raw fsync mean_us=%.0f\n",
            sync_us, (double)after.sync_ns_max / 1e3, raw > 0 ? 1e6 / raw : 0);
    return 0;
}

static int cmd_wal(int argc, char **argv) {
    wal_bench b = {.records = 10000, .size = 256, .writers = 1};
    for (int i = 0; i < argc; i++) {
        const char *flag = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t *num = strcmp(flag, "--records") == 0   ? &b.records
                        : strcmp(flag, "--size") == 0    ? &b.size
                        : strcmp(flag, "--writers") == 0 ? &b.writers
                        : strcmp(flag, "--threads") == 0 ? &b.threads
                                                         : NULL;
        if (strcmp(flag, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(flag, "--coalesce") == 0) {
            b.coalesce = true;
            continue;
        }
        if (num == NULL && strcmp(flag, "--data-dir") != 0)
            return bad_flag("wal", flag, "unknown flag");
        if (val == NULL)
            return bad_flag("wal", flag, "needs a value");
        i++;
        if (num == NULL) {
            b.dir = val;
            continue;
        }
        uint64_t hi = num == &b.size                           ? KV_ENTRY_BYTES_MAX
                      : num == &b.writers || num == &b.threads ? BENCH_WRITERS_MAX
                                                               : BENCH_RECORDS_MAX;
        if (!kvbench_parse_u64(val, num == &b.size ? 0 : 1, hi, num))
            return bad_flag("wal", flag, "not a number in range");
    }
    if (b.dir == NULL)
        return bad_flag("wal", "--data-dir", "required");
    if (b.threads == 0)
        b.threads = b.writers < BENCH_THREADS_DEFAULT ? b.writers : BENCH_THREADS_DEFAULT;
    if (b.threads > b.writers)
        return bad_flag("wal", "--threads", "more threads than writers");
    b.latency_us = calloc(b.records, sizeof *b.latency_us);
    b.payload = malloc(b.size + 1);
    assert(b.latency_us != NULL && b.payload != NULL);
    for (uint64_t i = 0; i < b.size; i++)
        b.payload[i] = (uint8_t)(i * 131 + 17); /* fixed: benchmarks have fixed seeds */
    pthread_mutex_init(&b.mu, NULL);
    int rv = run_wal(&b);
    pthread_mutex_destroy(&b.mu);
    free(b.latency_us);
    free(b.payload);
    return rv;
}

#ifdef KVBENCH_CLUSTER
/* ---- put / get against a cluster (libkvclient) ------------------------------ */

int bench_key(char *buf, bool preloaded, uint64_t n) {
    return snprintf(buf, BENCH_KEY_BYTES,
                    preloaded ? "kvbench/get/%08" PRIu64 : "kvbench/%010" PRIu64, n);
}

void bench_record(cluster_bench *b, uint64_t t0_ns, int status) {
    hist_add(&b->lat, (kv_now_ns() - t0_ns) / 1000);
    if (status != 0) {
        __atomic_fetch_add(&b->errors, 1, __ATOMIC_RELAXED);
        int none = 0;
        __atomic_compare_exchange_n(&b->first_error, &none, status, false, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED);
    }
}

static void bench_done(void *arg, int status, const void *value, size_t len) {
    (void)value;
    (void)len;
    bench_req *r = arg;
    bench_record(r->cl->b, r->t0_ns, status);
    r->cl->done++;
}

/* The key of request i of cl (get, mixed: a random one of the preloaded
 * keys), and whether it is a get (mixed: with probability read_ratio). */
static int bench_next_key(bench_client *cl, uint64_t i, char *key, bool *get) {
    cluster_bench *b = cl->b;
    assert(b->read_ratio >= 0 && b->read_ratio <= 1);
    if (b->op == BENCH_PUT) {
        *get = false;
        return bench_key(key, false, cl->first + i);
    }
    /* 53 random bits: a uniform double in [0, 1) */
    *get = b->op == BENCH_GET || (double)(bench_rand(&cl->rng) >> 11) * 0x1.0p-53 < b->read_ratio;
    return bench_key(key, true, bench_rand(&cl->rng) % b->keys);
}

static void bench_sync(bench_client *cl) {
    cluster_bench *b = cl->b;
    char key[BENCH_KEY_BYTES];
    if (b->op == BENCH_TXN || b->op == BENCH_WATCH) { /* kvbench_txn_watch.c */
        for (uint64_t i = 0; i < cl->count; i++) {
            uint64_t t0 = kv_now_ns();
            bench_record(b, t0,
                         b->op == BENCH_TXN ? bench_txn_request(cl) : bench_watch_put(cl, i));
        }
        return;
    }
    for (uint64_t i = 0; i < cl->count; i++) {
        bool get;
        int klen = bench_next_key(cl, i, key, &get);
        if (!get)
            bench_fill(&cl->rng, cl->value, b->size);
        uint64_t t0 = kv_now_ns();
        int rc;
        if (get) {
            void *v = NULL;
            size_t vlen = 0;
            rc = kv_get(cl->c, key, (size_t)klen, &v, &vlen);
            kv_free(v);
        } else {
            rc = kv_put(cl->c, key, (size_t)klen, cl->value, b->size);
        }
        bench_record(b, t0, rc);
    }
}

static void bench_async(bench_client *cl) {
    cluster_bench *b = cl->b;
    char key[BENCH_KEY_BYTES];
    uint64_t next = 0;
    while (cl->done < cl->count) {
        while (next < cl->count && kv_client_inflight(cl->c) < b->depth) {
            bench_req *r = &cl->reqs[next];
            bool get;
            int klen = bench_next_key(cl, next, key, &get);
            if (!get)
                bench_fill(&cl->rng, cl->value, b->size);
            r->t0_ns = kv_now_ns();
            int rc =
                get ? kv_get_async(cl->c, key, (size_t)klen, bench_done, r)
                    : kv_put_async(cl->c, key, (size_t)klen, cl->value, b->size, bench_done, r);
            if (rc == KV_EBUSY)
                break;
            next++;
            if (rc != 0) {
                bench_record(b, r->t0_ns, rc);
                cl->done++;
            }
        }
        int rc = kv_client_poll(cl->c, 1000);
        if (rc < 0) {
            fprintf(stderr, "kvbench: poll: %s\n", kv_strerror(rc));
            abort(); /* a fault of the client itself: never expected */
        }
    }
}

static void *bench_client_run(void *arg) {
    bench_client *cl = arg;
    if (cl->b->shared == 0)
        cl->open_rc = kv_client_open(&cl->c, cl->b->cluster, &cl->b->opts);
    else
        cl->open_rc = cl->c != NULL ? 0 : cl->b->shared_open_rc;
    pthread_barrier_wait(&cl->b->start); /* the clock starts once all are connected */
    if (cl->open_rc != 0)
        return NULL;
    if (cl->b->depth > 0)
        bench_async(cl);
    else
        bench_sync(cl);
    return NULL;
}

/* get: the keys to read, written first, DEPTH at a time from one client. */
typedef struct bench_preload_state {
    uint64_t done;
    int first_error;
} bench_preload_state;

static void bench_preload_done(void *arg, int status, const void *value, size_t len) {
    (void)value;
    (void)len;
    bench_preload_state *st = arg;
    st->done++;
    if (status != 0 && st->first_error == 0)
        st->first_error = status;
}

void bench_preload_value(uint8_t *buf, uint64_t size) {
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    bench_fill(&rng, buf, size);
}

static int bench_preload(cluster_bench *b) {
    kv_client *c = NULL;
    int rc = kv_client_open(&c, b->cluster, &b->opts);
    if (rc != 0)
        return rc;
    uint8_t *value = malloc(b->size + 8);
    assert(value != NULL);
    uint64_t next = 0;
    bench_preload_value(value, b->size);
    bench_preload_state st = {0};
    while (st.done < b->keys && rc >= 0) {
        while (next < b->keys && kv_client_inflight(c) < BENCH_PRELOAD_DEPTH) {
            char key[BENCH_KEY_BYTES];
            int klen = bench_key(key, true, next);
            rc = kv_put_async(c, key, (size_t)klen, value, b->size, bench_preload_done, &st);
            assert(rc == 0);
            next++;
        }
        rc = kv_client_poll(c, 1000);
    }
    kv_client_close(c);
    free(value);
    return rc < 0 ? rc : st.first_error;
}

static void bench_print(const cluster_bench *b, double secs) {
    uint64_t p50 = hist_percentile(&b->lat, 0.50), p99 = hist_percentile(&b->lat, 0.99),
             p999 = hist_percentile(&b->lat, 0.999);
    assert(b->lat.count == b->requests);
    assert(p50 <= p99 && p99 <= p999);
    const char *fmt = b->json ? "{\"op\":\"%s\",\"clients\":%" PRIu64 ",\"depth\":%" PRIu64
                                ",\"requests\":%" PRIu64 ",\"size\":%" PRIu64
                                ",\"secs\":%.3f,\"ops_per_s\":%.0f,\"p50_us\":%" PRIu64
                                ",\"p99_us\":%" PRIu64 ",\"p999_us\":%" PRIu64
                                ",\"errors\":%" PRIu64
                              : "op=%s clients=%" PRIu64 " depth=%" PRIu64 " requests=%" PRIu64
                                " size=%" PRIu64 " secs=%.3f ops_per_s=%.0f p50_us=%" PRIu64
                                " p99_us=%" PRIu64 " p999_us=%" PRIu64 " errors=%" PRIu64;
    printf(fmt, b->name, b->clients, b->depth ? b->depth : 1, b->requests, b->size, secs,
           b->requests / secs, p50, p99, p999, b->errors);
    if (b->shared > 0)
        printf(b->json ? ",\"shared\":%" PRIu64 : " shared=%" PRIu64, b->shared);
    if (b->op == BENCH_TXN)
        printf(b->json ? ",\"compares_failed\":%" PRIu64 ",\"keys\":%" PRIu64
                       : " compares_failed=%" PRIu64 " keys=%" PRIu64,
               b->compares_failed, b->keys);
    if (b->op == BENCH_MIXED)
        printf(b->json ? ",\"read_ratio\":%.3f,\"keys\":%" PRIu64
                       : " read_ratio=%.3f keys=%" PRIu64,
               b->read_ratio, b->keys);
    printf(b->json ? "}\n" : "\n");
}

/* Before the clients start: the keys (get, mixed, txn) or the watcher
 * (watch). 0, or 1 (failed, printed). */
static int run_before(cluster_bench *b) {
    if (b->op == BENCH_TXN) {
        b->preload_value = malloc(b->size + 8);
        assert(b->preload_value != NULL);
        bench_preload_value(b->preload_value, b->size);
    }
    int rc = b->op == BENCH_WATCH ? bench_watch_start(b)
             : b->op != BENCH_PUT ? bench_preload(b)
                                  : 0;
    if (rc != 0)
        fprintf(stderr, "kvbench %s: %s: %s\n", b->name,
                b->op == BENCH_WATCH ? "starting the watcher" : "writing the keys", kv_errword(rc));
    return rc != 0;
}

static void clients_free(cluster_bench *b, bench_client *cls, uint64_t groups) {
    for (uint64_t i = 0; i < b->clients; i++) {
        if (groups == 0)
            kv_client_close(cls[i].c);
        free(cls[i].value);
        free(cls[i].reqs);
        free(cls[i].seen);
        free(cls[i].expect);
    }
    for (uint64_t g = 0; g < groups; g++)
        kv_client_close(b->shared_clients[g]);
    free(b->shared_clients);
    free(cls);
}

static int run_cluster(cluster_bench *b) {
    const char *op = b->name;
    if (run_before(b) != 0)
        return 1;
    bench_client *cls = calloc(b->clients, sizeof *cls);
    assert(cls != NULL);
    uint64_t groups = b->shared ? (b->clients + b->shared - 1) / b->shared : 0;
    if (groups > 0) {
        b->shared_clients = calloc(groups, sizeof *b->shared_clients);
        assert(b->shared_clients != NULL);
        for (uint64_t g = 0; g < groups && b->shared_open_rc == 0; g++)
            b->shared_open_rc = kv_client_open(&b->shared_clients[g], b->cluster, &b->opts);
    }
    pthread_barrier_init(&b->start, NULL, (unsigned)b->clients + 1);
    for (uint64_t i = 0, first = 0; i < b->clients; i++) {
        uint64_t n = b->requests / b->clients + (i < b->requests % b->clients);
        cls[i] = (bench_client){.b = b,
                                .first = first,
                                .count = n,
                                .rng = 0x9E3779B97F4A7C15ull * (i + 2),
                                .index = i,
                                .c = groups ? b->shared_clients[i / b->shared] : NULL,
                                .value = malloc(b->size + 8)};
        assert(cls[i].value != NULL);
        if (b->op == BENCH_TXN)
            bench_txn_client_init(&cls[i]);
        if (b->depth > 0) {
            cls[i].reqs = calloc(n + 1, sizeof *cls[i].reqs);
            assert(cls[i].reqs != NULL);
            for (uint64_t k = 0; k < n; k++)
                cls[i].reqs[k] = (bench_req){.cl = &cls[i]};
        }
        first += n;
        if (pthread_create(&cls[i].tid, NULL, bench_client_run, &cls[i]) != 0)
            abort();
    }
    pthread_barrier_wait(&b->start);
    uint64_t t0 = kv_now_ns();
    int open_rc = 0;
    for (uint64_t i = 0; i < b->clients; i++) {
        pthread_join(cls[i].tid, NULL);
        open_rc = open_rc ? open_rc : cls[i].open_rc;
    }
    double secs =
        b->op == BENCH_WATCH ? bench_watch_finish(b, t0) : (double)(kv_now_ns() - t0) / 1e9;
    clients_free(b, cls, groups);
    pthread_barrier_destroy(&b->start);
    if (open_rc != 0) {
        fprintf(stderr, "kvbench %s: connecting to %s: %s\n", op, b->cluster, kv_errword(open_rc));
        return 1;
    }
    uint64_t missing = 0;
    if (b->op == BENCH_WATCH) {
        bench_watch_print(b, secs);
        missing = bench_watch_missing(b->watch);
        if (missing > 0)
            fprintf(stderr, "kvbench watch: %" PRIu64 " puts never seen by the watcher\n", missing);
    } else {
        bench_print(b, secs);
    }
    if (b->errors > 0)
        fprintf(stderr, "kvbench %s: %" PRIu64 " requests failed, the first with %s\n", op,
                b->errors, kv_errword(b->first_error));
    return b->errors > 0 || missing > 0 ? 1 : 0;
}

/* Parses a decimal fraction in [0, 1]; false when it is not one. */
static bool parse_ratio(const char *s, double *out) {
    char *end = NULL;
    errno = 0;
    if (s == NULL || *s == '\0')
        return false;
    double v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v) || v < 0 || v > 1)
        return false;
    *out = v;
    return true;
}

/* The flags every cluster subcommand takes; returns 1 when flag was one of
 * them (*used: how many arguments it took), 0 when it was not, or 2 (bad
 * usage, printed). */
static int cluster_flag(cluster_bench *b, const char *flag, const char *val, int *used) {
    uint64_t *num = strcmp(flag, "--clients") == 0      ? &b->clients
                    : strcmp(flag, "--requests") == 0   ? &b->requests
                    : strcmp(flag, "--size") == 0       ? &b->size
                    : strcmp(flag, "--async") == 0      ? &b->depth
                    : strcmp(flag, "--keys") == 0       ? &b->keys
                    : strcmp(flag, "--timeout-ms") == 0 ? &b->timeout_ms
                    : strcmp(flag, "--shared") == 0     ? &b->shared
                                                        : NULL;
    bool str = strcmp(flag, "--cluster") == 0 || strcmp(flag, "--token-file") == 0;
    bool ratio = strcmp(flag, "--read-ratio") == 0;
    *used = 1;
    if (strcmp(flag, "--json") == 0) {
        b->json = true;
        return 1;
    }
    if (num == NULL && !str && !ratio)
        return 0;
    if (val == NULL)
        return bad_flag(b->name, flag, "needs a value");
    *used = 2;
    if (str) {
        if (flag[2] == 'c')
            b->cluster = val;
        else
            b->opts.token_file = val;
        return 1;
    }
    if (ratio) {
        if (b->op != BENCH_MIXED)
            return bad_flag(b->name, flag, "only for mixed");
        return parse_ratio(val, &b->read_ratio)
                   ? 1
                   : bad_flag(b->name, flag, "not a fraction in [0, 1] (e.g. 0.9)");
    }
    uint64_t hi = num == &b->size         ? KV_VALUE_BYTES_MAX
                  : num == &b->clients    ? BENCH_CLIENTS_MAX
                  : num == &b->shared     ? BENCH_CLIENTS_MAX
                  : num == &b->depth      ? KV_CONN_INFLIGHT_REQUESTS_MAX
                  : num == &b->keys       ? BENCH_KEYS_MAX
                  : num == &b->timeout_ms ? 3600000u
                                          : BENCH_RECORDS_MAX;
    uint64_t lo = num == &b->size || num == &b->depth ? 0 : 1;
    if (!kvbench_parse_u64(val, lo, hi, num))
        return bad_flag(b->name, flag, "not a number in range");
    return 1;
}

/* The flags that only make sense together, once all are parsed: 0 or 2
 * (bad usage, printed). */
static int cluster_check(const cluster_bench *b) {
    const char *op = b->name;
    bool tw = b->op == BENCH_TXN || b->op == BENCH_WATCH;
    if (b->cluster == NULL)
        return bad_flag(op, "--cluster", "required");
    if (b->clients > b->requests)
        return bad_flag(op, "--clients", "more clients than requests");
    if (b->shared > 0 && b->depth > 0)
        return bad_flag(op, "--shared", "not with --async (one form at a time on a client)");
    if (tw && b->depth > 0)
        return bad_flag(op, "--async", "not for txn and watch");
    if (tw && b->size < 8)
        return bad_flag(op, "--size", "txn and watch need at least 8 bytes (a tag, a time)");
    if (b->op == BENCH_TXN && b->clients * b->keys > BENCH_TXN_SEEN_MAX)
        return bad_flag(op, "--keys", "clients x keys over 2^26 (each client remembers each key)");
    return 0;
}

static int cmd_cluster(const char *op, int argc, char **argv) {
    cluster_bench *b = calloc(1, sizeof *b); /* the histogram: 26 KiB */
    assert(b != NULL);
    bool watch = strcmp(op, "watch") == 0;
    *b = (cluster_bench){.op = strcmp(op, "put") == 0   ? BENCH_PUT
                               : strcmp(op, "get") == 0 ? BENCH_GET
                               : strcmp(op, "txn") == 0 ? BENCH_TXN
                               : watch                  ? BENCH_WATCH
                                                        : BENCH_MIXED,
                         .name = op,
                         .clients = watch ? 16 : 64,
                         .requests = 10000,
                         .size = 256,
                         .keys = 1000,
                         .read_ratio = 0.9};
    kv_client_options_init(&b->opts);
    b->timeout_ms = b->opts.timeout_ms;
    int rv = 0;
    for (int i = 0; i < argc && rv == 0; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            free(b);
            return 0;
        }
        int used = 1;
        int r = cluster_flag(b, argv[i], i + 1 < argc ? argv[i + 1] : NULL, &used);
        if (r == 0)
            rv = bad_flag(op, argv[i], "unknown flag");
        else if (r == 2)
            rv = 2;
        i += used - 1;
    }
    if (rv == 0)
        rv = cluster_check(b);
    if (rv == 0) {
        b->opts.timeout_ms = (uint32_t)b->timeout_ms;
        rv = run_cluster(b);
    }
    bench_watch_free(b->watch);
    free(b->preload_value);
    free(b);
    return rv;
}

/* writer: one synchronous client putting in a loop (see the top comment). */
uint64_t bench_realtime_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int run_writer(const char *cluster, struct kv_client_options *opts, uint64_t size,
                      uint64_t seconds) {
    kv_client *c = NULL;
    int rc = kv_client_open(&c, cluster, opts);
    if (rc != 0) {
        fprintf(stderr, "kvbench writer: connecting to %s: %s\n", cluster, kv_errword(rc));
        return 1;
    }
    uint8_t *value = malloc(size + 8);
    assert(value != NULL);
    uint64_t rng = 0x9E3779B97F4A7C15ull, end_ns = kv_now_ns() + seconds * 1000000000ull;
    setvbuf(stdout, NULL, _IOLBF, 0); /* a line is read while the writer runs */
    for (uint64_t n = 0; kv_now_ns() < end_ns; n++) {
        char key[BENCH_KEY_BYTES];
        int klen = snprintf(key, sizeof key, "kvbench/writer/%08" PRIu64, n % 1000);
        bench_fill(&rng, value, size);
        uint64_t send_ns = bench_realtime_ns();
        do {
            rc = kv_put(c, key, (size_t)klen, value, size);
            if (rc != 0)
                printf("%" PRIu64 " %" PRIu64 " %s\n", send_ns, bench_realtime_ns(),
                       kv_errword(rc));
        } while (rc != 0 && kv_now_ns() < end_ns);
        if (rc == 0)
            printf("%" PRIu64 " %" PRIu64 "\n", send_ns, bench_realtime_ns());
    }
    free(value);
    kv_client_close(c);
    return 0;
}

static int cmd_writer(int argc, char **argv) {
    const char *cluster = NULL;
    uint64_t size = 256, seconds = 60, timeout_ms;
    struct kv_client_options opts;
    kv_client_options_init(&opts);
    timeout_ms = opts.timeout_ms;
    for (int i = 0; i < argc; i++) {
        const char *flag = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t *num = strcmp(flag, "--size") == 0         ? &size
                        : strcmp(flag, "--seconds") == 0    ? &seconds
                        : strcmp(flag, "--timeout-ms") == 0 ? &timeout_ms
                                                            : NULL;
        bool str = strcmp(flag, "--cluster") == 0 || strcmp(flag, "--token-file") == 0;
        if (num == NULL && !str)
            return bad_flag("writer", flag, "unknown flag");
        if (val == NULL)
            return bad_flag("writer", flag, "needs a value");
        i++;
        if (str) {
            if (flag[2] == 'c')
                cluster = val;
            else
                opts.token_file = val;
            continue;
        }
        uint64_t hi = num == &size ? KV_VALUE_BYTES_MAX : 3600000u;
        if (!kvbench_parse_u64(val, num == &size ? 0 : 1, hi, num))
            return bad_flag("writer", flag, "not a number in range");
    }
    if (cluster == NULL)
        return bad_flag("writer", "--cluster", "required");
    opts.timeout_ms = (uint32_t)timeout_ms;
    return run_writer(cluster, &opts, size, seconds);
}
#endif /* KVBENCH_CLUSTER */

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "wal") == 0)
        return cmd_wal(argc - 2, argv + 2);
    if (strcmp(argv[1], "sm") == 0) /* the state machine alone: sm_bench.c */
        return kvbench_sm(argc - 2, argv + 2);
#ifdef KVBENCH_CLUSTER
    if (strcmp(argv[1], "put") == 0 || strcmp(argv[1], "get") == 0 ||
        strcmp(argv[1], "mixed") == 0 || strcmp(argv[1], "txn") == 0 ||
        strcmp(argv[1], "watch") == 0)
        return cmd_cluster(argv[1], argc - 2, argv + 2);
    if (strcmp(argv[1], "writer") == 0)
        return cmd_writer(argc - 2, argv + 2);
#endif
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "kvbench: unknown subcommand \"%s\"\n", argv[1]);
    usage(stderr);
    return 2;
}
