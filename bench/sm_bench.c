/*
 * kvbench sm: the state machine's apply path alone, no network, no log.
 *
 *   kvbench sm --data-dir DIR [--entries N] [--size BYTES] [--clients C]
 *              [--batch K] [--keys seq|random] [--flush-every F]
 *
 * Opens a fresh state machine in DIR/db (DIR must not hold one), registers
 * C sessions, then applies N PUT commands of BYTES-byte values (fixed-seed
 * random) to N distinct keys, the clients in turn, each with its next seq,
 * K entries per sm_apply call (the entries one Ready commits). The keys are
 * in the order written (seq, the default) or spread over the key space
 * (random: each lands among the keys already written, as kvbench put's do
 * across its clients). --flush-every F calls sm_flush after every F
 * entries, as kvd's snapshots do, so the run pays RocksDB's flushes and
 * compactions as a node does. Commands are
 * encoded before the clock starts; the clock covers the sm_apply calls only
 * (not the registers, not the flush at close):
 *   op=sm entries=N size=B clients=C batch=K keys=seq|random flush_every=F
 *   secs=S entries_per_s=R cpu_secs=U errors=E             (one line)
 * cpu_secs: the process's CPU time (user + system, RocksDB's background
 * flushes included) over the same span: steadier than secs on a shared
 * machine. errors: replies whose code was not 0.
 */
#include "bench/sm_bench.h"

#include "common/clock.h"
#include "kv/errors.h"
#include "kv/limits.h"
#include "proto/kv.pb-c.h"
#include "storage/sm.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#define SMB_ENTRIES_MAX 10000000u
#define SMB_BATCH_MAX 4096u
#define SMB_KEY_BYTES 24

typedef struct smb {
    const char *dir;
    uint64_t entries, size, clients, batch;
    uint64_t flush_every; /* 0: never (sm_close flushes) */
    bool random_keys;
} smb;

static int smb_usage(const char *flag, const char *why) {
    fprintf(stderr,
            "kvbench sm: %s: %s\n"
            "usage: kvbench sm --data-dir DIR [--entries N] [--size BYTES] [--clients C]\n"
            "                  [--batch K] [--keys seq|random] [--flush-every F]\n",
            flag, why);
    return 2;
}

static uint64_t smb_rand(uint64_t *x) { /* xorshift64*: a fixed seed */
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    return *x * 0x2545f4914f6cdd1dull;
}

/* An encoded kv.Command: malloc'd, owned by the caller. */
static uint8_t *smb_cmd(int op, uint64_t client, uint64_t seq, const char *key, const uint8_t *val,
                        size_t vlen, size_t *len) {
    Kv__Command c;
    kv__command__init(&c);
    c.op = op;
    c.client_id = client;
    c.seq = seq;
    c.key.data = (uint8_t *)key;
    c.key.len = key != NULL ? strlen(key) : 0;
    c.value.data = (uint8_t *)val;
    c.value.len = vlen;
    *len = kv__command__get_packed_size(&c);
    uint8_t *buf = malloc(*len ? *len : 1);
    assert(buf != NULL);
    kv__command__pack(&c, buf);
    return buf;
}

/* Applies e[0..n) in calls of b->batch entries, with sm_flush after every
 * flush entries (0: never); counts replies not 0. */
static int smb_apply(const smb *b, sm *s, sm_entry *e, uint64_t n, uint64_t flush,
                     uint64_t *errors) {
    sm_reply *r = calloc(b->batch, sizeof *r);
    assert(r != NULL);
    int rv = 0;
    uint64_t unflushed = 0;
    for (uint64_t i = 0; i < n && rv == 0; i += b->batch) {
        size_t k = n - i < b->batch ? (size_t)(n - i) : (size_t)b->batch;
        rv = sm_apply(s, e + i, k, r);
        for (size_t j = 0; rv == 0 && j < k; j++)
            *errors += r[j].code != 0;
        if (rv == 0)
            sm_replies_free(r, k);
        unflushed += k;
        if (rv == 0 && flush != 0 && unflushed >= flush) {
            rv = sm_flush(s);
            unflushed = 0;
        }
    }
    free(r);
    return rv;
}

static double smb_cpu_secs(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

static int smb_run(const smb *b) {
    char db[4096];
    if (snprintf(db, sizeof db, "%s/db", b->dir) >= (int)sizeof db)
        return smb_usage("--data-dir", "too long");
    struct stat st;
    if (stat(db, &st) == 0)
        return smb_usage("--data-dir", "already holds a db: give a fresh directory");
    (void)mkdir(b->dir, 0755);
    uint64_t total = b->clients + b->entries;
    sm_entry *e = calloc(total, sizeof *e);
    uint8_t *val = malloc(b->size + 1);
    assert(e != NULL && val != NULL);
    uint64_t rng = 0x5eed5eedull;
    for (uint64_t i = 0; i < total; i++) {
        e[i] = (sm_entry){.index = i + 1, .term = 1, .type = SM_ENTRY_COMMAND};
        size_t len = 0;
        if (i < b->clients) { /* session ids are their REGISTER's index: i + 1 */
            e[i].payload = smb_cmd(KV__COMMAND__OP__REGISTER, 0, 0, NULL, NULL, 0, &len);
        } else {
            uint64_t n = i - b->clients;
            char key[SMB_KEY_BYTES];
            /* random: a bijection of n, so the keys stay distinct */
            snprintf(key, sizeof key, "key-%016" PRIx64,
                     (uint64_t)(b->random_keys ? n * 0x9e3779b97f4a7c15ull : n));
            for (uint64_t j = 0; j < b->size; j++)
                val[j] = (uint8_t)smb_rand(&rng);
            e[i].payload = smb_cmd(KV__COMMAND__OP__PUT, n % b->clients + 1, n / b->clients + 1,
                                   key, val, b->size, &len);
        }
        e[i].len = len;
    }
    sm *s = NULL;
    uint64_t errors = 0;
    int rv = sm_open(db, NULL, &s);
    if (rv == 0)
        rv = smb_apply(b, s, e, b->clients, 0, &errors);
    uint64_t t0 = kv_now_ns();
    double cpu0 = smb_cpu_secs();
    if (rv == 0)
        rv = smb_apply(b, s, e + b->clients, b->entries, b->flush_every, &errors);
    double secs = (double)(kv_now_ns() - t0) / 1e9, cpu = smb_cpu_secs() - cpu0;
    sm_close(s);
    for (uint64_t i = 0; i < total; i++)
        free((void *)e[i].payload);
    free(e);
    free(val);
    if (rv != 0) {
        fprintf(stderr, "kvbench sm: %s\n", kv_errword(rv));
        return 1;
    }
    printf("op=sm entries=%" PRIu64 " size=%" PRIu64 " clients=%" PRIu64 " batch=%" PRIu64
           " keys=%s flush_every=%" PRIu64 " secs=%.3f entries_per_s=%.0f cpu_secs=%.3f"
           " errors=%" PRIu64 "\n",
           b->entries, b->size, b->clients, b->batch, b->random_keys ? "random" : "seq",
           b->flush_every, secs, secs > 0 ? b->entries / secs : 0, cpu, errors);
    return errors == 0 ? 0 : 1;
}

int kvbench_sm(int argc, char **argv) {
    smb b = {.entries = 100000, .size = 256, .clients = 64, .batch = 16};
    for (int i = 0; i < argc; i++) {
        const char *flag = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t *num = strcmp(flag, "--entries") == 0       ? &b.entries
                        : strcmp(flag, "--size") == 0        ? &b.size
                        : strcmp(flag, "--clients") == 0     ? &b.clients
                        : strcmp(flag, "--batch") == 0       ? &b.batch
                        : strcmp(flag, "--flush-every") == 0 ? &b.flush_every
                                                             : NULL;
        bool keys = strcmp(flag, "--keys") == 0;
        if (num == NULL && !keys && strcmp(flag, "--data-dir") != 0)
            return smb_usage(flag, "unknown flag");
        if (val == NULL)
            return smb_usage(flag, "needs a value");
        i++;
        if (keys) {
            if (strcmp(val, "seq") != 0 && strcmp(val, "random") != 0)
                return smb_usage(flag, "seq or random");
            b.random_keys = strcmp(val, "random") == 0;
            continue;
        }
        if (num == NULL) {
            b.dir = val;
            continue;
        }
        uint64_t lo = num == &b.size ? 0 : 1;
        uint64_t hi = num == &b.size      ? KV_VALUE_BYTES_MAX
                      : num == &b.batch   ? SMB_BATCH_MAX
                      : num == &b.clients ? KV_SESSIONS_MAX
                                          : SMB_ENTRIES_MAX;
        if (!kvbench_parse_u64(val, lo, hi, num))
            return smb_usage(flag, "not a number in range");
    }
    if (b.dir == NULL)
        return smb_usage("--data-dir", "required");
    return smb_run(&b);
}
