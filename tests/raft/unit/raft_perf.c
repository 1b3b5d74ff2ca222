/*
 * raft-perf: throughput of the Raft core alone. Three in-memory nodes,
 * messages handed straight from one node's Ready to the others' raft_step,
 * every write "durable" at once, batched proposals of 256-byte entries.
 * Prints one machine-readable line; not a test (docs/rules.md "Code" rule 12).
 *
 *   raft-perf [entries] [batch]     defaults: 2000000 256
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "raft.h"

#define NODES 3
#define ENTRY_BYTES 256

static raft *nodes[NODES + 1];
static uint64_t applied[NODES + 1];

static void run_ready(int id) {
    raft *r = nodes[id];
    while (raft_has_ready(r)) {
        struct raft_ready rd;
        if (raft_ready(r, &rd) != 0) {
            abort();
        }
        for (size_t i = 0; i < rd.msgs_count; i++) {
            const raft_msg *m = &rd.msgs[i];
            if (raft_step(nodes[m->to], m) != 0) {
                abort();
            }
        }
        uint64_t wi = 0, wt = 0;
        if (rd.entries_count > 0) {
            wi = rd.entries[rd.entries_count - 1].index;
            wt = rd.entries[rd.entries_count - 1].term;
        }
        if (rd.committed_count > 0) {
            applied[id] = rd.committed[rd.committed_count - 1].index;
        }
        raft_advance(r, &rd);
        if (wi > 0) {
            raft_persisted(r, wi, wt);
        }
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void compact(int id) {
    raft *r = nodes[id];
    uint64_t a = raft_applied_index(r), t;
    if (a > raft_snapshot_index(r) && raft_log_term(r, a, &t) == 0 &&
        raft_snapshot_done(r, a, t) == 0) {
        raft_compact(r, a);
    }
}

int main(int argc, char **argv) {
    uint64_t total = argc > 1 ? strtoull(argv[1], NULL, 10) : 2000000;
    size_t batch = argc > 2 ? strtoul(argv[2], NULL, 10) : 256;
    for (int i = 1; i <= NODES; i++) {
        raft_config cfg;
        raft_config_init(&cfg, (uint64_t)i);
        cfg.bootstrap.voters_count = NODES;
        for (int v = 0; v < NODES; v++) {
            cfg.bootstrap.voters[v] = (uint64_t)v + 1;
        }
        if (raft_new(&cfg, &nodes[i]) != 0) {
            return 1;
        }
    }
    for (int t = 0; t < 100 && raft_state_role(nodes[1]) != RAFT_LEADER; t++) {
        raft_tick(nodes[1]);
        for (int k = 0; k < 4; k++) {
            for (int i = 1; i <= NODES; i++) {
                run_ready(i);
            }
        }
    }
    if (raft_state_role(nodes[1]) != RAFT_LEADER) {
        fprintf(stderr, "no leader\n");
        return 1;
    }
    static char payload[ENTRY_BYTES];
    memset(payload, 'x', sizeof(payload));
    raft_buf *bufs = calloc(batch, sizeof(*bufs));
    for (size_t i = 0; i < batch; i++) {
        bufs[i] = (raft_buf){.data = payload, .len = ENTRY_BYTES};
    }
    uint64_t start_commit = raft_commit_index(nodes[1]), proposed = 0;
    double t0 = now_s();
    uint64_t rounds = 0;
    while (raft_commit_index(nodes[1]) < start_commit + total) {
        if (proposed < total) {
            int rc = raft_propose_batch(nodes[1], bufs, batch, NULL);
            if (rc == 0) {
                proposed += batch;
            }
        }
        for (int i = 1; i <= NODES; i++) {
            run_ready(i);
        }
        if (++rounds % 256 == 0) {
            for (int i = 1; i <= NODES; i++) {
                compact(i);
            }
        }
    }
    double secs = now_s() - t0;
    uint64_t done = raft_commit_index(nodes[1]) - start_commit;
    printf("bench=raft-core nodes=%d entry_bytes=%d batch=%zu entries=%llu secs=%.3f "
           "entries_per_sec=%.0f mb_per_sec=%.1f\n",
           NODES, ENTRY_BYTES, batch, (unsigned long long)done, secs, (double)done / secs,
           (double)done * ENTRY_BYTES / secs / 1e6);
    for (int i = 1; i <= NODES; i++) {
        raft_free(nodes[i]);
    }
    free(bufs);
    return 0;
}
