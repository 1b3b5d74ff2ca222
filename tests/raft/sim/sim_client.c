/*
 * Simulated clients. Each has one register operation in flight, handed to
 * the node it believes leads as kvd would: a WRITE or CAS through
 * node_propose carrying (client, seq), a READ through node_read (ReadIndex).
 * The node's tag names the client (owner), the op's seq (id) and its kind;
 * src/node answers through io.write_done / io.read_done (sim_io.c):
 *   - code 0: the write's entry applied, with the state machine's result;
 *     the read may be served now from that node's state machine;
 *   - otherwise (NOTLEADER: leadership lost, CLOSED: the node crashed) the
 *     outcome is unknown: the write may or may not take effect.
 * A client retries an unknown outcome, a refusal or a timeout with the same
 * (client, seq) (the state machine dedups, so a write takes effect at most
 * once, whichever attempt commits), and after SIM_CLIENT_TRIES_MAX attempts
 * gives up: the operation stays open-ended ("unknown") in the history. An
 * answer "applied" for an op still open ends it whichever attempt it is for
 * and wherever the client waits now: it is what happened.
 *
 * An operation enters the history when it is first accepted by a node
 * (node_propose or node_read returned 0): a refusal before that had no
 * effect (linz.h recording rules).
 *
 * The answer callbacks run inside src/node's Ready loop and never call into
 * it: they only change client state and schedule client events.
 *
 * The liveness probe is client SIM_CLIENTS (id SIM_PROBE_CLIENT): one write
 * after the faults heal, retried until it commits or the run's bound passes.
 */
#include "sim.h"

#include "kv/errors.h"

#include <assert.h>
#include <inttypes.h>
#include <string.h>

#define SIM_CLIENT_TRIES_MAX 6u    /* proposals or reads asked, then unknown */
#define SIM_CLIENT_SUBMITS_MAX 40u /* refusals (no leader) before giving up */
#define SIM_CLIENT_RETRY_DELAY 60u /* after a refusal */
#define SIM_CLIENT_TIMEOUT (4u * 2u * SIM_ELECTION_TICKS * SIM_TICK_BASE)
#define SIM_CLIENT_THINK_MAX 400u

static void client_at(sim_world *w, sim_client *c, uint64_t when) {
    c->epoch++;
    sim_queue_push(&w->q, when, SIM_EV_CLIENT, (uint32_t)(c - w->clients), c->epoch, NULL);
}

void sim_clients_init(sim_world *w) {
    memset(w->clients, 0, sizeof(w->clients));
    for (uint32_t i = 0; i <= SIM_CLIENTS; i++) {
        sim_client *c = &w->clients[i];
        c->id = i < SIM_CLIENTS ? i : SIM_PROBE_CLIENT;
        c->seq_next = 1;
        c->guess = (uint32_t)sim_rand_below(&w->rnd, w->o.nodes);
        if (i < SIM_CLIENTS)
            client_at(w, c, w->now + sim_rand_range(&w->rnd, 1, 1000));
    }
}

static void new_op(sim_world *w, sim_client *c) {
    sim_cmd *cmd = &c->cmd;
    memset(cmd, 0, sizeof(*cmd));
    cmd->client = c->id;
    cmd->seq = c->seq_next++;
    cmd->key = (uint32_t)sim_rand_below(&w->rnd, SIM_KEYS);
    uint64_t r = sim_rand_below(&w->rnd, 100);
    if (c->id == SIM_PROBE_CLIENT || (r >= 40 && r < 75)) {
        cmd->op = SIM_OP_WRITE;
        cmd->arg1 = ++w->value_next;
    } else if (r >= 75) {
        /* Expect a value some node holds, so that swaps happen. */
        const sim_node *n = &w->nodes[sim_rand_below(&w->rnd, w->slots)];
        cmd->op = SIM_OP_CAS;
        cmd->arg1 = n->used ? n->sm.values[cmd->key] : 0;
        cmd->arg2 = ++w->value_next;
    } else {
        cmd->op = SIM_OP_READ;
    }
    c->state = SIM_C_SUBMIT;
    c->recorded = false;
    c->tries = 0;
    c->submits = 0;
}

static void finish_op(sim_world *w, sim_client *c) {
    c->state = SIM_C_IDLE;
    if (c->id == SIM_PROBE_CLIENT)
        return;
    client_at(w, c, w->now + sim_rand_range(&w->rnd, 1, SIM_CLIENT_THINK_MAX));
}

static void give_up(sim_world *w, sim_client *c, const char *why) {
    SIM_TRACE(w, "client c%u#%" PRIu64 " gives up (%s)%s", c->id, c->cmd.seq, why,
              c->recorded ? ": unknown" : ": never taken");
    if (c->recorded)
        sim_hist_give_up(&w->hist, c->hist_idx);
    finish_op(w, c);
}

static void complete(sim_world *w, sim_client *c, uint32_t slot, enum sim_outcome out,
                     uint64_t value) {
    assert(c->recorded);
    sim_hist_complete(&w->hist, c->hist_idx, out, value, w->now);
    SIM_TRACE(w, "client c%u#%" PRIu64 " %s k%u -> %s %" PRIu64, c->id, c->cmd.seq,
              c->cmd.op == SIM_OP_READ    ? "read"
              : c->cmd.op == SIM_OP_WRITE ? "write"
                                          : "cas",
              c->cmd.key, out == SIM_OUT_OK ? "ok" : "cmpfail", value);
    if (c->id == SIM_PROBE_CLIENT) {
        w->probe_done = true;
        w->probe_slot = slot;
    }
    finish_op(w, c);
}

static void record(sim_world *w, sim_client *c) {
    if (c->recorded)
        return;
    c->hist_idx = sim_hist_invoke(&w->hist, c->id, &c->cmd, w->now);
    c->recorded = true;
}

/* Refused before anything was asked of a leader: look elsewhere. */
static void refused(sim_world *w, sim_client *c, const sim_node *n) {
    int hint = n->used && n->up ? sim_node_slot_of(w, node_leader(n->nd)) : -1;
    c->guess = hint >= 0 && (uint32_t)hint != n->slot ? (uint32_t)hint
                                                      : (uint32_t)sim_rand_below(&w->rnd, w->slots);
    if (++c->submits > SIM_CLIENT_SUBMITS_MAX && c->id != SIM_PROBE_CLIENT) {
        give_up(w, c, "no leader");
        return;
    }
    c->state = SIM_C_SUBMIT;
    client_at(w, c, w->now + SIM_CLIENT_RETRY_DELAY);
}

/* Asked: wait for the outcome on node n until the deadline. */
static void wait_on(sim_world *w, sim_client *c, sim_node *n, enum sim_cstate st) {
    record(w, c);
    c->state = st;
    c->slot = n->slot;
    c->tries++;
    c->deadline = w->now + SIM_CLIENT_TIMEOUT;
    client_at(w, c, c->deadline);
}

static node_tag tag_of(sim_client *c) {
    return (node_tag){.owner = c, .id = c->cmd.seq, .kind = c->cmd.op};
}

static void submit_read(sim_world *w, sim_client *c, sim_node *n) {
    if (w->o.control == SIM_CTRL_STALE_READS && raft_state_role(sim_raft(n)) == RAFT_LEADER) {
        /* The control's bug: a leader answers from its own state at once,
         * bypassing node_read (no ReadIndex round). */
        record(w, c);
        complete(w, c, n->slot, SIM_OUT_OK, n->sm.values[c->cmd.key]);
        return;
    }
    node_tag t = tag_of(c);
    int rc = node_read(n->nd, &t);
    if (rc != 0) {
        SIM_TRACE(w, "client c%u#%" PRIu64 " read refused by n%" PRIu64 ": %s", c->id, c->cmd.seq,
                  n->id, kv_errword(rc));
        refused(w, c, n);
        return;
    }
    SIM_TRACE(w, "client c%u#%" PRIu64 " read k%u at n%" PRIu64, c->id, c->cmd.seq, c->cmd.key,
              n->id);
    wait_on(w, c, n, SIM_C_WAIT_READ);
    sim_node_ready(w, n->slot);
}

static void submit_write(sim_world *w, sim_client *c, sim_node *n) {
    uint8_t buf[SIM_CMD_BYTES];
    sim_cmd_encode(&c->cmd, buf, sizeof(buf));
    uint64_t index = 0;
    node_tag t = tag_of(c);
    int rc = node_propose(n->nd, buf, sizeof(buf), &t, &index);
    if (rc != 0) {
        SIM_TRACE(w, "client c%u#%" PRIu64 " refused by n%" PRIu64 ": %s", c->id, c->cmd.seq, n->id,
                  kv_errword(rc));
        refused(w, c, n);
        return;
    }
    SIM_TRACE(w,
              "client c%u#%" PRIu64 " propose %s k%u %" PRIu64 " %" PRIu64 " at n%" PRIu64
              " idx=%" PRIu64,
              c->id, c->cmd.seq, c->cmd.op == SIM_OP_WRITE ? "write" : "cas", c->cmd.key,
              c->cmd.arg1, c->cmd.arg2, n->id, index);
    wait_on(w, c, n, SIM_C_WAIT_APPLY);
    sim_node_ready(w, n->slot);
}

static void submit(sim_world *w, sim_client *c) {
    assert(c->state == SIM_C_SUBMIT);
    if (c->tries >= SIM_CLIENT_TRIES_MAX && c->id != SIM_PROBE_CLIENT) {
        give_up(w, c, "timeouts");
        return;
    }
    if (c->guess >= w->slots)
        c->guess = 0;
    sim_node *n = &w->nodes[c->guess];
    if (!n->used || !n->up) {
        refused(w, c, n);
        return;
    }
    if (c->cmd.op == SIM_OP_READ)
        submit_read(w, c, n);
    else
        submit_write(w, c, n);
}

void sim_client_event(sim_world *w, uint32_t ci, uint64_t epoch) {
    assert(ci <= SIM_CLIENTS);
    sim_client *c = &w->clients[ci];
    if (epoch != c->epoch)
        return; /* superseded */
    switch (c->state) {
    case SIM_C_IDLE:
        if (w->healing && c->id != SIM_PROBE_CLIENT)
            return; /* no new operations once the faults stop */
        new_op(w, c);
        submit(w, c);
        break;
    case SIM_C_SUBMIT:
        submit(w, c);
        break;
    case SIM_C_WAIT_APPLY:
    case SIM_C_WAIT_READ:
        SIM_TRACE(w, "client c%u#%" PRIu64 " timeout at n%" PRIu64, c->id, c->cmd.seq,
                  w->nodes[c->slot].id);
        c->state = SIM_C_SUBMIT;
        c->guess = (uint32_t)sim_rand_below(&w->rnd, w->slots);
        submit(w, c);
        break;
    }
}

/* The node it waited on lost it: try again soon, elsewhere if need be. */
static void retry_soon(sim_world *w, sim_client *c, uint64_t leader_hint) {
    int hint = sim_node_slot_of(w, leader_hint);
    c->guess = hint >= 0 ? (uint32_t)hint : (uint32_t)sim_rand_below(&w->rnd, w->slots);
    c->state = SIM_C_SUBMIT;
    client_at(w, c, w->now + 1);
}

/* The client t names, when the answer is about its open op (else NULL:
 * the op was answered already or given up, and stays as recorded). */
static sim_client *answered(sim_world *w, const node_tag *t) {
    sim_client *c = t->owner;
    assert(c >= w->clients && c <= &w->clients[SIM_CLIENTS]);
    if (c->state == SIM_C_IDLE || c->cmd.seq != t->id)
        return NULL;
    assert(c->recorded && t->kind == (uint32_t)c->cmd.op);
    return c;
}

void sim_client_write_done(sim_world *w, uint32_t slot, const node_tag *t, const sim_reply *r,
                           int code, uint64_t leader_hint) {
    sim_client *c = answered(w, t);
    if (c == NULL)
        return;
    assert(c->cmd.op != SIM_OP_READ && (code == 0) == (r != NULL));
    if (code == 0)
        complete(w, c, slot, r->ok ? SIM_OUT_OK : SIM_OUT_FAIL, r->value);
    else if (c->state == SIM_C_WAIT_APPLY && c->slot == slot)
        retry_soon(w, c, leader_hint); /* unknown: the same (client, seq) again */
}

void sim_client_read_done(sim_world *w, uint32_t slot, const node_tag *t, int code,
                          uint64_t leader_hint) {
    sim_client *c = answered(w, t);
    if (c == NULL)
        return;
    assert(c->cmd.op == SIM_OP_READ);
    if (code == 0)
        complete(w, c, slot, SIM_OUT_OK, w->nodes[slot].sm.values[c->cmd.key]);
    else if (c->state == SIM_C_WAIT_READ && c->slot == slot)
        retry_soon(w, c, leader_hint);
}

void sim_clients_finish(sim_world *w) {
    for (uint32_t i = 0; i <= SIM_CLIENTS; i++) {
        sim_client *c = &w->clients[i];
        if (c->state != SIM_C_IDLE && c->recorded)
            sim_hist_give_up(&w->hist, c->hist_idx);
        c->state = SIM_C_IDLE;
        c->epoch++;
    }
}

void sim_probe_start(sim_world *w) {
    sim_client *c = &w->clients[SIM_CLIENTS];
    w->probe_done = false;
    c->state = SIM_C_IDLE;
    client_at(w, c, w->now + 1);
}
