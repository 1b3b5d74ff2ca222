/* raft_msg <-> kv.RaftMessage: see net.h. Field for field, no copies: the
 * protobuf side points into the raft_msg and back. */
#include "net/net.h"

#include "kv/errors.h"
#include "kv/limits.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

void raftwire_to_pb(const raft_msg *m, Kv__RaftMessage *pb, Kv__RaftEntry *ents,
                    Kv__RaftEntry **ent_ptrs) {
    assert(m != NULL && pb != NULL);
    assert(m->entries_count == 0 || (m->entries != NULL && ents != NULL && ent_ptrs != NULL));
    assert(m->snap.membership.voters_count <= KV_NODES_MAX);
    assert(m->snap.membership.learners_count <= KV_NODES_MAX);
    kv__raft_message__init(pb);
    pb->type = m->type;
    pb->from = m->from;
    pb->to = m->to;
    pb->term = m->term;
    pb->log_term = m->log_term;
    pb->index = m->index;
    pb->commit = m->commit;
    for (size_t i = 0; i < m->entries_count; i++) {
        const raft_entry *e = &m->entries[i];
        kv__raft_entry__init(&ents[i]);
        ents[i].index = e->index;
        ents[i].term = e->term;
        ents[i].type = e->type;
        ents[i].data.data = e->data;
        ents[i].data.len = e->data != NULL ? e->len : 0;
        ent_ptrs[i] = &ents[i];
    }
    pb->n_entries = m->entries_count;
    pb->entries = m->entries_count > 0 ? ent_ptrs : NULL;
    pb->reject = m->reject;
    pb->transfer = m->transfer;
    pb->reject_hint = m->reject_hint;
    pb->hint_term = m->hint_term;
    pb->context = m->context;
    pb->snap_index = m->snap.index;
    pb->snap_term = m->snap.term;
    /* protobuf-c's fields are not const; packing only reads them. */
    pb->n_snap_voters = m->snap.membership.voters_count;
    pb->snap_voters = (uint64_t *)m->snap.membership.voters;
    pb->n_snap_learners = m->snap.membership.learners_count;
    pb->snap_learners = (uint64_t *)m->snap.membership.learners;
    pb->snap_offset = m->snap_offset;
    pb->snap_total = m->snap_total;
    pb->snap_data.data = m->snap_data;
    pb->snap_data.len = m->snap_data != NULL ? m->snap_len : 0;
    pb->snap_last = m->snap_last;
}

/* One entry from the wire; KV_EPROTO when its type is unknown or a CONF
 * entry carries no data (raft would fail to decode it). */
static int entry_from_pb(const Kv__RaftEntry *pe, raft_entry *e) {
    if (pe == NULL || pe->type > RAFT_ENTRY_CONF)
        return KV_EPROTO;
    if (pe->type == RAFT_ENTRY_CONF && pe->data.len == 0)
        return KV_EPROTO;
    if (pe->data.len > KV_ENTRY_BYTES_MAX)
        return KV_EPROTO;
    memset(e, 0, sizeof *e);
    e->index = pe->index;
    e->term = pe->term;
    e->type = pe->type;
    e->data = pe->data.len > 0 ? pe->data.data : NULL;
    e->len = pe->data.len;
    return 0;
}

static int membership_from_pb(const Kv__RaftMessage *pb, raft_membership *mb) {
    if (pb->n_snap_voters > KV_NODES_MAX || pb->n_snap_learners > KV_NODES_MAX ||
        pb->n_snap_voters + pb->n_snap_learners > KV_NODES_MAX)
        return KV_EPROTO;
    mb->voters_count = (uint32_t)pb->n_snap_voters;
    mb->learners_count = (uint32_t)pb->n_snap_learners;
    if (pb->n_snap_voters > 0)
        memcpy(mb->voters, pb->snap_voters, pb->n_snap_voters * sizeof mb->voters[0]);
    if (pb->n_snap_learners > 0)
        memcpy(mb->learners, pb->snap_learners, pb->n_snap_learners * sizeof mb->learners[0]);
    return 0;
}

int raftwire_from_pb(const Kv__RaftMessage *pb, raft_msg *m) {
    assert(pb != NULL && m != NULL);
    memset(m, 0, sizeof *m);
    if (pb->type < RAFT_MSG_APPEND || pb->type > RAFT_MSG_TIMEOUT_NOW)
        return KV_EPROTO;
    if (pb->snap_data.len > KV_SNAPSHOT_CHUNK_BYTES)
        return KV_EPROTO;
    int rc = membership_from_pb(pb, &m->snap.membership);
    if (rc != 0)
        return rc;
    m->type = pb->type;
    m->from = pb->from;
    m->to = pb->to;
    m->term = pb->term;
    m->log_term = pb->log_term;
    m->index = pb->index;
    m->commit = pb->commit;
    m->reject = pb->reject;
    m->transfer = pb->transfer;
    m->reject_hint = pb->reject_hint;
    m->hint_term = pb->hint_term;
    m->context = pb->context;
    m->snap.index = pb->snap_index;
    m->snap.term = pb->snap_term;
    m->snap_offset = pb->snap_offset;
    m->snap_total = pb->snap_total;
    m->snap_data = pb->snap_data.len > 0 ? pb->snap_data.data : NULL;
    m->snap_len = pb->snap_data.len;
    m->snap_last = pb->snap_last;
    if (pb->n_entries == 0)
        return 0;
    m->entries = malloc(pb->n_entries * sizeof m->entries[0]);
    if (m->entries == NULL)
        return KV_ENOMEM;
    for (size_t i = 0; i < pb->n_entries; i++) {
        rc = entry_from_pb(pb->entries[i], &m->entries[i]);
        if (rc != 0) {
            free(m->entries);
            memset(m, 0, sizeof *m);
            return rc;
        }
    }
    m->entries_count = pb->n_entries;
    return 0;
}
