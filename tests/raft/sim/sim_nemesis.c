/*
 * The nemesis: while the fault phase lasts it acts every few hundred time
 * units, choosing among crash, restart, symmetric partition, isolating the
 * leader, one-way cuts, healing, clock skew, network weather, membership
 * changes (add learner, promote, remove a voter, the leader included),
 * leadership transfers and wrong "link to the leader closed" hints (a crash
 * gives the right one to the nodes that reach the crashed node). It stops
 * when the run heals for the liveness check.
 */
#include "sim.h"

#include "kv/errors.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

int sim_leader_slot(const sim_world *w) {
    int best = -1;
    uint64_t term = 0;
    for (uint32_t s = 0; s < w->slots; s++) {
        const sim_node *n = &w->nodes[s];
        if (!n->used || !n->up)
            continue;
        const raft *r = sim_raft(n);
        if (raft_state_role(r) == RAFT_LEADER && raft_term(r) >= term) {
            best = (int)s;
            term = raft_term(r);
        }
    }
    return best;
}

/* A random used slot that is up (want_up) or down; -1 when none. */
static int pick_slot(sim_world *w, bool want_up) {
    uint32_t cand[SIM_SLOTS_MAX], k = 0;
    for (uint32_t s = 0; s < w->slots; s++)
        if (w->nodes[s].used && w->nodes[s].up == want_up)
            cand[k++] = s;
    return k ? (int)cand[sim_rand_below(&w->rnd, k)] : -1;
}

static void trace_cuts(sim_world *w, const char *what) {
    if (!w->o.trace)
        return;
    char buf[256];
    size_t off = 0;
    for (uint32_t a = 0; a < w->slots; a++)
        for (uint32_t b = 0; b < w->slots; b++)
            if (w->net.cut[a][b] && off + 16 < sizeof(buf))
                off += (size_t)snprintf(buf + off, sizeof(buf) - off, " s%u->s%u", a, b);
    buf[off] = '\0';
    sim_trace(w, "partition %s:%s", what, off ? buf : " none");
}

static void partition_split(sim_world *w) {
    memset(w->net.cut, 0, sizeof(w->net.cut));
    bool side[SIM_SLOTS_MAX];
    for (uint32_t s = 0; s < w->slots; s++)
        side[s] = sim_rand_chance(&w->rnd, 500);
    for (uint32_t a = 0; a < w->slots; a++)
        for (uint32_t b = 0; b < w->slots; b++)
            w->net.cut[a][b] = side[a] != side[b];
    trace_cuts(w, "split");
}

static void partition_leader(sim_world *w) {
    int l = sim_leader_slot(w);
    if (l < 0)
        return;
    for (uint32_t s = 0; s < w->slots; s++)
        if (s != (uint32_t)l)
            w->net.cut[l][s] = w->net.cut[s][l] = true;
    trace_cuts(w, "isolate leader");
}

static void partition_one_way(sim_world *w) {
    uint32_t a = (uint32_t)sim_rand_below(&w->rnd, w->slots);
    uint32_t b = (uint32_t)sim_rand_below(&w->rnd, w->slots);
    if (a == b)
        return;
    w->net.cut[a][b] = true;
    trace_cuts(w, "one-way");
}

static void heal_links(sim_world *w) {
    memset(w->net.cut, 0, sizeof(w->net.cut));
    trace_cuts(w, "heal");
}

/* kvd's hint (server.c, leader_link_watch): the nodes that reach node id
 * see its links close and those following it forget it
 * (raft_leader_unreachable). */
static void hint_down(sim_world *w, uint32_t slot) {
    uint64_t id = w->nodes[slot].id;
    for (uint32_t o = 0; o < w->slots; o++) {
        sim_node *p = &w->nodes[o];
        if (o == slot || !p->used || !p->up || w->net.cut[o][slot] || w->net.cut[slot][o])
            continue;
        if (raft_leader(sim_raft(p)) == id)
            SIM_TRACE(w, "hint n%" PRIu64 ": link to leader n%" PRIu64 " closed", p->id, id);
        raft_leader_unreachable(sim_raft(p), id);
        sim_node_ready(w, o);
    }
}

/* A wrong hint: a live leader's link to one follower closed. */
static void hint_wrong(sim_world *w) {
    int s = pick_slot(w, true);
    if (s < 0)
        return;
    sim_node *p = &w->nodes[s];
    uint64_t lead = raft_leader(sim_raft(p));
    SIM_TRACE(w, "hint n%" PRIu64 ": link to leader n%" PRIu64 " closed (it lives)", p->id, lead);
    raft_leader_unreachable(sim_raft(p), lead);
    sim_node_ready(w, (uint32_t)s);
}

/* A crashed node comes back by itself after a while (or earlier through
 * restart_one), so that runs do not idle with the cluster down. */
static void crash_one(sim_world *w) {
    int s = pick_slot(w, true);
    if (s < 0)
        return;
    sim_node_crash(w, (uint32_t)s);
    hint_down(w, (uint32_t)s);
    sim_node *n = &w->nodes[s];
    sim_queue_push(&w->q, w->now + sim_rand_range(&w->rnd, 100, 8000), SIM_EV_NEMESIS,
                   (uint32_t)s + 1, n->incarnation, NULL);
}

static void restart_scheduled(sim_world *w, uint32_t slot, uint64_t incarnation) {
    assert(slot < w->slots);
    sim_node *n = &w->nodes[slot];
    if (n->used && !n->up && n->incarnation == incarnation)
        sim_node_restart(w, slot);
}

static void restart_one(sim_world *w) {
    int s = pick_slot(w, false);
    if (s >= 0)
        sim_node_restart(w, (uint32_t)s);
}

static void skew_clock(sim_world *w) {
    int s = pick_slot(w, true);
    if (s < 0)
        return;
    sim_node *n = &w->nodes[s];
    n->tick_period = sim_rand_range(&w->rnd, SIM_TICK_BASE / 2, SIM_TICK_BASE * 3 / 2);
    SIM_TRACE(w, "skew n%" PRIu64 " tick=%" PRIu64, n->id, n->tick_period);
}

static void weather(sim_world *w) {
    sim_net *net = &w->net;
    net->drop_per_mille = (uint32_t)sim_rand_range(&w->rnd, 0, 200);
    net->dup_per_mille = (uint32_t)sim_rand_range(&w->rnd, 0, 50);
    net->delay_max = sim_rand_range(&w->rnd, net->delay_min + 10, 300);
    SIM_TRACE(w, "weather drop=%u dup=%u delay=%" PRIu64 "..%" PRIu64, net->drop_per_mille,
              net->dup_per_mille, net->delay_min, net->delay_max);
}

static void transfer(sim_world *w) {
    int l = sim_leader_slot(w);
    if (l < 0)
        return;
    sim_node *n = &w->nodes[l];
    raft_membership m;
    raft_membership_get(sim_raft(n), &m);
    uint64_t to = m.voters[sim_rand_below(&w->rnd, m.voters_count)];
    if (to == n->id && m.voters_count > 1)
        return;
    int rc = raft_transfer_leader(sim_raft(n), to);
    SIM_TRACE(w, "transfer n%" PRIu64 " -> n%" PRIu64 ": %s", n->id, to, kv_errword(rc));
    sim_node_ready(w, (uint32_t)l);
}

static int free_slot(const sim_world *w) {
    for (uint32_t s = 0; s < w->slots; s++)
        if (!w->nodes[s].used)
            return (int)s;
    return -1;
}

static int propose_conf(sim_world *w, sim_node *l, raft_conf_op op, uint64_t id) {
    static const char *names[] = {"?", "add-learner", "promote", "remove"};
    uint64_t index = 0;
    int rc = raft_propose_conf(sim_raft(l), op, id, &index);
    SIM_TRACE(w, "conf n%" PRIu64 " proposes %s n%" PRIu64 ": %s idx=%" PRIu64, l->id, names[op],
              id, kv_errword(rc), index);
    return rc;
}

/* One membership change through the leader: promote a caught-up learner,
 * add a learner, or remove a voter (maybe the leader) or a learner. */
static void membership(sim_world *w) {
    int ls = sim_leader_slot(w);
    if (ls < 0)
        return;
    sim_node *l = &w->nodes[ls];
    raft_membership m;
    raft_membership_get(sim_raft(l), &m);
    for (uint32_t i = 0; i < m.learners_count; i++) {
        if (raft_learner_caught_up(sim_raft(l), m.learners[i])) {
            propose_conf(w, l, RAFT_CONF_PROMOTE, m.learners[i]);
            sim_node_ready(w, (uint32_t)ls);
            return;
        }
    }
    uint64_t r = sim_rand_below(&w->rnd, 3);
    int fs = free_slot(w);
    if (r == 0 && fs >= 0) {
        uint64_t id = w->id_next;
        if (propose_conf(w, l, RAFT_CONF_ADD_LEARNER, id) == 0) {
            w->id_next++;
            sim_node_start(w, (uint32_t)fs, id, false);
        }
    } else if (r == 1 && m.voters_count > 3) {
        propose_conf(w, l, RAFT_CONF_REMOVE, m.voters[sim_rand_below(&w->rnd, m.voters_count)]);
    } else if (r == 2 && m.learners_count > 0) {
        propose_conf(w, l, RAFT_CONF_REMOVE, m.learners[sim_rand_below(&w->rnd, m.learners_count)]);
    }
    if (l->up)
        sim_node_ready(w, (uint32_t)ls);
}

void sim_nemesis_event(sim_world *w, uint32_t a, uint64_t b) {
    if (w->healing)
        return;
    if (a != 0) {
        restart_scheduled(w, a - 1, b);
        return;
    }
    uint64_t r = sim_rand_below(&w->rnd, 1000);
    if (r < 130)
        crash_one(w);
    else if (r < 200)
        restart_one(w);
    else if (r < 290)
        partition_split(w);
    else if (r < 350)
        partition_leader(w);
    else if (r < 420)
        partition_one_way(w);
    else if (r < 560)
        heal_links(w);
    else if (r < 760)
        membership(w);
    else if (r < 870)
        transfer(w);
    else if (r < 920)
        skew_clock(w);
    else if (r < 960)
        weather(w);
    else if (r < 990)
        hint_wrong(w);
    sim_queue_push(&w->q, w->now + sim_rand_range(&w->rnd, 100, 3000), SIM_EV_NEMESIS, 0, 0, NULL);
}
