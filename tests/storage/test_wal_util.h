/* Helpers shared by the WAL tests: seeds, payloads, report collection. */
#ifndef KV_TEST_WAL_UTIL_H
#define KV_TEST_WAL_UTIL_H

#include "storage/check.h"
#include "storage/fs_fake.h"
#include "storage/wal.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TU_DIR "/data"
#define TU_REPORTS_MAX 16

/* The seed of this run: KV_SEED from the environment, else the clock.
 * Printed once, so a failure replays with KV_SEED=<seed>. */
uint64_t tu_seed(void);

/* How many seeds a random loop runs: KV_SEEDS from the environment, else
 * dflt. With KV_SEED=<seed> KV_SEEDS=1 a loop replays the one seed. */
int tu_seeds(int dflt);

/* A fake fs holding a fresh data dir TU_DIR. Owned by the caller: fsf_free. */
fsf *tu_fake_datadir(uint64_t seed);

/* Deterministic payload for (index, term); its length is tu_len(). */
uint32_t tu_len(uint64_t index, uint64_t term);
void tu_fill(uint8_t *buf, uint32_t len, uint64_t index, uint64_t term);

/* Entries [index, index + n) of term, payloads in bufs (n * tu_len_max). */
#define TU_LEN_MAX 120u
void tu_entries(wal_entry *e, uint8_t (*bufs)[TU_LEN_MAX], uint64_t index, size_t n, uint64_t term);

/* Checks that entry e is the payload tu_fill made for it. */
bool tu_entry_ok(const wal_entry *e);

/* Where the data of the file at path ends: its size less the trailing
 * zeros (segments are zero-filled ahead of their records). */
uint64_t tu_data_end(fsf *f, const char *path);

/* Overwrites len bytes at off of the file at path with zeros, durably (what
 * a power cut leaves of a page it never wrote). */
void tu_zero(fsf *f, const char *path, uint64_t off, size_t len);

/* Collected problem reports (kv_check_fn). */
typedef struct tu_reports {
    int n;
    char word[TU_REPORTS_MAX][16];
    char file[TU_REPORTS_MAX][256];
    uint64_t offset[TU_REPORTS_MAX];
    uint64_t index[TU_REPORTS_MAX];
    char detail[TU_REPORTS_MAX][128];
} tu_reports;
void tu_collect(void *arg, const kv_check_problem *p);

/* Counts callbacks and waits for them. */
typedef struct tu_wait {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int pending, done, failed;
} tu_wait;
void tu_wait_init(tu_wait *t);
void tu_wait_destroy(tu_wait *t);
/* A wal_done_fn: arg is a tu_op. */
typedef struct tu_op {
    tu_wait *wait;
    int status; /* 1 until the callback ran */
    uint64_t index, term;
    size_t n;
    bool submitted;
    uint64_t syncs_at_submit, syncs_at_done;
    fsf *fake;
} tu_op;
void tu_op_done(void *arg, int status);
/* Submits op (sets submitted), entries from tu_entries. */
int tu_submit(wal *w, tu_op *op, tu_wait *t);
void tu_wait_all(tu_wait *t);

/* A gate that holds fake syncs (fsf_set_sync_hook). */
typedef struct tu_gate {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool closed;
    int entered;
} tu_gate;
void tu_gate_init(tu_gate *g);
void tu_gate_hook(void *arg);
void tu_gate_open(tu_gate *g);
void tu_gate_wait_entered(tu_gate *g, int n);

#endif
