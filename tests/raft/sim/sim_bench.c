/*
 * raft-sim --bench: throughput of the raft core alone. Three in-memory
 * nodes, no faults, no I/O delay (a write is durable when the Ready is
 * handled), messages delivered in FIFO order; the leader proposes batches
 * of 256-byte entries as fast as the cluster commits them. The only place
 * the simulator reads wall time. Last line:
 *   entries=N secs=S entries_per_s=R
 */
#include "sim.h"

#include "kv/errors.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_NODES 3u
#define BENCH_ENTRY_BYTES 256u
#define BENCH_BATCH 256u          /* entries per proposal batch */
#define BENCH_INFLIGHT_BATCHES 8u /* batches proposed ahead of the commit */
#define BENCH_COMPACT_EVERY 65536u
#define BENCH_TICKS_MAX 10000u

typedef struct bench {
    raft *r[BENCH_NODES];
    raft_msg *q; /* FIFO of owned message copies */
    size_t q_head, q_count, q_cap;
    uint64_t applied[BENCH_NODES];
    uint64_t applied_term[BENCH_NODES];
    uint64_t snap_index[BENCH_NODES];
} bench;

static void q_push(bench *b, const raft_msg *m) {
    if (b->q_head + b->q_count == b->q_cap) {
        if (b->q_head > 0) {
            memmove(b->q, b->q + b->q_head, b->q_count * sizeof(raft_msg));
            b->q_head = 0;
        } else {
            b->q_cap = b->q_cap ? 2 * b->q_cap : 1024;
            b->q = realloc(b->q, b->q_cap * sizeof(raft_msg));
            assert(b->q != NULL);
        }
    }
    int rc = raft_msg_copy(&b->q[b->q_head + b->q_count++], m);
    assert(rc == 0);
}

/* One node's Ready loop with instant durability. */
static void bench_ready(bench *b, uint32_t i) {
    raft *r = b->r[i];
    while (raft_has_ready(r)) {
        struct raft_ready rd;
        int rc = raft_ready(r, &rd);
        assert(rc == 0 && !rd.has_snapshot && !rd.has_chunk);
        for (size_t k = 0; k < rd.msgs_count; k++)
            q_push(b, &rd.msgs[k]);
        uint64_t last = 0, last_term = 0;
        if (rd.entries_count) {
            last = rd.entries[rd.entries_count - 1].index;
            last_term = rd.entries[rd.entries_count - 1].term;
        }
        if (rd.committed_count) {
            b->applied[i] = rd.committed[rd.committed_count - 1].index;
            b->applied_term[i] = rd.committed[rd.committed_count - 1].term;
        }
        raft_advance(r, &rd);
        if (last)
            raft_persisted(r, last, last_term);
    }
    if (b->applied[i] >= b->snap_index[i] + BENCH_COMPACT_EVERY) {
        int rc = raft_snapshot_done(r, b->applied[i], b->applied_term[i]);
        assert(rc == 0);
        b->snap_index[i] = b->applied[i];
        uint64_t floor = raft_compact_floor(r);
        raft_compact(r, floor < b->applied[i] ? floor : b->applied[i]);
    }
}

static void bench_deliver(bench *b) {
    while (b->q_count) {
        raft_msg *m = &b->q[b->q_head++];
        b->q_count--;
        uint32_t to = (uint32_t)m->to - 1;
        assert(to < BENCH_NODES);
        int rc = raft_step(b->r[to], m);
        assert(rc == 0);
        raft_msg_free(m);
        bench_ready(b, to);
    }
    b->q_head = 0;
}

static int bench_snapshot_read(void *ctx, uint64_t index, uint64_t term, uint64_t offset, void *buf,
                               size_t len, size_t *got, uint64_t *total) {
    (void)ctx, (void)index, (void)term, (void)offset, (void)buf, (void)len, (void)got, (void)total;
    return KV_ESTALE; /* followers never fall behind the compaction floor here */
}

static void bench_init(bench *b) {
    memset(b, 0, sizeof(*b));
    for (uint32_t i = 0; i < BENCH_NODES; i++) {
        raft_config cfg;
        raft_config_init(&cfg, i + 1);
        cfg.snapshot_read = bench_snapshot_read;
        for (uint32_t v = 0; v < BENCH_NODES; v++)
            cfg.bootstrap.voters[cfg.bootstrap.voters_count++] = v + 1;
        int rc = raft_new(&cfg, &b->r[i]);
        assert(rc == 0);
        bench_ready(b, i);
    }
}

static int bench_elect(bench *b) {
    for (uint32_t t = 0; t < BENCH_TICKS_MAX; t++) {
        for (uint32_t i = 0; i < BENCH_NODES; i++) {
            raft_tick(b->r[i]);
            bench_ready(b, i);
        }
        bench_deliver(b);
        for (uint32_t i = 0; i < BENCH_NODES; i++)
            if (raft_state_role(b->r[i]) == RAFT_LEADER &&
                raft_commit_index(b->r[i]) >= raft_last_index(b->r[i]))
                return (int)i;
    }
    return -1;
}

static void bench_free(bench *b) {
    for (size_t k = 0; k < b->q_count; k++)
        raft_msg_free(&b->q[b->q_head + k]);
    free(b->q);
    for (uint32_t i = 0; i < BENCH_NODES; i++)
        raft_free(b->r[i]);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Proposes up to one batch; returns how many entries were taken. */
static uint64_t bench_propose(raft *r, raft_buf *bufs, uint64_t left) {
    size_t n = left < BENCH_BATCH ? (size_t)left : BENCH_BATCH;
    int rc = raft_propose_batch(r, bufs, n, NULL);
    if (rc == KV_EBUSY)
        return 0;
    assert(rc == 0);
    return n;
}

int sim_bench(uint64_t entries) {
    static uint8_t data[BENCH_BATCH][BENCH_ENTRY_BYTES];
    raft_buf bufs[BENCH_BATCH];
    for (uint32_t k = 0; k < BENCH_BATCH; k++) {
        sim_cmd c = {.op = SIM_OP_WRITE, .key = k % SIM_KEYS, .client = 0, .seq = k + 1, .arg1 = k};
        sim_cmd_encode(&c, data[k], BENCH_ENTRY_BYTES);
        bufs[k] = (raft_buf){data[k], BENCH_ENTRY_BYTES};
    }
    bench *b = malloc(sizeof(*b));
    assert(b != NULL);
    bench_init(b);
    int l = bench_elect(b);
    if (l < 0) {
        fprintf(stderr, "raft-sim --bench: no leader elected\n");
        bench_free(b);
        free(b);
        return -1;
    }
    raft *r = b->r[l];
    uint64_t target = b->applied[l] + entries, proposed = 0;
    double t0 = now_s();
    while (b->applied[l] < target) {
        uint64_t applied_before = b->applied[l];
        while (proposed < entries && raft_last_index(r) - b->applied[l] <
                                         (uint64_t)BENCH_BATCH * BENCH_INFLIGHT_BATCHES) {
            uint64_t n = bench_propose(r, bufs, entries - proposed);
            if (n == 0)
                break;
            proposed += n;
        }
        bench_ready(b, (uint32_t)l);
        bench_deliver(b);
        if (b->applied[l] == applied_before) /* idle: let heartbeats move commit */
            for (uint32_t i = 0; i < BENCH_NODES; i++) {
                raft_tick(b->r[i]);
                bench_ready(b, i);
            }
        if (raft_state_role(r) != RAFT_LEADER) {
            fprintf(stderr, "raft-sim --bench: leader lost its role\n");
            bench_free(b);
            free(b);
            return -1;
        }
    }
    double secs = now_s() - t0;
    printf("entries=%" PRIu64 " secs=%.3f entries_per_s=%.0f\n", entries, secs,
           (double)entries / secs);
    bench_free(b);
    free(b);
    return 0;
}
