/*
 * One simulated node: its life (start, crash, restart, stop), and src/node
 * run on it. A node is a `node *` (node.h: kvd's Ready loop with its write
 * and read queues) made at every start and restart from what the disk holds
 * durably, with the simulator's half of node_io (sim_io.c). Between Readys
 * the node snapshots its state machine every few applied entries and
 * compacts the core's log.
 */
#include "sim.h"

#include "kv/errors.h"
#include "kv/limits.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

int sim_node_slot_of(const sim_world *w, uint64_t id) {
    for (uint32_t s = 0; s < w->slots; s++)
        if (w->nodes[s].used && w->nodes[s].id == id)
            return (int)s;
    return -1;
}

uint32_t sim_node_ev_a(const sim_node *n) {
    return n->slot | (n->incarnation << 8);
}

sim_node *sim_node_ev(sim_world *w, uint32_t a) {
    uint32_t slot = a & 0xffu;
    assert(slot < w->slots);
    sim_node *n = &w->nodes[slot];
    if (!n->used || !n->up || n->incarnation != a >> 8)
        return NULL;
    return n;
}

const uint8_t *sim_pad_table(void) {
    static uint8_t *table;
    if (table == NULL) {
        table = malloc(SIM_SM_BYTES + SIM_PAD_BYTES_MAX);
        assert(table != NULL);
        for (uint64_t o = 0; o < SIM_SM_BYTES + SIM_PAD_BYTES_MAX; o++)
            table[o] = (uint8_t)(((o * 2654435761u) >> 11) ^ (o >> 20));
    }
    return table;
}

/* raft's snapshot reader: serves the node's kept snapshots, state first,
 * then the filler. */
static int snapshot_read(void *ctx, uint64_t index, uint64_t term, uint64_t offset, void *buf,
                         size_t len, size_t *got, uint64_t *total_size) {
    sim_node *n = ctx;
    uint64_t total = SIM_SM_BYTES + n->snap_pad;
    for (uint32_t i = 0; i < n->snaps_count; i++) {
        const sim_snap *s = &n->snaps[i];
        if (s->meta.index != index || s->meta.term != term)
            continue;
        if (offset > total)
            return KV_EINVAL;
        size_t k = total - offset < len ? (size_t)(total - offset) : len;
        uint8_t *out = buf;
        size_t head = offset < SIM_SM_BYTES ? (size_t)(SIM_SM_BYTES - offset) : 0;
        head = head < k ? head : k;
        memcpy(out, s->data + offset, head);
        const uint8_t *pad = sim_pad_table() + offset, x = (uint8_t)index;
        for (size_t j = head; j < k; j++)
            out[j] = pad[j] ^ x;
        *got = k;
        *total_size = total;
        return 0;
    }
    return KV_ESTALE;
}

void sim_node_keep_snap(sim_node *n, const sim_snap *s) {
    if (n->snaps_count == SIM_SNAPS_KEEP) {
        /* Drop the oldest one not being sent; raft copes with KV_ESTALE. */
        uint64_t sending = raft_snapshot_sending(sim_raft(n));
        uint32_t drop = 0;
        if (n->snaps[0].meta.index == sending)
            drop = 1;
        memmove(&n->snaps[drop], &n->snaps[drop + 1],
                (SIM_SNAPS_KEEP - drop - 1) * sizeof(sim_snap));
        n->snaps_count--;
    }
    n->snaps[n->snaps_count++] = *s;
}

static void bootstrap_conf(const sim_world *w, raft_membership *m) {
    memset(m, 0, sizeof(*m));
    for (uint32_t i = 0; i < w->o.nodes; i++)
        m->voters[m->voters_count++] = i + 1;
}

/* Builds the node from the durable disk (empty for a new node). */
static void make_node(sim_world *w, sim_node *n) {
    const sim_store *d = &n->disk.dur;
    raft_config cfg;
    raft_config_init(&cfg, n->id);
    cfg.election_ticks = SIM_ELECTION_TICKS;
    cfg.heartbeat_ticks = SIM_HEARTBEAT_TICKS;
    cfg.lease_read = w->o.lease_read;
    cfg.seed = w->seed * 1000003u + n->id * 131u + n->incarnation;
    cfg.snapshot_read = snapshot_read;
    cfg.snapshot_ctx = n;
    cfg.hs = d->hs;
    cfg.has_snapshot = d->has_snap;
    if (d->has_snap)
        cfg.snapshot = d->snap.meta;
    raft_entry *ents = calloc(d->log.count + 1, sizeof(*ents));
    assert(ents != NULL);
    for (size_t i = 0; i < d->log.count; i++) {
        const sim_ent *e = &d->log.e[i];
        ents[i] = (raft_entry){.index = e->index,
                               .term = e->term,
                               .type = e->type,
                               .data = e->len ? (void *)e->data : NULL,
                               .len = e->len};
    }
    cfg.entries = ents;
    cfg.entries_count = d->log.count;
    cfg.applied = d->has_snap ? d->snap.meta.index : 0;
    if (n->founding)
        bootstrap_conf(w, &cfg.bootstrap);
    /* kvd's limits; the few simulated clients never reach them */
    const node_limits lim = {.pending_bytes_max = KV_PENDING_PROPOSAL_BYTES_MAX,
                             .reads_max = KV_READ_INDEX_PENDING_MAX};
    node_io io;
    sim_io_init(n, &io);
    int rc = node_new(&cfg, &io, &lim, &n->nd);
    free(ents);
    if (rc != 0) {
        sim_fail(w, "restart", "node_new of n%" PRIu64 " failed: %s", n->id, kv_errword(rc));
        n->nd = NULL;
    }
}

/* The state machine back from the durable snapshot (or empty). */
static void load_state(sim_world *w, sim_node *n) {
    const sim_store *d = &n->disk.dur;
    sim_sm_init(&n->sm);
    n->applied = n->applied_term = 0;
    n->snaps_count = 0;
    if (n->founding)
        bootstrap_conf(w, &n->applied_conf);
    else
        memset(&n->applied_conf, 0, sizeof(n->applied_conf));
    if (!d->has_snap)
        return;
    int rc = sim_sm_decode(d->snap.data, SIM_SM_BYTES, &n->sm);
    assert(rc == 0);
    n->applied = d->snap.meta.index;
    n->applied_term = d->snap.meta.term;
    n->applied_conf = d->snap.meta.membership;
    n->snaps[n->snaps_count++] = d->snap;
}

static void schedule_tick(sim_world *w, sim_node *n) {
    sim_queue_push(&w->q, w->now + n->tick_period, SIM_EV_TICK, sim_node_ev_a(n), 0, NULL);
}

static void bring_up(sim_world *w, sim_node *n) {
    load_state(w, n);
    make_node(w, n);
    if (n->nd == NULL)
        return;
    n->up = true;
    n->role = RAFT_FOLLOWER;
    n->term = raft_term(sim_raft(n));
    n->persisted_reported = 0;
    /* First tick at a random phase, so restarted nodes do not tick in step. */
    sim_queue_push(&w->q, w->now + sim_rand_range(&w->rnd, 1, n->tick_period), SIM_EV_TICK,
                   sim_node_ev_a(n), 0, NULL);
    sim_node_ready(w, n->slot);
}

void sim_node_start(sim_world *w, uint32_t slot, uint64_t id, bool founding) {
    sim_node *n = &w->nodes[slot];
    assert(!n->used && slot < w->slots);
    uint32_t inc = n->incarnation + 1;
    memset(n, 0, sizeof(*n));
    n->w = w;
    n->used = true;
    n->founding = founding;
    n->member_seen = founding;
    n->slot = slot;
    n->id = id;
    n->incarnation = inc;
    n->tick_period = sim_rand_range(&w->rnd, SIM_TICK_BASE * 7 / 10, SIM_TICK_BASE * 13 / 10);
    n->fsync_max = sim_rand_range(&w->rnd, 2, w->fsync_max);
    n->snap_threshold = sim_rand_range(&w->rnd, 2, 24);
    n->snap_pad = w->snap_pad;
    n->created_time = w->now;
    sim_disk_init(&n->disk);
    SIM_TRACE(w, "start n%" PRIu64 " slot=%u tick=%" PRIu64 "%s", id, slot, n->tick_period,
              founding ? " founding" : " joining");
    bring_up(w, n);
}

/* Everything volatile is lost: the node, unsynced writes. Its clients hear
 * "connection closed" (outcome unknown) for what it had accepted. */
static void tear_down(sim_node *n) {
    node_fail_all(n->nd, KV_ECLOSED);
    assert(node_writes_waiting(n->nd) == 0 && node_reads_waiting(n->nd) == 0);
    node_free(n->nd);
    n->nd = NULL;
    n->applied_batch_count = 0; /* a Ready stopped in apply never reached apply_end */
    sim_disk_crash(&n->disk);
    n->up = false;
    n->incarnation++;
    n->role = RAFT_FOLLOWER;
}

void sim_node_crash(sim_world *w, uint32_t slot) {
    sim_node *n = &w->nodes[slot];
    assert(n->used && n->up);
    SIM_TRACE(w,
              "crash n%" PRIu64 " (durable: term=%" PRIu64 " vote=%" PRIu64 " last=%" PRIu64
              ", lost %zu writes)",
              n->id, n->disk.dur.hs.term, n->disk.dur.hs.vote, sim_log_last(&n->disk.dur.log),
              n->disk.ops_count);
    tear_down(n);
}

void sim_node_restart(sim_world *w, uint32_t slot) {
    sim_node *n = &w->nodes[slot];
    assert(n->used && !n->up);
    SIM_TRACE(
        w, "restart n%" PRIu64 " term=%" PRIu64 " vote=%" PRIu64 " snap=%" PRIu64 " last=%" PRIu64,
        n->id, n->disk.dur.hs.term, n->disk.dur.hs.vote,
        n->disk.dur.has_snap ? n->disk.dur.snap.meta.index : 0, sim_log_last(&n->disk.dur.log));
    bring_up(w, n);
}

void sim_node_stop(sim_world *w, uint32_t slot) {
    sim_node *n = &w->nodes[slot];
    assert(n->used);
    SIM_TRACE(w, "stop n%" PRIu64 " (removed)", n->id);
    if (n->up)
        tear_down(n);
    sim_disk_free(&n->disk);
    free(n->applied_batch);
    uint32_t inc = n->incarnation;
    memset(n, 0, sizeof(*n));
    n->incarnation = inc;
}

/* A snapshot every few applied entries, so that they happen all the time
 * (between Readys: raft_snapshot_done and raft_compact are not const). */
static void maybe_snapshot(sim_world *w, sim_node *n) {
    uint64_t last = n->disk.vol.has_snap ? n->disk.vol.snap.meta.index : 0;
    if (n->applied < last + n->snap_threshold)
        return;
    assert(n->applied == node_applied(n->nd));
    raft *r = sim_raft(n);
    sim_snap s = {
        .meta = {.index = n->applied, .term = n->applied_term, .membership = n->applied_conf}};
    sim_sm_encode(&n->sm, s.data);
    sim_check_snapshot(w, n, &s, "taken");
    sim_disk_snapshot(&n->disk, &s);
    int rc = raft_snapshot_done(r, s.meta.index, s.meta.term);
    if (rc != 0) {
        sim_fail(w, "snapshot", "n%" PRIu64 " raft_snapshot_done(%" PRIu64 ",%" PRIu64 ") = %s",
                 n->id, s.meta.index, s.meta.term, kv_errword(rc));
        return;
    }
    sim_node_keep_snap(n, &s);
    /* Compact all of it, or only below what followers still need. */
    uint64_t upto = s.meta.index, floor = raft_compact_floor(r);
    if (floor < upto && sim_rand_chance(&w->rnd, 500))
        upto = floor;
    rc = raft_compact(r, upto);
    assert(rc == 0);
    w->st.snapshots++;
    SIM_TRACE(w, "snapshot n%" PRIu64 " idx=%" PRIu64 " term=%" PRIu64 " compact=%" PRIu64, n->id,
              s.meta.index, s.meta.term, upto);
}

void sim_node_ready(sim_world *w, uint32_t slot) {
    sim_node *n = &w->nodes[slot];
    if (!n->up || w->failed)
        return;
    n->readys = 0;
    do {
        int rc = node_run(n->nd);
        if (rc != 0 || w->failed) {
            if (!w->failed)
                sim_fail(w, "node", "n%" PRIu64 " node_run = %d", n->id, rc);
            return;
        }
        maybe_snapshot(w, n);
    } while (!w->failed && raft_has_ready(sim_raft(n)));
}

void sim_node_tick(sim_world *w, uint32_t slot) {
    sim_node *n = &w->nodes[slot];
    SIM_TRACE(w, "tick n%" PRIu64, n->id);
    node_tick(n->nd);
    schedule_tick(w, n);
    sim_node_ready(w, slot);
}

void sim_node_step(sim_world *w, uint32_t slot, const raft_msg *m) {
    sim_node *n = &w->nodes[slot];
    int rc = node_step(n->nd, m);
    if (rc != 0)
        sim_fail(w, "step", "n%" PRIu64 " raft_step(%s from n%" PRIu64 ") = %s", n->id,
                 sim_msg_name(m->type), m->from, kv_errword(rc));
    sim_node_ready(w, slot);
}

void sim_node_fsync_done(sim_world *w, uint32_t slot, uint64_t write_id) {
    sim_io_fsync_done(&w->nodes[slot], write_id);
    sim_node_ready(w, slot);
}
