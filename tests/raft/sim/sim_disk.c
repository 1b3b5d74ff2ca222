/*
 * The fake disk of one node. Two copies of the store: `vol` is what the node
 * has written (the page cache), `dur` what survived the last completed fsync
 * (the platter). Writes go to vol at once and join a list of pending
 * operations; sim_disk_sync_to() replays them onto dur in order when the
 * simulated fsync completes; a crash throws the list away and vol becomes a
 * copy of dur. Snapshots (own or installed) and the hard state (term, vote,
 * commit: its own small file in kvd) are written synchronously; the hard
 * state goes through the pending list only under --control unsafe-disk.
 */
#include "sim.h"

#include "common/checksum.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

uint64_t sim_ent_hash(uint64_t term, uint32_t type, const void *data, size_t len) {
    uint8_t hdr[12];
    kv_put_u64(hdr, term);
    kv_put_u32(hdr + 8, type);
    uint64_t h = kv_xxh3(hdr, sizeof(hdr));
    return h ^ (kv_xxh3(data, len) * 0x9e3779b97f4a7c15ull);
}

static uint64_t chain_next(uint64_t prev, const sim_ent *e) {
    uint8_t b[32];
    kv_put_u64(b, prev);
    kv_put_u64(b + 8, e->index);
    kv_put_u64(b + 16, e->term);
    kv_put_u64(b + 24, e->hash);
    uint64_t c = kv_xxh3(b, sizeof(b));
    return c ? c : 1; /* 0 means "unknown" */
}

/* ---- logs ---------------------------------------------------------------- */

static void log_init(sim_log *l) {
    memset(l, 0, sizeof(*l));
    l->first = 1;
}

static void log_free(sim_log *l) {
    free(l->e);
    memset(l, 0, sizeof(*l));
}

uint64_t sim_log_last(const sim_log *l) {
    return l->first + l->count - 1;
}

const sim_ent *sim_log_get(const sim_log *l, uint64_t index) {
    if (index < l->first || index > sim_log_last(l))
        return NULL;
    return &l->e[index - l->first];
}

static void log_copy(sim_log *dst, const sim_log *src) {
    log_free(dst);
    *dst = *src;
    dst->cap = src->count;
    dst->e = NULL;
    if (src->count) {
        dst->e = malloc(src->count * sizeof(sim_ent));
        assert(dst->e != NULL);
        memcpy(dst->e, src->e, src->count * sizeof(sim_ent));
    }
}

static void log_truncate(sim_log *l, uint64_t from) {
    assert(from >= l->first && from <= sim_log_last(l) + 1);
    l->count = from - l->first;
}

static void log_append(sim_log *l, const sim_ent *e) {
    assert(e->index == sim_log_last(l) + 1);
    if (l->count == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        sim_ent *ne = realloc(l->e, cap * sizeof(*ne));
        assert(ne != NULL);
        l->e = ne;
        l->cap = cap;
    }
    l->e[l->count++] = *e;
}

/* Drops entries <= index; the log then starts at index + 1. */
static void log_drop_prefix(sim_log *l, uint64_t index) {
    if (index < l->first)
        return;
    if (index >= sim_log_last(l)) {
        l->count = 0;
    } else {
        size_t n = index + 1 - l->first;
        memmove(l->e, l->e + n, (l->count - n) * sizeof(sim_ent));
        l->count -= n;
    }
    l->first = index + 1;
}

/* Writes ents onto l as a log write does: truncate the conflicting suffix,
 * skip what a snapshot already covers, append the rest. */
static void log_write(sim_log *l, const sim_ent *ents, size_t count) {
    for (size_t i = 0; i < count; i++) {
        const sim_ent *e = &ents[i];
        if (e->index < l->first)
            continue;
        if (e->index <= sim_log_last(l))
            log_truncate(l, e->index);
        log_append(l, e);
    }
}

/* ---- the disk ------------------------------------------------------------ */

void sim_disk_init(sim_disk *d) {
    memset(d, 0, sizeof(*d));
    log_init(&d->dur.log);
    log_init(&d->vol.log);
    d->write_id_next = 1;
}

static void ops_clear(sim_disk *d) {
    for (size_t i = 0; i < d->ops_count; i++)
        free(d->ops[i].ents);
    d->ops_count = 0;
}

void sim_disk_free(sim_disk *d) {
    ops_clear(d);
    free(d->ops);
    log_free(&d->dur.log);
    log_free(&d->vol.log);
    memset(d, 0, sizeof(*d));
}

static sim_dop *op_new(sim_disk *d, enum sim_op_kind kind) {
    if (d->ops_count == d->ops_cap) {
        size_t cap = d->ops_cap ? 2 * d->ops_cap : 16;
        sim_dop *ops = realloc(d->ops, cap * sizeof(*ops));
        assert(ops != NULL);
        d->ops = ops;
        d->ops_cap = cap;
    }
    sim_dop *op = &d->ops[d->ops_count++];
    memset(op, 0, sizeof(*op));
    op->id = d->write_id_next++;
    op->kind = kind;
    return op;
}

void sim_disk_save_hs(sim_disk *d, const raft_hard_state *hs) {
    d->vol.hs = *hs;
    d->dur.hs = *hs;
}

uint64_t sim_disk_write_hs(sim_disk *d, const raft_hard_state *hs) {
    sim_dop *op = op_new(d, SIM_DOP_HS);
    op->hs = *hs;
    d->vol.hs = *hs;
    return op->id;
}

/* The chain value before entry `index` in n's volatile log. */
static uint64_t chain_before(sim_world *w, sim_node *n, uint64_t index) {
    const sim_store *v = &n->disk.vol;
    if (index == 1)
        return 0;
    const sim_ent *p = sim_log_get(&v->log, index - 1);
    if (p != NULL)
        return p->chain;
    if (v->has_snap && v->snap.meta.index == index - 1) {
        uint64_t c = sim_check_chain_of(w, v->snap.meta.index, v->snap.meta.term);
        if (c == 0)
            sim_fail(w, "log-matching", "n%lu snapshot (%lu,%lu) is no entry ever written",
                     (unsigned long)n->id, (unsigned long)v->snap.meta.index,
                     (unsigned long)v->snap.meta.term);
        return c;
    }
    return 0;
}

uint64_t sim_disk_write_entries(sim_world *w, sim_node *n, const raft_entry *ents, size_t count) {
    sim_disk *d = &n->disk;
    if (count == 0)
        return 0;
    uint64_t e0 = ents[0].index, last = sim_log_last(&d->vol.log);
    if (e0 < d->vol.log.first || e0 > last + 1) {
        sim_fail(w, "log-contiguity", "n%lu Ready entries start at %lu, log is [%lu,%lu]",
                 (unsigned long)n->id, (unsigned long)e0, (unsigned long)d->vol.log.first,
                 (unsigned long)last);
        return 0;
    }
    if (e0 <= last)
        sim_check_truncate(w, n, e0, "overwrites");
    sim_dop *op = op_new(d, SIM_DOP_ENTRIES);
    op->ents = malloc(count * sizeof(sim_ent));
    assert(op->ents != NULL);
    op->count = count;
    uint64_t chain = chain_before(w, n, e0);
    for (size_t i = 0; i < count; i++) {
        const raft_entry *re = &ents[i];
        assert(re->index == e0 + i && re->len <= SIM_ENT_BYTES_MAX);
        sim_ent *e = &op->ents[i];
        memset(e, 0, offsetof(sim_ent, data));
        e->index = re->index;
        e->term = re->term;
        e->type = re->type;
        e->len = (uint32_t)re->len;
        if (re->len)
            memcpy(e->data, re->data, re->len);
        e->hash = sim_ent_hash(re->term, re->type, re->data, re->len);
        e->chain = chain = chain ? chain_next(chain, e) : (e->index == 1 ? chain_next(0, e) : 0);
        sim_check_entry_written(w, n, e);
    }
    log_write(&d->vol.log, op->ents, count);
    return op->id;
}

void sim_disk_sync_to(sim_disk *d, uint64_t id) {
    size_t done = 0;
    while (done < d->ops_count && d->ops[done].id <= id) {
        sim_dop *op = &d->ops[done++];
        if (op->kind == SIM_DOP_HS)
            d->dur.hs = op->hs;
        else
            log_write(&d->dur.log, op->ents, op->count);
        free(op->ents);
        op->ents = NULL;
    }
    if (done > 0) /* d->ops is NULL until the first write */
        memmove(d->ops, d->ops + done, (d->ops_count - done) * sizeof(sim_dop));
    d->ops_count -= done;
    if (id > d->durable_id)
        d->durable_id = id;
    assert(d->durable_id < d->write_id_next);
}

void sim_disk_crash(sim_disk *d) {
    ops_clear(d);
    d->vol.hs = d->dur.hs;
    d->vol.has_snap = d->dur.has_snap;
    d->vol.snap = d->dur.snap;
    log_copy(&d->vol.log, &d->dur.log);
    d->durable_id = d->write_id_next - 1; /* nothing pending any more */
    d->in_index = d->in_term = d->in_total = d->in_got = 0;
}

static void store_set_snap(sim_store *s, const sim_snap *snap, bool empty_log) {
    s->has_snap = true;
    s->snap = *snap;
    if (empty_log) {
        s->log.count = 0;
        s->log.first = snap->meta.index + 1;
    } else {
        log_drop_prefix(&s->log, snap->meta.index);
    }
    assert(s->log.first == snap->meta.index + 1);
}

void sim_disk_install(sim_disk *d, const sim_snap *s) {
    sim_disk_sync_to(d, d->write_id_next - 1);
    store_set_snap(&d->dur, s, true);
    store_set_snap(&d->vol, s, true);
    d->in_index = d->in_term = d->in_total = d->in_got = 0;
}

void sim_disk_snapshot(sim_disk *d, const sim_snap *s) {
    assert(!d->vol.has_snap || s->meta.index > d->vol.snap.meta.index);
    store_set_snap(&d->dur, s, false);
    store_set_snap(&d->vol, s, false);
}
