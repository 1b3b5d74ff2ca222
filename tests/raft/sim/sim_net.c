/*
 * The fake network. A message sent is deep-copied (raft_msg_copy) into a
 * packet, which is dropped, delayed (random delays reorder), sometimes
 * duplicated, and lost when the link is cut at send or at delivery time.
 * Partitions are a matrix of one-way cuts between slots. A message goes on
 * the wire when src/node sends it: src/node has made term and vote durable
 * before (node.h step 1, asserted there).
 */
#include "sim.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

const char *sim_msg_name(uint32_t type) {
    static const char *names[] = {"?",         "APPEND",   "APPEND_RESP",   "VOTE",
                                  "VOTE_RESP", "PREVOTE",  "PREVOTE_RESP",  "HEARTBEAT",
                                  "HB_RESP",   "SNAPSHOT", "SNAPSHOT_RESP", "TIMEOUT_NOW"};
    return type < sizeof(names) / sizeof(names[0]) ? names[type] : "?";
}

void sim_net_init(sim_world *w) {
    sim_net *net = &w->net;
    memset(net, 0, sizeof(*net));
    net->drop_per_mille = (uint32_t)sim_rand_range(&w->rnd, 0, 100);
    net->dup_per_mille = (uint32_t)sim_rand_range(&w->rnd, 0, 40);
    net->delay_min = sim_rand_range(&w->rnd, 1, 10);
    net->delay_max = sim_rand_range(&w->rnd, 20, 150);
    net->slow_per_mille = (uint32_t)sim_rand_range(&w->rnd, 0, 20);
}

void sim_net_heal(sim_world *w) {
    sim_net *net = &w->net;
    memset(net->cut, 0, sizeof(net->cut));
    net->drop_per_mille = 0;
    net->dup_per_mille = 0;
    net->slow_per_mille = 0;
    SIM_TRACE(w, "heal network");
}

void sim_net_packet_free(sim_packet *p) {
    raft_msg_free(&p->m);
    free(p);
}

static sim_packet *packet_copy(uint32_t from_slot, const raft_msg *m) {
    sim_packet *p = calloc(1, sizeof(*p));
    assert(p != NULL);
    p->from_slot = from_slot;
    p->to_id = m->to;
    int rc = raft_msg_copy(&p->m, m);
    assert(rc == 0);
    return p;
}

static void trace_msg(sim_world *w, const char *what, const sim_packet *p) {
    const raft_msg *m = &p->m;
    if (m->type == RAFT_MSG_SNAPSHOT || m->type == RAFT_MSG_SNAPSHOT_RESP) {
        SIM_TRACE(w,
                  "%s n%" PRIu64 "->n%" PRIu64 " %s term=%" PRIu64 " snap=(%" PRIu64 ",%" PRIu64
                  ") off=%" PRIu64 " len=%zu total=%" PRIu64 "%s%s",
                  what, m->from, m->to, sim_msg_name(m->type), m->term, m->snap.index, m->snap.term,
                  m->snap_offset, m->snap_len, m->snap_total, m->snap_last ? " last" : "",
                  m->reject ? " reject" : "");
        return;
    }
    SIM_TRACE(w,
              "%s n%" PRIu64 "->n%" PRIu64 " %s term=%" PRIu64 " idx=%" PRIu64 " lt=%" PRIu64
              " ents=%zu commit=%" PRIu64 "%s ctx=%" PRIu64,
              what, m->from, m->to, sim_msg_name(m->type), m->term, m->index, m->log_term,
              m->entries_count, m->commit, m->reject ? " reject" : "", m->context);
}

static bool link_cut(const sim_world *w, uint32_t from_slot, int to_slot) {
    return to_slot < 0 || w->net.cut[from_slot][to_slot];
}

static uint64_t delay(sim_world *w) {
    const sim_net *net = &w->net;
    uint64_t d = sim_rand_range(&w->rnd, net->delay_min, net->delay_max);
    if (net->slow_per_mille && sim_rand_chance(&w->rnd, net->slow_per_mille))
        d *= sim_rand_range(&w->rnd, 2, 10);
    return d;
}

/* Puts p on the wire (owned from here on). */
static void wire(sim_world *w, sim_packet *p) {
    int to = sim_node_slot_of(w, p->to_id);
    if (link_cut(w, p->from_slot, to) || sim_rand_chance(&w->rnd, w->net.drop_per_mille)) {
        trace_msg(w, "drop", p);
        sim_net_packet_free(p);
        return;
    }
    trace_msg(w, "send", p);
    if (w->net.dup_per_mille && sim_rand_chance(&w->rnd, w->net.dup_per_mille)) {
        sim_packet *d = packet_copy(p->from_slot, &p->m);
        trace_msg(w, "dup", d);
        sim_queue_push(&w->q, w->now + delay(w), SIM_EV_DELIVER, 0, 0, d);
    }
    sim_queue_push(&w->q, w->now + delay(w), SIM_EV_DELIVER, 0, 0, p);
}

void sim_net_send(sim_world *w, uint32_t from_slot, const raft_msg *m) {
    const sim_node *n = &w->nodes[from_slot];
    assert(n->used && n->up && m->from == n->id);
    wire(w, packet_copy(from_slot, m));
}

void sim_net_deliver(sim_world *w, sim_packet *p) {
    int to = sim_node_slot_of(w, p->to_id);
    if (link_cut(w, p->from_slot, to) || !w->nodes[to].up) {
        trace_msg(w, "lost", p);
    } else {
        trace_msg(w, "deliver", p);
        sim_node_step(w, (uint32_t)to, &p->m);
    }
    sim_net_packet_free(p);
}
