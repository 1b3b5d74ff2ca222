/*
 * raft_log.c: the in-memory log (entries since the last compaction) and the
 * refcounted blocks that hold entry payloads.
 */
#include <stdlib.h>
#include <string.h>

#include "raft_int.h"

/* A block for bytes of payload, with no reference yet. Ownership: the
 * caller's until entries reference it (raft_log_push); freed by the last
 * raft_blk_unref(). NULL on ENOMEM. */
raft_blk *raft_blk_new(size_t bytes) {
    raft_blk *b = malloc(sizeof(*b) + bytes);
    if (b == NULL) {
        return NULL;
    }
    b->refs = 0;
    return b;
}

void *raft_blk_data(raft_blk *b) {
    assert(b != NULL);
    return (void *)(b + 1);
}

void raft_blk_unref(raft_blk *b) {
    if (b == NULL) {
        return;
    }
    assert(b->refs > 0);
    if (--b->refs == 0) {
        free(b);
    }
}

uint64_t raft_log_first(const raft_log *l) {
    return l->snap_index + 1;
}

uint64_t raft_log_last(const raft_log *l) {
    return l->snap_index + l->count;
}

raft_entry *raft_log_at(const raft_log *l, uint64_t index) {
    assert(index > l->snap_index && index <= raft_log_last(l));
    raft_entry *e = &l->ents[l->head + (index - l->snap_index - 1)];
    assert(e->index == index);
    return e;
}

uint64_t raft_log_term_at(const raft_log *l, uint64_t index) {
    if (index == l->snap_index) {
        return l->snap_term;
    }
    if (index < l->snap_index || index > raft_log_last(l)) {
        return 0;
    }
    return raft_log_at(l, index)->term;
}

uint64_t raft_log_last_term(const raft_log *l) {
    return raft_log_term_at(l, raft_log_last(l));
}

/* Raft paper §5.4.1: a log ending in (index, term) is at least as up to date
 * as ours when its last term is larger, or equal with an index >= ours. */
bool raft_log_up_to_date(const raft_log *l, uint64_t index, uint64_t term) {
    uint64_t lt = raft_log_last_term(l);
    return term > lt || (term == lt && index >= raft_log_last(l));
}

/* Makes room for n more entries so later pushes cannot fail. When the array
 * is full it slides the live part to the front if that leaves it at most
 * half full, else it doubles: amortized O(1) per entry. */
int raft_log_reserve(raft_log *l, size_t n) {
    if (l->head + l->count + n <= l->cap) {
        return 0;
    }
    size_t need = l->count + n;
    if (need * 2 > l->cap) {
        size_t cap = l->cap ? l->cap : 64;
        while (need * 2 > cap) {
            cap *= 2;
        }
        raft_entry *ents = realloc(l->ents, cap * sizeof(*ents));
        if (ents == NULL) {
            return KV_ENOMEM;
        }
        l->ents = ents;
        l->cap = cap;
    }
    memmove(l->ents, l->ents + l->head, l->count * sizeof(*l->ents));
    l->head = 0;
    assert(l->head + l->count + n <= l->cap);
    return 0;
}

/* Appends a copy of *e at last+1 (room reserved) and takes a reference on its
 * block. A CONF entry takes effect at once (thesis §4.1). */
void raft_log_push(raft *r, const raft_entry *e) {
    raft_log *l = &r->log;
    assert(e->index == raft_log_last(l) + 1);
    assert(l->head + l->count < l->cap);
    assert(e->term >= raft_log_last_term(l));
    l->ents[l->head + l->count] = *e;
    l->count++;
    if (e->blk_ != NULL) {
        ((raft_blk *)e->blk_)->refs++;
    }
    if (e->type == RAFT_ENTRY_CONF) {
        raft_conf_op op;
        uint64_t node;
        int rc = raft_conf_decode(e->data, e->len, &op, &node, &r->conf);
        assert(rc == 0); /* validated before it got here */
        (void)rc;
        r->conf_index = e->index;
        raft_conf_changed(r);
    }
}

/* Scans back from index for the CONF entry in effect there. */
static uint64_t log_conf_index_at(const raft_log *l, uint64_t index) {
    if (index > raft_log_last(l)) {
        index = raft_log_last(l);
    }
    for (uint64_t i = index; i > l->snap_index; i--) {
        if (raft_log_at(l, i)->type == RAFT_ENTRY_CONF) {
            return i;
        }
    }
    return 0;
}

/* The membership in effect at index (the latest CONF entry <= index, else
 * the one at the compaction point). */
int raft_log_conf_at(const raft *r, uint64_t index, raft_membership *out) {
    assert(index >= r->log.snap_index);
    if (r->conf_index <= index) {
        *out = r->conf; /* the latest is in effect there: no scan */
        return 0;
    }
    uint64_t ci = log_conf_index_at(&r->log, index);
    if (ci == 0) {
        *out = r->base_conf;
        return 0;
    }
    const raft_entry *e = raft_log_at(&r->log, ci);
    raft_conf_op op;
    uint64_t node;
    return raft_conf_decode(e->data, e->len, &op, &node, out);
}

/* Drops entries >= from (a follower's conflicting suffix, Raft paper §5.3).
 * Never a committed entry. A dropped CONF entry takes the previous
 * membership back into effect (thesis §4.1). */
void raft_log_truncate(raft *r, uint64_t from) {
    raft_log *l = &r->log;
    assert(from > r->commit);
    assert(from > l->snap_index);
    uint64_t last = raft_log_last(l);
    for (uint64_t i = from; i <= last; i++) {
        raft_blk_unref(raft_log_at(l, i)->blk_);
    }
    if (from <= last) {
        l->count -= (size_t)(last - from + 1);
    }
    if (l->stable >= from) {
        l->stable = from - 1;
    }
    if (l->handed >= from) {
        l->handed = from - 1;
    }
    if (r->conf_index >= from) {
        r->conf_index = log_conf_index_at(l, from - 1);
        r->conf = r->base_conf;
        if (r->conf_index != 0) {
            const raft_entry *e = raft_log_at(l, r->conf_index);
            raft_conf_op op;
            uint64_t node;
            int rc = raft_conf_decode(e->data, e->len, &op, &node, &r->conf);
            assert(rc == 0);
            (void)rc;
        }
        raft_conf_changed(r);
    }
}

/* Drops entries <= upto, which a snapshot covers. */
void raft_log_compact(raft *r, uint64_t upto) {
    raft_log *l = &r->log;
    assert(upto <= r->applied && upto <= raft_log_last(l));
    if (upto <= l->snap_index) {
        return;
    }
    raft_membership c;
    int rc = raft_log_conf_at(r, upto, &c);
    assert(rc == 0);
    (void)rc;
    uint64_t term = raft_log_term_at(l, upto);
    size_t n = (size_t)(upto - l->snap_index);
    for (size_t i = 0; i < n; i++) {
        raft_blk_unref(l->ents[l->head + i].blk_);
    }
    l->head += n;
    l->count -= n;
    l->snap_index = upto;
    l->snap_term = term;
    r->base_conf = c;
    if (r->conf_index <= upto) {
        r->conf_index = 0;
    }
    if (l->count == 0) {
        l->head = 0;
    }
}

/* Empties the log: the next entry is index+1 (a snapshot was installed). */
void raft_log_reset(raft *r, uint64_t index, uint64_t term) {
    raft_log *l = &r->log;
    for (size_t i = 0; i < l->count; i++) {
        raft_blk_unref(l->ents[l->head + i].blk_);
    }
    l->head = 0;
    l->count = 0;
    l->snap_index = index;
    l->snap_term = term;
    l->stable = index;
    l->handed = index;
    r->conf_index = 0;
}

void raft_log_free(raft_log *l) {
    for (size_t i = 0; i < l->count; i++) {
        raft_blk_unref(l->ents[l->head + i].blk_);
    }
    free(l->ents);
    memset(l, 0, sizeof(*l));
}

/* Appends copies of n contiguous entries starting at last+1, their payloads
 * in one new block. CONF payloads must be valid (checked by the caller).
 * Returns 0 or KV_ENOMEM (nothing appended). */
int raft_log_copy_in(raft *r, const raft_entry *ents, size_t n) {
    assert(n == 0 || ents[0].index == raft_log_last(&r->log) + 1);
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        bytes += ents[i].len;
    }
    if (raft_log_reserve(&r->log, n) != 0) {
        return KV_ENOMEM;
    }
    raft_blk *b = NULL;
    if (bytes > 0) {
        b = raft_blk_new(bytes);
        if (b == NULL) {
            return KV_ENOMEM;
        }
    }
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        raft_entry e = ents[i];
        e.reserved_ = 0;
        e.blk_ = NULL;
        if (e.len > 0) {
            e.data = (char *)raft_blk_data(b) + off;
            memcpy(e.data, ents[i].data, e.len);
            e.blk_ = b;
            off += e.len;
        } else {
            e.data = NULL;
        }
        raft_log_push(r, &e);
    }
    assert(off == bytes);
    return 0;
}
