/*
 * The simulator's half of node_io (src/node/node.h): src/node runs the
 * Ready loop, and each step lands here, on the node's fake disk, the fake
 * network and the in-memory state machine, with the invariant checks.
 *
 *   ready_begin  traces the Ready and checks its commit index (sim_check);
 *   hs_save      term and vote durable on return (sim_disk_save_hs);
 *   snap_install the chunks received become the state, durably;
 *   snap_chunk   one chunk into the volatile receive buffer (the filler
 *                checked, not kept);
 *   send         onto the network (sim_net), which copies;
 *   log_append   volatile until the fsync event, which calls
 *                node_log_durable (sim_io_fsync_done);
 *   apply        the state machine, checked entry by entry; the results
 *                wait in n->applied_batch for the answers;
 *   write_done,
 *   read_done    to the client named by the tag (sim_client.c).
 *
 * Under --control unsafe-disk the disk lies: log_append reports the entries
 * durable at once, and hs_save leaves term and vote volatile; a crash loses
 * both. The checker must catch that.
 *
 * A callback that finds an invariant broken records it (sim_fail) and
 * returns SIM_IO_STOP, which stops node_run: the run is over.
 */
#include "sim.h"

#include "kv/errors.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define SIM_IO_STOP 1          /* any non-zero stops node_run; never a KV_E* code */
#define READY_LOOPS_MAX 10000u /* Readys in one sim_node_ready: raft must drain */

static int io_status(const sim_node *n) {
    return n->w->failed ? SIM_IO_STOP : 0;
}

static bool unsafe_disk(const sim_node *n) {
    return n->w->o.control == SIM_CTRL_UNSAFE_DISK;
}

static void fsync_schedule(sim_world *w, sim_node *n, uint64_t write_id) {
    assert(write_id > n->disk.durable_id && write_id < n->disk.write_id_next);
    uint64_t t = w->now + sim_rand_range(&w->rnd, 1, n->fsync_max);
    if (t <= n->disk.fsync_time_last)
        t = n->disk.fsync_time_last + 1; /* syncs complete in order */
    n->disk.fsync_time_last = t;
    sim_queue_push(&w->q, t, SIM_EV_FSYNC, sim_node_ev_a(n), write_id, NULL);
}

/* node_log_durable for the last entry of l (the durable log, or under the
 * control the volatile one), once per (index, term). */
static void report_durable(sim_node *n, const sim_log *l) {
    if (l->count == 0)
        return;
    const sim_ent *e = &l->e[l->count - 1];
    if (e->index == n->persisted_reported && e->term == n->persisted_term)
        return;
    n->persisted_reported = e->index;
    n->persisted_term = e->term;
    SIM_TRACE(n->w, "persist n%" PRIu64 " idx=%" PRIu64 " term=%" PRIu64, n->id, e->index, e->term);
    node_log_durable(n->nd, e->index, e->term);
}

void sim_io_fsync_done(sim_node *n, uint64_t write_id) {
    assert(n->up && n->nd != NULL);
    if (write_id <= n->disk.durable_id)
        return; /* an install synced everything already */
    sim_disk_sync_to(&n->disk, write_id);
    SIM_TRACE(n->w, "fsync n%" PRIu64 " upto=%" PRIu64, n->id, write_id);
    if (!unsafe_disk(n))
        report_durable(n, &n->disk.dur.log);
}

/* ---- ready_begin, hard state ------------------------------------------------ */

static void io_ready_begin(void *ctx, const struct raft_ready *rd) {
    sim_node *n = ctx;
    sim_world *w = n->w;
    n->readys++;
    assert(n->readys < READY_LOOPS_MAX); /* else raft_has_ready() never drains */
    if (rd->hs_changed)
        SIM_TRACE(w, "hs n%" PRIu64 " term=%" PRIu64 " vote=%" PRIu64 " commit=%" PRIu64 "%s",
                  n->id, rd->hs.term, rd->hs.vote, rd->hs.commit,
                  rd->hs_must_sync ? " must_sync" : "");
    if (rd->entries_count)
        SIM_TRACE(w, "write n%" PRIu64 " entries [%" PRIu64 ",%" PRIu64 "] term=%" PRIu64, n->id,
                  rd->entries[0].index, rd->entries[rd->entries_count - 1].index,
                  rd->entries[rd->entries_count - 1].term);
    /* raft.h step 1: the commit never covers entries not reported durable,
     * so the disk holds them already; after an install it is the snapshot's. */
    n->commit_after_install = rd->hs_changed && rd->has_snapshot;
    n->commit_to_check = rd->hs.commit;
    if (rd->hs_changed && !rd->has_snapshot)
        sim_check_commit(w, n, rd->hs.commit);
}

static int io_hs_save(void *ctx, const raft_hard_state *hs) {
    sim_node *n = ctx;
    SIM_TRACE(n->w, "hs-save n%" PRIu64 " term=%" PRIu64 " vote=%" PRIu64 "%s", n->id, hs->term,
              hs->vote, unsafe_disk(n) ? " volatile" : "");
    if (unsafe_disk(n)) {
        fsync_schedule(n->w, n, sim_disk_write_hs(&n->disk, hs)); /* the control's lie */
        return io_status(n);
    }
    sim_disk_save_hs(&n->disk, hs);
    assert(n->disk.dur.hs.term == hs->term && n->disk.dur.hs.vote == hs->vote);
    return io_status(n);
}

/* ---- snapshots received ------------------------------------------------------ */

/* Step 2: the chunks received become the node's state, durably. */
static int io_snap_install(void *ctx, const raft_snapshot_meta *meta) {
    sim_node *n = ctx;
    sim_world *w = n->w;
    sim_disk *d = &n->disk;
    if (d->in_index != meta->index || d->in_term != meta->term ||
        d->in_total != SIM_SM_BYTES + n->snap_pad || d->in_got != d->in_total) {
        sim_fail(w, "snapshot-transfer",
                 "n%" PRIu64 " told to install (%" PRIu64 ",%" PRIu64 ") but holds %" PRIu64
                 "/%" PRIu64 " bytes of (%" PRIu64 ",%" PRIu64 ")",
                 n->id, meta->index, meta->term, d->in_got, d->in_total, d->in_index, d->in_term);
        return SIM_IO_STOP;
    }
    sim_snap s = {.meta = *meta};
    memcpy(s.data, d->in_data, SIM_SM_BYTES);
    if (sim_sm_decode(s.data, SIM_SM_BYTES, &n->sm) != 0) {
        sim_fail(w, "snapshot-transfer", "n%" PRIu64 " received a corrupt snapshot", n->id);
        return SIM_IO_STOP;
    }
    sim_check_snapshot(w, n, &s, "installed");
    /* Installing empties the log: entries after the snapshot must not be
     * committed ones (Raft §7 keeps a matching suffix). */
    if (sim_log_last(&d->vol.log) > meta->index)
        sim_check_truncate(w, n, meta->index + 1, "installs a snapshot below, discarding");
    if (w->failed)
        return SIM_IO_STOP;
    sim_disk_install(d, &s);
    n->applied = meta->index;
    n->applied_term = meta->term;
    n->applied_conf = meta->membership;
    sim_node_keep_snap(n, &s);
    w->st.snapshots++;
    SIM_TRACE(w, "install n%" PRIu64 " snapshot idx=%" PRIu64 " term=%" PRIu64, n->id, meta->index,
              meta->term);
    if (n->commit_after_install)
        sim_check_commit(w, n, n->commit_to_check);
    n->commit_after_install = false;
    return io_status(n);
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
static int io_snap_chunk(void *ctx, const raft_snapshot_chunk *c) {
    sim_node *n = ctx;
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
        sim_fail(n->w, "snapshot-transfer",
                 "n%" PRIu64 " chunk (%" PRIu64 ",%" PRIu64 ") offset %" PRIu64
                 " len %zu total %" PRIu64 " does not continue (%" PRIu64 ",%" PRIu64
                 ") at %" PRIu64,
                 n->id, c->index, c->term, c->offset, c->len, c->total_size, d->in_index,
                 d->in_term, d->in_got);
        return SIM_IO_STOP;
    }
    const uint8_t *p = c->data;
    size_t head = c->offset < SIM_SM_BYTES ? (size_t)(SIM_SM_BYTES - c->offset) : 0;
    if (head > c->len)
        head = c->len;
    memcpy(d->in_data + c->offset, p, head);
    if (!pad_ok(c->index, c->offset + head, p + head, c->len - head)) {
        sim_fail(n->w, "snapshot-transfer", "n%" PRIu64 " chunk at %" PRIu64 " has wrong bytes",
                 n->id, c->offset);
        return SIM_IO_STOP;
    }
    d->in_got += c->len;
    SIM_TRACE(n->w, "chunk n%" PRIu64 " snapshot idx=%" PRIu64 " off=%" PRIu64 " len=%zu%s", n->id,
              c->index, c->offset, c->len, c->last ? " last" : "");
    return io_status(n);
}

/* ---- messages and log writes ------------------------------------------------- */

static int io_send(void *ctx, const raft_msg *msgs, size_t count) {
    sim_node *n = ctx;
    for (size_t i = 0; i < count; i++) {
        if (msgs[i].to == n->id || msgs[i].from != n->id) {
            sim_fail(n->w, "message", "n%" PRIu64 " sends a message from n%" PRIu64 " to n%" PRIu64,
                     n->id, msgs[i].from, msgs[i].to);
            return SIM_IO_STOP;
        }
        sim_net_send(n->w, n->slot, &msgs[i]);
    }
    return io_status(n);
}

/* Step 5: volatile until the fsync event (sim_io_fsync_done). */
static int io_log_append(void *ctx, const raft_entry *e, size_t count) {
    sim_node *n = ctx;
    assert(count > 0);
    uint64_t id = sim_disk_write_entries(n->w, n, e, count);
    if (id == 0)
        return SIM_IO_STOP; /* sim_disk_write_entries recorded why */
    assert(sim_log_last(&n->disk.vol.log) == e[count - 1].index);
    fsync_schedule(n->w, n, id);
    if (unsafe_disk(n))
        report_durable(n, &n->disk.vol.log); /* the control's lie */
    return io_status(n);
}

/* ---- apply and the answers ---------------------------------------------------- */

/* Returns true when a client command was applied (*cp, *rp filled). */
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

static void batch_reserve(sim_node *n, size_t count) {
    if (count <= n->applied_batch_cap)
        return;
    size_t cap = n->applied_batch_cap ? n->applied_batch_cap : 64;
    while (cap < count)
        cap *= 2;
    sim_applied *b = realloc(n->applied_batch, cap * sizeof(*b));
    assert(b != NULL);
    n->applied_batch = b;
    n->applied_batch_cap = cap;
}

/* Step 6: each entry applied and checked; what a write's answer needs is
 * kept in n->applied_batch until apply_end. */
static int io_apply(void *ctx, const raft_entry *e, size_t count, const raft_membership *m) {
    sim_node *n = ctx;
    sim_world *w = n->w;
    assert(count > 0 && n->applied_batch_count == 0);
    batch_reserve(n, count);
    for (size_t i = 0; i < count && !w->failed; i++) {
        sim_applied *a = &n->applied_batch[i];
        memset(a, 0, sizeof(*a));
        a->index = e[i].index;
        a->term = e[i].term;
        if (e[i].type == RAFT_ENTRY_NORMAL)
            a->cmd = apply_normal(w, n, &e[i], &a->c, &a->r);
        else if (e[i].type == RAFT_ENTRY_CONF)
            apply_conf(w, n, &e[i]);
        else
            SIM_TRACE(w, "apply n%" PRIu64 " idx=%" PRIu64 " term=%" PRIu64 " noop", n->id,
                      e[i].index, e[i].term);
        uint8_t buf[SIM_SM_BYTES];
        sim_sm_encode(&n->sm, buf);
        sim_check_apply(w, n, &e[i], sim_sm_digest(buf));
        n->applied = e[i].index;
        n->applied_term = e[i].term;
    }
    if (m != NULL)
        n->applied_conf = *m;
    n->applied_batch_count = count;
    return io_status(n);
}

static void io_apply_end(void *ctx) {
    sim_node *n = ctx;
    assert(n->applied_batch_count > 0);
    n->applied_batch_count = 0;
}

static void io_write_done(void *ctx, const node_write *wr, size_t pos, int code) {
    sim_node *n = ctx;
    sim_world *w = n->w;
    const sim_client *c = wr->tag.owner;
    if (code != 0) {
        SIM_TRACE(w, "answer n%" PRIu64 " c%u#%" PRIu64 " idx=%" PRIu64 ": %s", n->id, c->id,
                  wr->tag.id, wr->index, kv_errword(code));
        uint64_t hint = code == KV_ENOTLEADER ? node_leader(n->nd) : 0;
        sim_client_write_done(w, n->slot, &wr->tag, NULL, code, hint);
        return;
    }
    /* src/node's rules, checked from outside: the answer is for the entry
     * applied at its index, in the term it was proposed in. */
    assert(pos < n->applied_batch_count);
    const sim_applied *a = &n->applied_batch[pos];
    if (a->index != wr->index || a->term != wr->term || wr->index > n->applied || !a->cmd ||
        a->c.client != c->id || a->c.seq != wr->tag.id) {
        sim_fail(w, "write-answer",
                 "n%" PRIu64 " answers c%u#%" PRIu64 " (%" PRIu64 ",%" PRIu64
                 ") with entry (%" PRIu64 ",%" PRIu64 ") (c%u#%" PRIu64 "), applied %" PRIu64,
                 n->id, c->id, wr->tag.id, wr->index, wr->term, a->index, a->term, a->c.client,
                 a->c.seq, n->applied);
        return;
    }
    sim_check_ack(w, wr->index, wr->term);
    sim_client_write_done(w, n->slot, &wr->tag, &a->r, 0, 0);
}

static void io_read_done(void *ctx, const node_tag *t, uint64_t read_index, int code) {
    sim_node *n = ctx;
    if (code == 0 && read_index > n->applied) {
        sim_fail(n->w, "read-answer",
                 "n%" PRIu64 " serves a read at index %" PRIu64 " with only %" PRIu64 " applied",
                 n->id, read_index, n->applied);
        return;
    }
    uint64_t hint = code == KV_ENOTLEADER ? node_leader(n->nd) : 0;
    sim_client_read_done(n->w, n->slot, t, code, hint);
}

static uint64_t io_now_ns(void *ctx) {
    const sim_node *n = ctx;
    return n->w->now;
}

void sim_io_init(sim_node *n, node_io *io) {
    memset(io, 0, sizeof(*io));
    io->ctx = n;
    io->hs_save = io_hs_save;
    io->snap_install = io_snap_install;
    io->snap_chunk = io_snap_chunk;
    io->send = io_send;
    io->log_append = io_log_append;
    io->apply = io_apply;
    io->write_done = io_write_done;
    io->apply_end = io_apply_end;
    io->read_done = io_read_done;
    io->ready_begin = io_ready_begin;
    io->now_ns = io_now_ns;
}
