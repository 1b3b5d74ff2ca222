/*
 * One run of the simulator: build the world for a seed, process `steps`
 * events of the fault phase (checking invariants after every one), heal
 * (network whole, every node up, no more faults), require a commit within
 * the liveness bound, then check the client history for linearizability.
 */
#include "sim.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* After healing, a leader must be elected and a new proposal commit within
 * 10 election timeouts of the slowest possible clock. */
#define SIM_LIVENESS_TIME (10u * 2u * SIM_ELECTION_TICKS * (SIM_TICK_BASE * 3u / 2u))

const char *sim_control_name(enum sim_control c) {
    switch (c) {
    case SIM_CTRL_NONE:
        return "none";
    case SIM_CTRL_UNSAFE_DISK:
        return "unsafe-disk";
    case SIM_CTRL_STALE_READS:
        return "stale-reads";
    }
    return "?";
}

void sim_trace(sim_world *w, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("t=%" PRIu64 " ", w->now);
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
}

void sim_fail(sim_world *w, const char *invariant, const char *fmt, ...) {
    if (w->failed)
        return;
    w->failed = true;
    int k = snprintf(w->why, w->why_len, "invariant=%s t=%" PRIu64 " ", invariant, w->now);
    if (k > 0 && (size_t)k < w->why_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->why + k, w->why_len - (size_t)k, fmt, ap);
        va_end(ap);
    }
    SIM_TRACE(w, "VIOLATION %s", w->why);
}

bool sim_is_member(const raft_membership *m, uint64_t id) {
    for (uint32_t i = 0; i < m->voters_count; i++)
        if (m->voters[i] == id)
            return true;
    for (uint32_t i = 0; i < m->learners_count; i++)
        if (m->learners[i] == id)
            return true;
    return false;
}

/* A node gone from the newest committed membership is stopped. */
static void reconcile_membership(sim_world *w) {
    for (uint32_t s = 0; s < w->slots; s++) {
        sim_node *n = &w->nodes[s];
        if (!n->used)
            continue;
        if (sim_is_member(&w->conf, n->id))
            n->member_seen = true;
        else if (n->member_seen)
            sim_node_stop(w, s);
    }
}

/* Pops and handles one event; false when the queue ran dry. */
static bool step_once(sim_world *w) {
    sim_event ev;
    if (sim_queue_pop(&w->q, &ev) != 0)
        return false;
    assert(ev.time >= w->now);
    w->now = ev.time;
    sim_node *n;
    switch (ev.kind) {
    case SIM_EV_TICK:
        if ((n = sim_node_ev(w, ev.a)) != NULL)
            sim_node_tick(w, n->slot);
        break;
    case SIM_EV_DELIVER:
        sim_net_deliver(w, ev.ptr);
        break;
    case SIM_EV_FSYNC:
        if ((n = sim_node_ev(w, ev.a)) != NULL)
            sim_node_fsync_done(w, n->slot, ev.b);
        break;
    case SIM_EV_CLIENT:
        sim_client_event(w, ev.a, ev.b);
        break;
    case SIM_EV_NEMESIS:
        sim_nemesis_event(w, ev.a, ev.b);
        break;
    }
    if (!w->failed)
        sim_check_roles(w);
    reconcile_membership(w);
    w->steps_done++;
    return true;
}

static void heal(sim_world *w) {
    w->healing = true;
    SIM_TRACE(w, "heal: faults stop; liveness bound %u time units", SIM_LIVENESS_TIME);
    sim_net_heal(w);
    for (uint32_t s = 0; s < w->slots && !w->failed; s++)
        if (w->nodes[s].used && !w->nodes[s].up)
            sim_node_restart(w, s);
    sim_probe_start(w);
}

static void liveness(sim_world *w) {
    uint64_t deadline = w->now + SIM_LIVENESS_TIME;
    while (!w->probe_done && !w->failed && w->now <= deadline) {
        if (!step_once(w)) {
            sim_fail(w, "liveness", "no event left to process");
            return;
        }
    }
    if (!w->probe_done && !w->failed) {
        int l = sim_leader_slot(w);
        sim_fail(w, "liveness",
                 "no proposal committed within %u time units (~10 election timeouts) of healing;"
                 " leader: %s%" PRIu64,
                 SIM_LIVENESS_TIME, l >= 0 ? "n" : "none ", l >= 0 ? w->nodes[l].id : 0);
    }
}

static void world_init(sim_world *w, const sim_opts *o, uint64_t seed) {
    w->o = *o;
    w->seed = seed;
    sim_rand_seed(&w->rnd, seed);
    sim_queue_init(&w->q);
    sim_hist_init(&w->hist);
    sim_check_init(&w->ck);
    w->slots = o->nodes + 2;
    assert(w->slots <= SIM_SLOTS_MAX);
    w->id_next = o->nodes + 1;
    w->fsync_max = sim_rand_range(&w->rnd, 5, 300);
    if (sim_rand_chance(&w->rnd, 250))
        w->snap_pad = sim_rand_range(&w->rnd, KV_SNAPSHOT_CHUNK_BYTES / 2, SIM_PAD_BYTES_MAX);
    for (uint32_t i = 0; i < o->nodes; i++)
        w->conf.voters[w->conf.voters_count++] = i + 1;
    sim_net_init(w);
    SIM_TRACE(w,
              "seed=%" PRIu64 " nodes=%u steps=%" PRIu64 " control=%s drop=%u dup=%u"
              " delay=%" PRIu64 "..%" PRIu64 " fsync<=%" PRIu64 " snap_pad=%" PRIu64,
              seed, o->nodes, o->steps, sim_control_name(o->control), w->net.drop_per_mille,
              w->net.dup_per_mille, w->net.delay_min, w->net.delay_max, w->fsync_max, w->snap_pad);
    for (uint32_t i = 0; i < o->nodes; i++)
        sim_node_start(w, i, i + 1, true);
    sim_clients_init(w);
    sim_queue_push(&w->q, w->now + sim_rand_range(&w->rnd, 500, 3000), SIM_EV_NEMESIS, 0, 0, NULL);
}

static void world_free(sim_world *w) {
    for (uint32_t s = 0; s < w->slots; s++)
        if (w->nodes[s].used)
            sim_node_stop(w, s);
    sim_event ev;
    while (sim_queue_pop(&w->q, &ev) == 0)
        if (ev.kind == SIM_EV_DELIVER)
            sim_net_packet_free(ev.ptr);
    sim_queue_free(&w->q);
    sim_hist_free(&w->hist);
    sim_check_free(&w->ck);
}

int sim_run(const sim_opts *o, uint64_t seed, sim_stats *st, char *why, size_t why_len) {
    sim_world *w = calloc(1, sizeof(*w));
    assert(w != NULL);
    w->why = why;
    w->why_len = why_len;
    world_init(w, o, seed);
    while (!w->failed && w->steps_done < o->steps)
        if (!step_once(w))
            sim_fail(w, "liveness", "no event left to process");
    if (!w->failed)
        heal(w);
    if (!w->failed)
        liveness(w);
    sim_clients_finish(w);
    if (!w->failed)
        sim_check_final(w);
    SIM_TRACE(w,
              "end %s steps=%" PRIu64 " elections=%" PRIu64 " commits=%" PRIu64
              " snapshots=%" PRIu64 " membership_changes=%" PRIu64 " ops=%zu",
              w->failed ? "FAIL" : "ok", w->steps_done, w->st.elections, w->st.commits,
              w->st.snapshots, w->st.membership_changes, w->hist.count);
    *st = w->st;
    int rc = w->failed ? -1 : 0;
    world_free(w);
    free(w);
    return rc;
}
