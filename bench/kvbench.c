/*
 * kvbench: benchmarks as programs (style.md rule 12). Each subcommand prints
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
 * Exit status: 0 done, 1 failed, 2 bad usage (the flag is named).
 */
#include "common/clock.h"
#include "kv/errors.h"
#include "kv/limits.h"
#include "storage/datadir.h"
#include "storage/fs.h"
#include "storage/wal.h"

#include <assert.h>
#include <errno.h>
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
    fprintf(out, "usage: kvbench <subcommand> [flags]\n"
                 "subcommands:\n"
                 "  wal --data-dir DIR [--records N] [--size BYTES] [--writers W] [--threads T]\n"
                 "      [--coalesce]\n"
                 "      write N records of BYTES bytes from W concurrent writers (on T\n"
                 "      threads, default min(W, 4)) through the WAL; each record is its own\n"
                 "      append, or with --coalesce a thread appends its ready writers'\n"
                 "      records in one call\n");
}

static int bad_flag(const char *sub, const char *flag, const char *why) {
    fprintf(stderr, "kvbench %s: %s: %s\n", sub, flag, why);
    usage(stderr);
    return 2;
}

/* Parses a decimal in [lo, hi]; false when it is not one. */
static bool parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out) {
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
        if (!parse_u64(val, num == &b.size ? 0 : 1, hi, num))
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

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "wal") == 0)
        return cmd_wal(argc - 2, argv + 2);
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "kvbench: unknown subcommand \"%s\"\n", argv[1]);
    usage(stderr);
    return 2;
}
