/*
 * The Ready loop of one node, in raft.h's order:
 *   1. hard state: written; when hs_must_sync, every message from here on
 *      waits in the outbox until that write is durable (the barrier);
 *   2. snapshot install: synchronous, the chunks received become the state;
 *   3. chunk: stored in the volatile receive buffer;
 *   4. messages: sent (or held behind the barrier);
 *   5. entries: written (volatile until the fsync event); raft_persisted()
 *      follows only when the fsync completes;
 *   6. committed entries applied; 7. reads handed to the clients;
 *   8. raft_advance().
 * Under --control unsafe-disk, step 1 sets no barrier and writes are
 * reported persisted right after the Ready: the bug the checker must see.
 */
#include "sim.h"

#include "kv/errors.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define READY_LOOPS_MAX 10000u

void sim_node_fsync_schedule(sim_world *w, sim_node *n, uint64_t write_id) {
    uint64_t t = w->now + sim_rand_range(&w->rnd, 1, n->fsync_max);
    if (t <= n->disk.fsync_time_last)
        t = n->disk.fsync_time_last + 1; /* syncs complete in order */
    n->disk.fsync_time_last = t;
    sim_queue_push(&w->q, t, SIM_EV_FSYNC, sim_node_ev_a(n), write_id, NULL);
}

void sim_node_report_persisted(sim_world *w, sim_node *n) {
    bool unsafe = w->o.control == SIM_CTRL_UNSAFE_DISK;
    const sim_log *l = unsafe ? &n->disk.vol.log : &n->disk.dur.log;
    if (l->count == 0)
        return;
    const sim_ent *e = &l->e[l->count - 1];
    if (e->index == n->persisted_reported && e->term == n->persisted_term)
        return;
    n->persisted_reported = e->index;
    n->persisted_term = e->term;
    SIM_TRACE(w, "persist n%" PRIu64 " idx=%" PRIu64 " term=%" PRIu64, n->id, e->index, e->term);
    raft_persisted(n->r, e->index, e->term);
}

static bool is_member(const raft_membership *m, uint64_t id) {
    for (uint32_t i = 0; i < m->voters_count; i++)
        if (m->voters[i] == id)
            return true;
    for (uint32_t i = 0; i < m->learners_count; i++)
        if (m->learners[i] == id)
            return true;
    return false;
}

bool sim_is_member(const raft_membership *m, uint64_t id) {
    return is_member(m, id);
}

/* Step 2: the chunks received become the node's state, durably. */
static void install_snapshot(sim_world *w, sim_node *n, const raft_snapshot_meta *meta) {
    sim_disk *d = &n->disk;
    if (d->in_index != meta->index || d->in_term != meta->term ||
        d->in_total != SIM_SM_BYTES + n->snap_pad || d->in_got != d->in_total) {
        sim_fail(w, "snapshot-transfer",
                 "n%" PRIu64 " told to install (%" PRIu64 ",%" PRIu64 ") but holds %" PRIu64
                 "/%" PRIu64 " bytes of (%" PRIu64 ",%" PRIu64 ")",
                 n->id, meta->index, meta->term, d->in_got, d->in_total, d->in_index, d->in_term);
        return;
    }
    sim_snap s = {.meta = *meta};
    memcpy(s.data, d->in_data, SIM_SM_BYTES);
    if (sim_sm_decode(s.data, SIM_SM_BYTES, &n->sm) != 0) {
        sim_fail(w, "snapshot-transfer", "n%" PRIu64 " received a corrupt snapshot", n->id);
        return;
    }
    sim_check_snapshot(w, n, &s, "installed");
    /* Installing empties the log: entries after the snapshot must not be
     * committed ones (Raft §7 keeps a matching suffix). */
    if (sim_log_last(&d->vol.log) > meta->index)
        sim_check_truncate(w, n, meta->index + 1, "installs a snapshot below, discarding");
    if (w->failed)
        return;
    sim_disk_install(d, &s);
    n->applied = meta->index;
    n->applied_term = meta->term;
    n->applied_conf = meta->membership;
    sim_node_keep_snap(n, &s);
    w->st.snapshots++;
    SIM_TRACE(w, "install n%" PRIu64 " snapshot idx=%" PRIu64 " term=%" PRIu64, n->id, meta->index,
              meta->term);
}

static bool pad_ok(uint64_t index, uint64_t offset, const uint8_t *p, size_t len) {
    const uint8_t *pad = sim_pad_table() + offset, x = (uint8_t)index;
    uint8_t diff = 0;
    for (size_t j = 0; j < len; j++)
        diff |= (uint8_t)(p[j] ^ pad[j] ^ x);
    return diff == 0;
}

/* Step 3: one chunk into the volatile receive buffer (the filler is checked,
 * not kept). */
static void store_chunk(sim_world *w, sim_node *n, const raft_snapshot_chunk *c) {
    sim_disk *d = &n->disk;
    uint64_t total = SIM_SM_BYTES + n->snap_pad;
    if (c->offset == 0) {
        d->in_index = c->index;
        d->in_term = c->term;
        d->in_total = c->total_size;
        d->in_got = 0;
    }
    if (c->index != d->in_index || c->term != d->in_term || c->offset != d->in_got ||
        c->total_size != total || c->offset + c->len > total) {
        sim_fail(w, "snapshot-transfer",
                 "n%" PRIu64 " chunk (%" PRIu64 ",%" PRIu64 ") offset %" PRIu64
                 " len %zu total %" PRIu64 " does not continue (%" PRIu64 ",%" PRIu64
                 ") at %" PRIu64,
                 n->id, c->index, c->term, c->offset, c->len, c->total_size, d->in_index,
                 d->in_term, d->in_got);
        return;
    }
    const uint8_t *p = c->data;
    size_t head = c->offset < SIM_SM_BYTES ? (size_t)(SIM_SM_BYTES - c->offset) : 0;
    if (head > c->len)
        head = c->len;
    memcpy(d->in_data + c->offset, p, head);
    if (!pad_ok(c->index, c->offset + head, p + head, c->len - head)) {
        sim_fail(w, "snapshot-transfer", "n%" PRIu64 " chunk at %" PRIu64 " has wrong bytes", n->id,
                 c->offset);
        return;
    }
    d->in_got += c->len;
    SIM_TRACE(w, "chunk n%" PRIu64 " snapshot idx=%" PRIu64 " off=%" PRIu64 " len=%zu%s", n->id,
              c->index, c->offset, c->len, c->last ? " last" : "");
}

/* Returns true when a client command was applied (*c, *r filled). */
static bool apply_normal(sim_world *w, sim_node *n, const raft_entry *e, sim_cmd *cp,
                         sim_reply *rp) {
    sim_cmd c;
    if (sim_cmd_decode(e->data, e->len, &c) != 0) {
        sim_fail(w, "apply", "n%" PRIu64 " entry %" PRIu64 " holds no command", n->id, e->index);
        return false;
    }
    if (c.op == SIM_OP_READ) {
        sim_fail(w, "apply", "n%" PRIu64 " entry %" PRIu64 " is a read", n->id, e->index);
        return false;
    }
    bool dup;
    sim_reply r = sim_sm_apply(&n->sm, &c, &dup);
    SIM_TRACE(w, "apply n%" PRIu64 " idx=%" PRIu64 " term=%" PRIu64 " c%u#%" PRIu64 " %s k%u%s %s",
              n->id, e->index, e->term, c.client, c.seq, c.op == SIM_OP_WRITE ? "write" : "cas",
              c.key, dup ? " dup" : "", r.ok ? "ok" : "cmpfail");
    *cp = c;
    *rp = r;
    return true;
}

static void apply_conf(sim_world *w, sim_node *n, const raft_entry *e) {
    raft_conf_op op;
    uint64_t node;
    raft_membership m;
    int rc = raft_conf_decode(e->data, e->len, &op, &node, &m);
    if (rc != 0) {
        sim_fail(w, "apply", "n%" PRIu64 " CONF entry %" PRIu64 " does not decode: %s", n->id,
                 e->index, kv_errword(rc));
        return;
    }
    n->applied_conf = m;
    SIM_TRACE(w,
              "apply n%" PRIu64 " idx=%" PRIu64 " term=%" PRIu64 " conf %s n%" PRIu64
              " voters=%u learners=%u",
              n->id, e->index, e->term,
              op == RAFT_CONF_BOOTSTRAP     ? "bootstrap"
              : op == RAFT_CONF_ADD_LEARNER ? "add"
              : op == RAFT_CONF_PROMOTE     ? "promote"
                                            : "remove",
              node, m.voters_count, m.learners_count);
    if (e->index > w->conf_index) {
        w->conf_index = e->index;
        w->conf = m;
    }
}

/* Step 6. */
static void apply_committed(sim_world *w, sim_node *n, const struct raft_ready *rd) {
    for (size_t i = 0; i < rd->committed_count && !w->failed; i++) {
        const raft_entry *e = &rd->committed[i];
        sim_cmd c;
        sim_reply r;
        bool cmd = false;
        if (e->type == RAFT_ENTRY_NORMAL)
            cmd = apply_normal(w, n, e, &c, &r);
        else if (e->type == RAFT_ENTRY_CONF)
            apply_conf(w, n, e);
        else
            SIM_TRACE(w, "apply n%" PRIu64 " idx=%" PRIu64 " term=%" PRIu64 " noop", n->id,
                      e->index, e->term);
        uint8_t buf[SIM_SM_BYTES];
        sim_sm_encode(&n->sm, buf);
        sim_check_apply(w, n, e, sim_sm_digest(buf));
        n->applied = e->index;
        n->applied_term = e->term;
        if (cmd && !w->failed)
            sim_clients_on_apply(w, n->slot, &c, &r, e);
    }
    if (rd->membership_changed)
        n->applied_conf = rd->membership;
}

/* A snapshot every few applied entries, so that they happen all the time. */
static void maybe_snapshot(sim_world *w, sim_node *n) {
    uint64_t last = n->disk.vol.has_snap ? n->disk.vol.snap.meta.index : 0;
    if (n->applied < last + n->snap_threshold)
        return;
    sim_snap s = {
        .meta = {.index = n->applied, .term = n->applied_term, .membership = n->applied_conf}};
    sim_sm_encode(&n->sm, s.data);
    sim_check_snapshot(w, n, &s, "taken");
    sim_disk_snapshot(&n->disk, &s);
    int rc = raft_snapshot_done(n->r, s.meta.index, s.meta.term);
    if (rc != 0) {
        sim_fail(w, "snapshot", "n%" PRIu64 " raft_snapshot_done(%" PRIu64 ",%" PRIu64 ") = %s",
                 n->id, s.meta.index, s.meta.term, kv_errword(rc));
        return;
    }
    sim_node_keep_snap(n, &s);
    /* Compact all of it, or only below what followers still need. */
    uint64_t upto = s.meta.index, floor = raft_compact_floor(n->r);
    if (floor < upto && sim_rand_chance(&w->rnd, 500))
        upto = floor;
    rc = raft_compact(n->r, upto);
    assert(rc == 0);
    w->st.snapshots++;
    SIM_TRACE(w, "snapshot n%" PRIu64 " idx=%" PRIu64 " term=%" PRIu64 " compact=%" PRIu64, n->id,
              s.meta.index, s.meta.term, upto);
}

static void trace_ready(sim_world *w, const sim_node *n, const struct raft_ready *rd) {
    if (rd->hs_changed)
        SIM_TRACE(w, "hs n%" PRIu64 " term=%" PRIu64 " vote=%" PRIu64 " commit=%" PRIu64 "%s",
                  n->id, rd->hs.term, rd->hs.vote, rd->hs.commit,
                  rd->hs_must_sync ? " must_sync" : "");
    if (rd->entries_count)
        SIM_TRACE(w, "write n%" PRIu64 " entries [%" PRIu64 ",%" PRIu64 "] term=%" PRIu64, n->id,
                  rd->entries[0].index, rd->entries[rd->entries_count - 1].index,
                  rd->entries[rd->entries_count - 1].term);
}

/* One raft_ready .. raft_advance round. Returns true when a snapshot was
 * installed (everything is durable now). */
static bool ready_once(sim_world *w, sim_node *n) {
    struct raft_ready rd;
    int rc = raft_ready(n->r, &rd);
    assert(rc == 0);
    trace_ready(w, n, &rd);
    uint64_t write_id = 0;
    if (rd.hs_changed) {
        write_id = sim_disk_write_hs(&n->disk, &rd.hs);
        if (rd.hs_must_sync && w->o.control != SIM_CTRL_UNSAFE_DISK)
            n->barrier = write_id;
    }
    if (rd.has_snapshot)
        install_snapshot(w, n, &rd.snapshot);
    if (rd.has_chunk)
        store_chunk(w, n, &rd.chunk);
    for (size_t i = 0; i < rd.msgs_count; i++) {
        if (rd.msgs[i].to == n->id || rd.msgs[i].from != n->id)
            sim_fail(w, "message", "n%" PRIu64 " sends a message from n%" PRIu64 " to n%" PRIu64,
                     n->id, rd.msgs[i].from, rd.msgs[i].to);
        else
            sim_net_send(w, n->slot, &rd.msgs[i], n->barrier);
    }
    if (rd.entries_count) {
        uint64_t id = sim_disk_write_entries(w, n, rd.entries, rd.entries_count);
        if (id != 0)
            write_id = id;
    }
    if (rd.hs_changed)
        sim_check_commit(w, n, rd.hs.commit);
    apply_committed(w, n, &rd);
    for (size_t i = 0; i < rd.reads_count; i++)
        sim_clients_on_read_state(w, n->slot, &rd.reads[i]);
    raft_advance(n->r, &rd);
    if (write_id != 0)
        sim_node_fsync_schedule(w, n, write_id);
    return rd.has_snapshot;
}

void sim_node_ready(sim_world *w, uint32_t slot) {
    sim_node *n = &w->nodes[slot];
    for (uint32_t loops = 0; n->up && !w->failed && raft_has_ready(n->r); loops++) {
        assert(loops < READY_LOOPS_MAX);
        bool installed = ready_once(w, n);
        if (w->failed)
            return;
        if (installed || w->o.control == SIM_CTRL_UNSAFE_DISK)
            sim_node_report_persisted(w, n);
        if (installed)
            sim_net_flush_outbox(w, slot);
        sim_clients_on_applied(w, slot);
        maybe_snapshot(w, n);
    }
}
