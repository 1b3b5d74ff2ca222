/*
 * raft.c: creation, the clock, elections and message dispatch.
 * Section numbers: the Raft paper (Ongaro, Ousterhout 2014) as "paper §",
 * Ongaro's thesis (2014) as "thesis §".
 */
#include <stdlib.h>
#include <string.h>

#include "raft_int.h"

void raft_config_init(raft_config *cfg, uint64_t id) {
    assert(cfg != NULL);
    memset(cfg, 0, sizeof(*cfg));
    cfg->id = id;
    cfg->election_ticks = 10;
    cfg->heartbeat_ticks = 1;
    cfg->seed = id;
    cfg->pre_vote = true;
    cfg->check_quorum = true;
    cfg->lease_read = false;
    cfg->max_inflight_msgs = KV_RAFT_INFLIGHT_MSGS_MAX;
    cfg->max_msg_bytes = KV_RAFT_MSG_BYTES_MAX;
    cfg->max_uncommitted_bytes = KV_RAFT_UNCOMMITTED_BYTES_MAX;
    cfg->max_entry_bytes = KV_ENTRY_BYTES_MAX;
    cfg->max_kept_bytes = KV_RAFT_LOG_KEEP_BYTES_MAX;
    cfg->max_read_pending = KV_READ_INDEX_PENDING_MAX;
}

/* splitmix64: the only source of randomness, seeded by cfg.seed. */
uint64_t raft_rand(raft *r) {
    uint64_t z = (r->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Randomized election timeout in [election_ticks, 2*election_ticks), paper
 * §5.2, so split votes resolve quickly. */
static void reset_election_timeout(raft *r) {
    r->election_elapsed = 0;
    r->election_timeout = r->cfg.election_ticks + (uint32_t)(raft_rand(r) % r->cfg.election_ticks);
    assert(r->election_timeout >= r->cfg.election_ticks);
    assert(r->election_timeout < 2 * r->cfg.election_ticks);
}

bool raft_is_voter(const raft_membership *c, uint64_t id) {
    for (uint32_t i = 0; i < c->voters_count; i++) {
        if (c->voters[i] == id) {
            return true;
        }
    }
    return false;
}

bool raft_is_member(const raft_membership *c, uint64_t id) {
    if (raft_is_voter(c, id)) {
        return true;
    }
    for (uint32_t i = 0; i < c->learners_count; i++) {
        if (c->learners[i] == id) {
            return true;
        }
    }
    return false;
}

/* What holds between any two calls (asserted at the end of each input):
 * applied <= durable-and-committed, the log window and the durable prefix
 * in order, one leader id per term. */
void raft_invariants(const raft *r) {
    const raft_log *l = &r->log;
    uint64_t last = raft_log_last(l);
    assert(l->snap_index <= r->applied && r->applied <= r->commit && r->commit <= last);
    assert(l->snap_index <= l->stable && l->stable <= l->handed && l->handed <= last);
    assert(r->role != RAFT_LEADER || r->leader == r->id);
    assert(r->role == RAFT_LEADER || r->read_out_count > 0 || r->reads_count == 0);
    assert(r->peers_count <= KV_NODES_MAX);
}

int raft_quorum(const raft *r) {
    assert(r->conf.voters_count <= KV_NODES_MAX);
    return (int)(r->conf.voters_count / 2 + 1);
}

static int config_check(const raft_config *c) {
    if (c->id == 0 || c->election_ticks == 0 || c->heartbeat_ticks == 0 ||
        c->heartbeat_ticks >= c->election_ticks || c->hs.term > RAFT_TERM_MAX) {
        return KV_EINVAL;
    }
    /* past KV_RAFT_MSG_BYTES_MAX or KV_ENTRY_BYTES_MAX an APPEND could
     * outgrow a frame (kv/limits.h) and never reach its follower */
    if (c->max_inflight_msgs == 0 || c->max_inflight_msgs > KV_RAFT_INFLIGHT_MSGS_MAX ||
        c->max_msg_bytes == 0 || c->max_msg_bytes > KV_RAFT_MSG_BYTES_MAX ||
        c->max_uncommitted_bytes == 0 || c->max_kept_bytes == 0 || c->max_entry_bytes == 0 ||
        c->max_entry_bytes > KV_ENTRY_BYTES_MAX || c->max_read_pending == 0) {
        return KV_EINVAL;
    }
    if (c->lease_read && !c->check_quorum) {
        return KV_EINVAL;
    }
    if (c->has_snapshot && !raft_conf_valid(&c->snapshot.membership)) {
        return KV_EINVAL;
    }
    uint64_t next = (c->has_snapshot ? c->snapshot.index : 0) + 1;
    uint64_t term = c->has_snapshot ? c->snapshot.term : 0;
    for (size_t i = 0; i < c->entries_count; i++) {
        const raft_entry *e = &c->entries[i];
        raft_membership m;
        raft_conf_op op;
        uint64_t node;
        if (e->index != next + i || e->term < term || e->term > c->hs.term ||
            (e->len > 0 && e->data == NULL) || e->type > RAFT_ENTRY_CONF ||
            (e->type == RAFT_ENTRY_CONF && raft_conf_decode(e->data, e->len, &op, &node, &m))) {
            return KV_EINVAL;
        }
        term = e->term;
    }
    return 0;
}

/* A founding node's first entry: the initial voters, committed in term 1. */
static int bootstrap(raft *r, const raft_membership *voters) {
    assert(raft_log_last(&r->log) == 0 && !r->has_snap);
    if (!raft_conf_valid(voters) || voters->voters_count == 0) {
        return KV_EINVAL;
    }
    uint8_t buf[RAFT_CONF_BYTES_MAX];
    size_t len = raft_conf_encode(RAFT_CONF_BOOTSTRAP, 0, voters, buf);
    raft_entry e = {.index = 1, .term = 1, .type = RAFT_ENTRY_CONF, .data = buf, .len = len};
    int rc = raft_log_copy_in(r, &e, 1);
    if (rc != 0) {
        return rc;
    }
    r->term = r->term > 1 ? r->term : 1;
    r->commit = 1;
    assert(raft_log_last(&r->log) == 1 && r->conf_index == 1);
    return 0;
}

static int restore(raft *r, const raft_config *cfg) {
    if (cfg->has_snapshot) {
        r->log.snap_index = cfg->snapshot.index;
        r->log.snap_term = cfg->snapshot.term;
        r->base_conf = cfg->snapshot.membership;
        r->has_snap = true;
        r->snap = cfg->snapshot;
    }
    r->conf = r->base_conf;
    r->term = cfg->hs.term;
    r->vote = cfg->hs.vote;
    int rc = raft_log_copy_in(r, cfg->entries, cfg->entries_count);
    if (rc != 0) {
        return rc;
    }
    /* no log yet: also a founding node that stored a vote but crashed
     * before its entry 1 was durable; the same entry 1 is made again */
    bool fresh = !cfg->has_snapshot && cfg->entries_count == 0;
    if (fresh && cfg->bootstrap.voters_count > 0) {
        return bootstrap(r, &cfg->bootstrap);
    }
    uint64_t last = raft_log_last(&r->log);
    r->log.stable = last;
    r->log.handed = last;
    if (cfg->applied > last) {
        return KV_EINVAL;
    }
    r->applied = cfg->applied > r->log.snap_index ? cfg->applied : r->log.snap_index;
    /* commit is a hint: it may have been written before the entries were. */
    r->commit = cfg->hs.commit < last ? cfg->hs.commit : last;
    if (r->commit < r->applied) {
        r->commit = r->applied;
    }
    assert(r->applied <= r->commit && r->commit <= last);
    return 0;
}

int raft_new(const raft_config *cfg, raft **out) {
    assert(cfg != NULL && out != NULL);
    *out = NULL;
    int rc = config_check(cfg);
    if (rc != 0) {
        return rc;
    }
    raft *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return KV_ENOMEM;
    }
    r->cfg = *cfg;
    r->cfg.entries = NULL;
    r->cfg.entries_count = 0;
    r->id = cfg->id;
    r->rng = cfg->seed;
    r->role = RAFT_FOLLOWER;
    rc = restore(r, cfg);
    if (rc != 0) {
        raft_free(r);
        return rc;
    }
    r->prev_hs = cfg->hs;
    r->prev_ss.role = RAFT_FOLLOWER;
    raft_conf_changed(r);
    reset_election_timeout(r);
    raft_invariants(r);
    *out = r;
    return 0;
}

void raft_free(raft *r) {
    if (r == NULL) {
        return;
    }
    raft_log_free(&r->log);
    raft_out_free(r);
    raft_reads_free(r);
    raft_rcv_free(r);
    free(r);
}

/* Paper §5.1: a node that sees a larger term, or a leader of its term,
 * becomes (or stays) a follower; a new term clears the vote. */
void raft_become_follower(raft *r, uint64_t term, uint64_t leader) {
    assert(term >= r->term);
    if (term != r->term) {
        r->term = term;
        r->vote = 0;
        r->leader_match = 0;
        r->acked = 0;
    }
    if (r->role == RAFT_LEADER) {
        raft_reads_fail_all(r);
        r->uncommitted_bytes = 0;
    }
    r->role = RAFT_FOLLOWER;
    r->leader = leader;
    r->transferee = 0;
    r->heartbeat_elapsed = 0;
    reset_election_timeout(r);
    assert(r->role == RAFT_FOLLOWER && r->term == term);
}

static void become_leader(raft *r) {
    assert(r->role == RAFT_CANDIDATE);
    if (raft_log_reserve(&r->log, 1) != 0) {
        raft_become_follower(r, r->term, 0); /* cannot lead without the no-op */
        return;
    }
    r->role = RAFT_LEADER;
    r->leader = r->id;
    r->transferee = 0;
    r->uncommitted_bytes = 0;
    r->heartbeat_elapsed = 0;
    r->election_elapsed = 0;
    r->read_seq = 0;
    r->lead_ticks = 0;
    r->lease_revoked = false;
    raft_peers_reset(r);
    /* thesis §6.4 / paper §8: a no-op of the new term, so the leader learns
     * what is committed and can serve reads once it commits. */
    raft_entry noop = {
        .index = raft_log_last(&r->log) + 1, .term = r->term, .type = RAFT_ENTRY_NOOP};
    raft_log_push(r, &noop);
    assert(raft_log_last_term(&r->log) == r->term);
    raft_send_want_all(r);
    raft_maybe_commit(r);
}

static void tally_reset(raft *r) {
    for (uint32_t i = 0; i < r->peers_count; i++) {
        r->peers[i].vote = r->peers[i].id == r->id ? 1 : 0;
    }
}

/* Counts votes; wins with a quorum of voters, loses with a quorum of refusals. */
static void tally(raft *r, uint64_t from, bool granted) {
    assert(r->role == RAFT_PRE_CANDIDATE || r->role == RAFT_CANDIDATE);
    raft_peer *p = raft_peer_get(r, from);
    if (p != NULL && p->voter && p->vote == 0) {
        p->vote = granted ? 1 : -1;
    }
    int yes = 0, no = 0;
    for (uint32_t i = 0; i < r->peers_count; i++) {
        if (r->peers[i].voter) {
            yes += r->peers[i].vote > 0;
            no += r->peers[i].vote < 0;
        }
    }
    assert(yes + no <= (int)KV_NODES_MAX);
    if (yes >= raft_quorum(r)) {
        if (r->role == RAFT_PRE_CANDIDATE) {
            raft_campaign_start(r, false, false);
        } else {
            become_leader(r);
        }
    } else if (no >= raft_quorum(r)) {
        raft_become_follower(r, r->term, 0);
    }
}

/* Paper §5.2, with PreVote (thesis §9.6): a pre-candidate asks whether it
 * could win at term+1 without changing its term; only then campaigns. */
void raft_campaign_start(raft *r, bool pre, bool transfer) {
    assert(raft_is_voter(&r->conf, r->id));
    assert(r->term < UINT64_MAX); /* callers stop at RAFT_TERM_MAX */
    uint64_t term = r->term + 1;
    if (pre) {
        r->role = RAFT_PRE_CANDIDATE;
    } else {
        r->role = RAFT_CANDIDATE;
        r->term = term;
        r->vote = r->id;
        r->leader_match = 0;
        r->acked = 0;
    }
    r->leader = 0;
    reset_election_timeout(r);
    tally_reset(r);
    for (uint32_t i = 0; i < r->peers_count; i++) {
        const raft_peer *p = &r->peers[i];
        if (!p->voter || p->id == r->id) {
            continue;
        }
        raft_msg *m = raft_out_push(r, pre ? RAFT_MSG_PREVOTE : RAFT_MSG_VOTE, p->id);
        m->term = term;
        m->index = raft_log_last(&r->log);
        m->log_term = raft_log_last_term(&r->log);
        m->transfer = transfer;
    }
    tally(r, r->id, true);
}

int raft_campaign(raft *r) {
    assert(r != NULL && !r->in_ready);
    if (!raft_is_voter(&r->conf, r->id) || r->install_pending || r->term >= RAFT_TERM_MAX) {
        return KV_EINVAL;
    }
    if (r->role != RAFT_LEADER) {
        raft_campaign_start(r, r->cfg.pre_vote, false);
    }
    return 0;
}

/* The transport's hint that this follower's leader is gone (etcd-io/raft's
 * MsgForgetLeader): its link closed, as it does at once on a kill -9 of the
 * leader's process. Without it a follower waits out its randomized election
 * timeout, and then the other followers ignore its PreVote until their own
 * lease of the dead leader runs out.
 *
 * Liveness only: the follower forgets the leader (so it grants PreVotes and
 * votes by the usual rules: CheckQuorum's lease is the only thing it gives
 * up) and, if a voter, campaigns after 1..RAFT_HINT_TICKS(r) ticks, through
 * PreVote as always. The spread keeps two followers that saw the same link
 * close from splitting the vote. A wrong hint costs no term: a follower that
 * still hears the leader keeps its lease and ignores the PreVote, and the
 * leader's next message makes this node its follower again. Ignored with
 * lease_read (a leader's lease counts on followers keeping theirs). */
#define RAFT_HINT_TICKS(r) ((r)->cfg.election_ticks / 3 > 1 ? (r)->cfg.election_ticks / 3 : 1)

void raft_leader_unreachable(raft *r, uint64_t id) {
    assert(r != NULL && !r->in_ready);
    if (r->role != RAFT_FOLLOWER || r->leader == 0 || r->leader != id || r->cfg.lease_read) {
        return;
    }
    r->leader = 0;
    uint32_t soon = r->election_elapsed + 1 + (uint32_t)(raft_rand(r) % RAFT_HINT_TICKS(r));
    if (soon > r->election_elapsed && soon < r->election_timeout) {
        r->election_timeout = soon; /* the tick campaigns if it may (raft_tick) */
    }
    raft_invariants(r);
}

static void tick_leader(raft *r) {
    assert(r->role == RAFT_LEADER);
    r->lead_ticks++;
    r->heartbeat_elapsed++;
    r->election_elapsed++;
    if (r->election_elapsed >= r->cfg.election_ticks) {
        r->election_elapsed = 0;
        int active = 0;
        for (uint32_t i = 0; i < r->peers_count; i++) {
            raft_peer *p = &r->peers[i];
            active += p->voter && (p->recent_active || p->id == r->id);
            if (!p->recent_active && p->id != r->id && p->quiet_windows < UINT32_MAX) {
                p->quiet_windows++;
            }
            p->recent_active = p->id == r->id; /* a new window, check_quorum or not */
        }
        if (r->cfg.check_quorum && active < raft_quorum(r)) {
            raft_become_follower(r, r->term, 0); /* CheckQuorum, thesis §6.2 */
            return;
        }
    }
    if (r->transferee != 0 && ++r->transfer_elapsed >= r->cfg.election_ticks) {
        r->transferee = 0; /* thesis §3.10: abort after an election timeout */
    }
    if (r->heartbeat_elapsed >= r->cfg.heartbeat_ticks) {
        r->heartbeat_elapsed = 0;
        /* lease_read: each heartbeat is a round, renewing the lease */
        raft_send_heartbeats(r, r->cfg.lease_read ? raft_reads_new_round(r) : r->read_seq);
    }
    for (uint32_t i = 0; i < r->peers_count; i++) {
        if (r->peers[i].state == RAFT_PROGRESS_SNAPSHOT) {
            raft_snap_tick(r, &r->peers[i]);
        }
    }
}

void raft_tick(raft *r) {
    assert(r != NULL && !r->in_ready);
    if (r->role == RAFT_LEADER) {
        tick_leader(r);
    } else {
        /* keeps counting (saturating) when it cannot campaign: a learner or
         * a removed node must not restart its lease of a leader it no longer
         * hears (step_higher_term), or it would ignore the campaigns of
         * voters whose newer conf counts it (etcd-io/raft does the same) */
        r->election_elapsed += r->election_elapsed < UINT32_MAX;
        if (r->election_elapsed >= r->election_timeout && raft_is_voter(&r->conf, r->id) &&
            !r->install_pending && r->term < RAFT_TERM_MAX) {
            reset_election_timeout(r);
            raft_campaign_start(r, r->cfg.pre_vote, false);
        }
    }
    raft_invariants(r);
}

/* Paper §5.2/§5.4.1 and thesis §9.6: grant when the vote is free (or already
 * ours) and the candidate's log is at least as up to date. A PreVote for a
 * later term is granted without a free vote and changes no state. */
static void handle_vote(raft *r, const raft_msg *m) {
    bool pre = m->type == RAFT_MSG_PREVOTE;
    assert(m->term >= r->term);
    bool free_vote =
        r->vote == m->from || (r->vote == 0 && r->leader == 0) || (pre && m->term > r->term);
    bool grant = free_vote && raft_log_up_to_date(&r->log, m->index, m->log_term);
    raft_msg *resp = raft_out_push(r, pre ? RAFT_MSG_PREVOTE_RESP : RAFT_MSG_VOTE_RESP, m->from);
    resp->term = grant ? m->term : r->term;
    resp->reject = !grant;
    if (grant && !pre) {
        assert(m->term == r->term);
        r->vote = m->from;
        reset_election_timeout(r);
    }
}

/* A message of a larger term. Returns false when it is to be ignored. */
static bool step_higher_term(raft *r, const raft_msg *m) {
    assert(m->term > r->term);
    if (m->type == RAFT_MSG_VOTE || m->type == RAFT_MSG_PREVOTE) {
        /* thesis §4.2.3 / §6.2: with CheckQuorum a node that heard from a
         * leader within the election timeout ignores campaigns (the lease),
         * unless the campaign is a leadership transfer. */
        bool in_lease =
            r->cfg.check_quorum && r->leader != 0 && r->election_elapsed < r->cfg.election_ticks;
        if (in_lease && !m->transfer) {
            return false;
        }
        if (m->type == RAFT_MSG_PREVOTE) {
            return true;
        }
        raft_become_follower(r, m->term, 0);
        return true;
    }
    if (m->type == RAFT_MSG_PREVOTE_RESP && !m->reject) {
        return true; /* a grant carries the future term */
    }
    bool from_leader =
        m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT || m->type == RAFT_MSG_SNAPSHOT;
    raft_become_follower(r, m->term, from_leader ? m->from : 0);
    return true;
}

/* A message of a smaller term: answer what lets its sender catch up. */
static void step_lower_term(raft *r, const raft_msg *m) {
    assert(m->term < r->term);
    if ((r->cfg.check_quorum || r->cfg.pre_vote) &&
        (m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT)) {
        /* a stale leader (partitioned, or whose term we passed through a
         * PreVote-less bump) learns our term and steps down */
        raft_msg *resp = raft_out_push(r, RAFT_MSG_APPEND_RESP, m->from);
        resp->term = r->term;
    } else if (m->type == RAFT_MSG_PREVOTE) {
        raft_msg *resp = raft_out_push(r, RAFT_MSG_PREVOTE_RESP, m->from);
        resp->term = r->term;
        resp->reject = true;
    }
}

/* ---- received messages: every field checked before it is used ----
 *
 * A message is refused (KV_EPROTO, counted in msgs_refused, nothing
 * changed) when a field is one no correct node can send. The checks here
 * need nothing but the message; those that need the receiver's state sit
 * where the field is used (raft_repl.c, raft_snap.c, step_not_leader).
 * No assert is reachable from a received field (issue 10). */

/* A CONF payload a leader could have made: decodable, at least one voter. */
static bool conf_payload_ok(const raft_entry *e) {
    raft_membership c;
    raft_conf_op op;
    uint64_t node;
    return raft_conf_decode(e->data, e->len, &op, &node, &c) == 0 && c.voters_count > 0;
}

/* APPEND entries follow (index, log_term) without a gap, their terms never
 * go down and never pass the sender's term (paper §5.3, Log Matching). */
static bool check_entries(const raft *r, const raft_msg *m) {
    if (m->entries_count > 0 && (m->entries == NULL || m->type != RAFT_MSG_APPEND)) {
        return false;
    }
    if (m->index >= UINT64_MAX - m->entries_count) {
        return false; /* the last index would wrap */
    }
    for (size_t i = 0; i < m->entries_count; i++) {
        const raft_entry *e = &m->entries[i];
        if (e->index != m->index + 1 + i || e->term > m->term || e->term < m->log_term ||
            (i > 0 && e->term < m->entries[i - 1].term) || e->type > RAFT_ENTRY_CONF ||
            e->len > r->cfg.max_entry_bytes || (e->len > 0 && e->data == NULL) ||
            (e->type == RAFT_ENTRY_CONF && !conf_payload_ok(e))) {
            return false;
        }
    }
    return true;
}

/* A snapshot chunk: within its snapshot, of a snapshot of some committed
 * entry (index >= 1, 1 <= term <= the sender's term) with a membership that
 * has a voter (no change removes the last one). */
static bool check_snapshot(const raft_msg *m) {
    if (m->type != RAFT_MSG_SNAPSHOT) {
        return m->snap_len == 0 && (m->type != RAFT_MSG_SNAPSHOT_RESP || m->snap.term <= m->term);
    }
    return (m->snap_len == 0 || m->snap_data != NULL) && m->snap_len <= m->snap_total &&
           m->snap_offset <= m->snap_total - m->snap_len &&
           m->snap_len <= KV_SNAPSHOT_CHUNK_BYTES && m->snap.index >= 1 && m->snap.term >= 1 &&
           m->snap.term <= m->term && raft_conf_valid(&m->snap.membership) &&
           m->snap.membership.voters_count > 0;
}

/* (index, log_term) names an entry of the sender's log: index 0 has term 0,
 * every other entry a term >= 1, and none a term past the sender's. */
static bool check_log_position(const raft_msg *m) {
    switch (m->type) {
    case RAFT_MSG_APPEND:
    case RAFT_MSG_VOTE:
    case RAFT_MSG_PREVOTE:
        return m->log_term <= m->term && (m->index == 0) == (m->log_term == 0);
    case RAFT_MSG_APPEND_RESP:
        /* a rejection names the APPEND's previous entry (never index 0,
         * which every log matches) and hints at an index at or below it,
         * of a term the follower holds (<= its term) */
        return !m->reject ||
               (m->index >= 1 && m->reject_hint <= m->index && m->hint_term <= m->term);
    default:
        return true;
    }
}

static int check_msg(const raft *r, const raft_msg *m) {
    if (m->to != r->id) {
        return KV_EINVAL;
    }
    /* past RAFT_TERM_MAX, term + 1 could wrap */
    if (m->type < RAFT_MSG_APPEND || m->type > RAFT_MSG_TIMEOUT_NOW || m->from == 0 ||
        m->from == r->id || m->term == 0 || m->term > RAFT_TERM_MAX) {
        return KV_EPROTO;
    }
    if (!check_entries(r, m) || !check_snapshot(m) || !check_log_position(m)) {
        return KV_EPROTO;
    }
    return 0;
}

static int step_leader(raft *r, const raft_msg *m) {
    assert(r->role == RAFT_LEADER && m->term >= r->term);
    raft_peer *p = raft_peer_get(r, m->from);
    if (p == NULL || p->id == r->id) {
        return 0; /* not a member (any more): a stale answer */
    }
    /* a refused message changes nothing, its sender's liveness included */
    bool was_active = p->recent_active;
    uint32_t was_quiet = p->quiet_windows;
    p->recent_active = true;
    p->quiet_windows = 0;
    int rc = 0;
    switch (m->type) {
    case RAFT_MSG_APPEND_RESP:
        rc = raft_handle_append_resp(r, p, m);
        break;
    case RAFT_MSG_HEARTBEAT_RESP:
        rc = raft_handle_heartbeat_resp(r, p, m);
        break;
    case RAFT_MSG_SNAPSHOT_RESP:
        rc = raft_handle_snapshot_resp(r, p, m);
        break;
    default:
        break;
    }
    if (rc != 0) {
        p->recent_active = was_active;
        p->quiet_windows = was_quiet;
    }
    return rc;
}

/* Election Safety (paper §5.2): at most one leader per term. A follower
 * that knows the leader of its term refuses another node's claim to it,
 * and a TIMEOUT_NOW from anyone but that leader. */
static bool claims_other_leader(const raft *r, const raft_msg *m) {
    return r->role == RAFT_FOLLOWER && m->term == r->term && r->leader != 0 && r->leader != m->from;
}

static int step_not_leader(raft *r, const raft_msg *m) {
    assert(r->role != RAFT_LEADER && m->term >= r->term);
    switch (m->type) {
    case RAFT_MSG_APPEND:
    case RAFT_MSG_HEARTBEAT:
    case RAFT_MSG_SNAPSHOT:
        if (claims_other_leader(r, m)) {
            return KV_EPROTO;
        }
        if (r->role != RAFT_FOLLOWER || r->leader != m->from) {
            raft_become_follower(r, m->term, m->from);
        }
        r->election_elapsed = 0;
        if (m->type == RAFT_MSG_APPEND) {
            return raft_handle_append(r, m);
        } else if (m->type == RAFT_MSG_HEARTBEAT) {
            raft_handle_heartbeat(r, m);
        } else {
            raft_handle_snapshot(r, m);
        }
        break;
    case RAFT_MSG_TIMEOUT_NOW:
        if (claims_other_leader(r, m)) {
            return KV_EPROTO;
        }
        if (r->role == RAFT_FOLLOWER && raft_is_voter(&r->conf, r->id) && r->term < RAFT_TERM_MAX) {
            raft_campaign_start(r, false, true); /* thesis §3.10 */
        }
        break;
    case RAFT_MSG_PREVOTE_RESP:
        if (r->role == RAFT_PRE_CANDIDATE) {
            tally(r, m->from, !m->reject);
        }
        break;
    case RAFT_MSG_VOTE_RESP:
        if (r->role == RAFT_CANDIDATE) {
            tally(r, m->from, !m->reject);
        }
        break;
    default:
        break;
    }
    return 0;
}

int raft_step(raft *r, const raft_msg *m) {
    assert(r != NULL && m != NULL);
    assert(!r->in_ready);
    int rc = check_msg(r, m);
    if (rc != 0) {
        r->msgs_refused++;
        return rc;
    }
    if (m->term > r->term) {
        if (!step_higher_term(r, m)) {
            return 0;
        }
    } else if (m->term < r->term) {
        step_lower_term(r, m);
        return 0;
    }
    if (m->type == RAFT_MSG_VOTE || m->type == RAFT_MSG_PREVOTE) {
        handle_vote(r, m);
    } else if (r->role == RAFT_LEADER) {
        rc = step_leader(r, m);
    } else {
        rc = step_not_leader(r, m);
    }
    if (rc == KV_EPROTO) {
        r->msgs_refused++;
    }
    raft_invariants(r);
    return rc;
}

/* ---- accessors ---- */

uint64_t raft_id(const raft *r) {
    return r->id;
}
raft_role raft_state_role(const raft *r) {
    return r->role;
}
uint64_t raft_term(const raft *r) {
    return r->term;
}
uint64_t raft_vote(const raft *r) {
    return r->vote;
}
uint64_t raft_leader(const raft *r) {
    return r->leader;
}
uint64_t raft_commit_index(const raft *r) {
    return r->commit;
}
uint64_t raft_applied_index(const raft *r) {
    return r->applied;
}
uint64_t raft_persisted_index(const raft *r) {
    return r->log.stable;
}
uint64_t raft_first_index(const raft *r) {
    return raft_log_first(&r->log);
}
uint64_t raft_last_index(const raft *r) {
    return raft_log_last(&r->log);
}
uint64_t raft_snapshot_index(const raft *r) {
    return r->has_snap ? r->snap.index : 0;
}
int raft_log_term(const raft *r, uint64_t index, uint64_t *term) {
    if (index < r->log.snap_index) {
        return KV_ECOMPACTED;
    }
    if (index > raft_log_last(&r->log)) {
        return KV_ENOTFOUND;
    }
    *term = raft_log_term_at(&r->log, index);
    return 0;
}
void raft_membership_get(const raft *r, raft_membership *out) {
    *out = r->conf;
}
uint64_t raft_transferring(const raft *r) {
    return r->role == RAFT_LEADER ? r->transferee : 0;
}
uint64_t raft_uncommitted_bytes(const raft *r) {
    return r->uncommitted_bytes;
}
uint64_t raft_msgs_refused(const raft *r) {
    return r->msgs_refused;
}
