/*
 * raft.h: the Raft consensus core of kv. This header is the contract.
 *
 * SHAPE (etcd-io/raft style). A raft is a pure, deterministic state machine:
 * no I/O, no clock, no threads, no global state. All randomness (election
 * timeouts) comes from a PRNG seeded by raft_config.seed, so one seed and one
 * sequence of calls always give the same outputs. The caller drives it:
 *
 *   inputs:  raft_tick()            one logical clock tick
 *            raft_step()            one message received from a peer
 *            raft_propose*()        new log entries (leader only)
 *            raft_propose_conf()    a membership change (leader only)
 *            raft_read_index()      a linearizable read (leader only)
 *            raft_transfer_leader() hand leadership to another voter
 *            raft_persisted()       "my log is durable up to (index, term)"
 *            raft_snapshot_done()   "my state machine snapshot covers index"
 *            raft_compact()         drop in-memory log entries <= index
 *            raft_campaign()        start an election now
 *   outputs: raft_has_ready() / raft_ready() / raft_advance()
 *
 * THE READY LOOP. After any input, while raft_has_ready(r): call
 * raft_ready(r, &rd) (struct raft_ready rd), act on rd in the order below,
 * then raft_advance(r, &rd). Entries proposed and reads requested between
 * two raft_ready() calls are batched into as few messages as the limits
 * allow (one heartbeat round for all the reads).
 * Between raft_ready() and raft_advance() only the const accessors may be
 * called (everything rd points to is owned by raft and stays valid exactly
 * until raft_advance()). The steps, in this order:
 *
 *   1. rd.hs_must_sync: rd.hs (term or vote changed) is made DURABLE before
 *      any message of this Ready (or of any later Ready) is sent (docs/rules.md
 *      "two leaders in one term": a vote reply or a message of a new term
 *      never leaves before term+vote are on disk; a vote granted or asked
 *      for at a term left before the Ready is not in rd.msgs). When only
 *      rd.hs.commit changed (hs_changed && !hs_must_sync), rd.hs may be
 *      written lazily, in any order with the entries: rd.hs.commit never
 *      exceeds the entries already reported durable (raft_persisted), so it
 *      never covers an entry this or a later Ready replaces; commit is a
 *      hint on restart.
 *   2. rd.has_snapshot (follower): install the snapshot (index, term,
 *      membership) from the chunks stored in earlier Readys: the state
 *      machine becomes the snapshot's, and the snapshot metadata is durable,
 *      and the app's log is emptied (the next entry will be index+1) BEFORE
 *      raft_advance(). A Ready with has_snapshot carries no entries and no
 *      committed entries. At raft_advance() raft resets its log to start
 *      after the snapshot and acknowledges it to the leader. Raft asks for
 *      an install only when its log does not hold the snapshot's last entry
 *      (index, term) (paper §7), so no entry it acknowledged is dropped;
 *      otherwise it keeps its log and moves its commit index instead.
 *   3. rd.has_chunk (follower): store rd.chunk.len bytes at rd.chunk.offset
 *      of the snapshot (rd.chunk.index, rd.chunk.term) being received. Raft
 *      acknowledges the chunk to the leader at raft_advance().
 *   4. Send rd.msgs (each has .to). They may be sent BEFORE the entries of
 *      step 5 are durable: the leader replicates to followers in parallel
 *      with its own write (every message that depends on local durability,
 *      e.g. a follower's append acknowledgement, is only produced by raft
 *      after raft_persisted() reported it). To keep a message beyond
 *      raft_advance() (queues), copy it with raft_msg_copy().
 *   5. Append rd.entries to the log. If rd.entries[0].index <= the last index
 *      written before, first truncate the log from rd.entries[0].index on
 *      (those entries are replaced). Writes happen in Ready order and may be
 *      asynchronous: when they are durable, call raft_persisted(r, index,
 *      term) with the last durable entry (any time later, but not between a
 *      raft_ready() and its raft_advance()). The entry data must be copied if
 *      it is needed after raft_advance().
 *   6. Apply rd.committed in order (type NORMAL: app data; NOOP: nothing;
 *      CONF: rd.membership is the membership after the last one, also
 *      decodable with raft_conf_decode(); persist it with the applied index).
 *      Committed entries are always locally durable already.
 *   7. rd.reads: a read (ctx) with status 0 may be served once the applied
 *      index >= its index; status KV_ENOTLEADER: leadership was lost before
 *      the read was confirmed, retry at the new leader.
 *   8. raft_advance(r, &rd): raft takes the committed entries as applied.
 *
 * DURABILITY RULES in one place. Term and vote: durable before messages
 * (step 1). Own log entries: reported with raft_persisted(); the leader
 * counts itself toward a commit only up to its reported durable index
 * (docs/rules.md "commit counted before the leader's own write was durable");
 * a follower acknowledges an append only up to its reported durable index.
 * Snapshots: installed durably before raft_advance() (step 2).
 *
 * RESTART. raft_new() takes the persisted state back through raft_config:
 * hard state, the last installed snapshot's metadata, the durable log entries
 * after it (copied) and the state machine's applied index. hs.commit is a
 * hint (clamped to the log); hs.term must be >= every entry's term. A
 * brand-new
 * cluster passes its initial voters in cfg.bootstrap on every founding node
 * (all the same; raft makes them log entry 1); a node that joins later
 * passes an empty bootstrap and learns the membership from the leader's log
 * or snapshot.
 *
 * MEMBERSHIP takes effect when the conf entry is APPENDED to a node's log,
 * committed or not (Raft thesis §4.1): every node uses the latest conf entry
 * in its log; if that entry is truncated away, the previous one applies
 * again. Safety: a change adds or removes one voter only (single-server
 * change, thesis §4.1), so every majority of the old and of the new voter
 * set overlap; a leader proposes at most one change at a time (a new change
 * is refused with KV_EBUSY until the previous conf entry is committed), and a
 * new leader first commits an entry of its own term (its no-op) before any
 * change (Ongaro, raft-dev 2015, "single-server changes bug"). A leader that
 * removes itself keeps leading without counting itself in majorities and
 * steps down once the removal is committed (thesis §4.2.2). A node that is
 * not a voter never campaigns. Learners receive the log but do not vote;
 * raft_learner_caught_up() tells the app when a learner may be promoted
 * (PROMOTE of a learner not caught up is refused with KV_EBUSY).
 *
 * CONF ENTRY FORMAT (payload of RAFT_ENTRY_CONF, encoded by raft, all
 * integers little-endian): u8 version (1), u8 op (raft_conf_op), u64 node id,
 * u8 voters_count, u8 learners_count, then voters_count u64 voter ids and
 * learners_count u64 learner ids: the full membership after the change.
 *
 * SNAPSHOTS. The app snapshots its state machine at an applied index I and
 * says so with raft_snapshot_done(r, I, term). raft_compact(r, J) then drops
 * log entries <= min(J, I) from memory; the app chooses J (e.g. with
 * raft_compact_floor(), which keeps what followers replicating from entries
 * still need, so only a follower that fell far behind costs a snapshot). A
 * follower that needs an entry no longer in the
 * leader's log gets the snapshot instead, in chunks of at most
 * KV_SNAPSHOT_CHUNK_BYTES that raft reads through cfg.snapshot_read (the
 * app's callback; raft does no I/O). At most RAFT_SNAPSHOT_CHUNKS_INFLIGHT
 * chunks per follower are in flight, so heartbeats and appends to others are
 * never held up (docs/rules.md etcd#13913). The follower acknowledges the next
 * offset it expects; the leader resends from there after a lost chunk (no
 * ack within election_ticks ticks) or a reconnect. A transfer continues
 * only with the node that began it: from another sender (a new leader) it
 * starts over at offset 0, because two nodes' snapshots of one (index, term)
 * hold the same state in different bytes. A snapshot being sent pins no log entries (it replaces
 * them), but the APP must keep the snapshot's data readable while it is sent:
 * raft_snapshot_sending() gives the oldest snapshot index being sent. If the
 * callback fails (e.g. KV_ESTALE: the snapshot was deleted), raft drops that
 * transfer and later starts over with the newest snapshot. A follower that
 * restarts mid-transfer starts over from offset 0.
 *
 * READS. raft_read_index() implements ReadIndex (thesis §6.4): the leader
 * records its commit index, confirms with one heartbeat round that it is
 * still leader, and hands (ctx, index) back in a Ready. All reads requested
 * between two raft_ready() calls share one heartbeat round. A new leader
 * holds reads until the no-op of its term is committed (docs/rules.md "stale
 * reads after an election"). With cfg.lease_read (needs check_quorum; off by
 * default; assumes the nodes' tick rates do not drift) the leader answers
 * without a round of its own while it holds a lease: a quorum of voters
 * confirmed a heartbeat round (in lease mode every heartbeat is one) sent
 * fewer than election_ticks - 1 ticks ago. Followers ignore campaigns for
 * election_ticks ticks after hearing from a leader, so no newer leader can
 * exist during the lease. (CheckQuorum alone is not enough: it steps a
 * leader down up to two election timeouts after its last ack.) A leader
 * that sent TIMEOUT_NOW (leadership transfer, whose campaign ignores that
 * rule) holds no lease for the rest of its term. Without a lease a read
 * takes a round as usual. A restarted node forgets when it last heard from
 * a leader: with lease_read, restart a node no sooner than election_ticks
 * ticks after it stopped. max_read_pending counts reads waiting for a round
 * and answered reads not yet handed out by raft_advance().
 * Followers do not forward reads: raft_read_index() returns KV_ENOTLEADER and
 * the app redirects the client to raft_leader().
 *
 * ERRORS: 0 or a negative KV_E* code (kv/errors.h). Asserts are for raft's
 * own bugs and for callers breaking this contract (e.g. calling raft_step()
 * between raft_ready() and raft_advance()).
 */
#ifndef KV_RAFT_H
#define KV_RAFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv/limits.h"

/* The largest term: a message of a larger one is refused (KV_EPROTO) and a
 * node at it no longer campaigns, so term + 1 never wraps. Campaigns alone
 * (one per election timeout) never get there. */
#define RAFT_TERM_MAX (UINT64_MAX / 2)

/* Snapshot chunks in flight to one follower (each <= KV_SNAPSHOT_CHUNK_BYTES). */
#define RAFT_SNAPSHOT_CHUNKS_INFLIGHT 4u

typedef struct raft raft;

typedef enum raft_role {
    RAFT_FOLLOWER = 0,
    RAFT_PRE_CANDIDATE = 1,
    RAFT_CANDIDATE = 2,
    RAFT_LEADER = 3,
} raft_role;

typedef enum raft_entry_type {
    RAFT_ENTRY_NORMAL = 0, /* app data */
    RAFT_ENTRY_NOOP = 1,   /* a leader's first entry of its term; no data */
    RAFT_ENTRY_CONF = 2,   /* a membership change; data in the CONF ENTRY FORMAT */
} raft_entry_type;

/* One log entry. data/len is the payload (len may be 0, data then may be
 * NULL). Who owns data: see where the entry comes from (Ready: raft, until
 * raft_advance; a message copy: the copy; raft_config.entries: the caller). */
typedef struct raft_entry {
    uint64_t index;
    uint64_t term;
    uint32_t type; /* raft_entry_type */
    uint32_t reserved_;
    void *data;
    size_t len;
    void *blk_; /* private to raft: the block holding data, or NULL */
} raft_entry;

/* A membership: voters and learners; a node is in at most one list.
 * voters_count + learners_count <= KV_NODES_MAX. */
typedef struct raft_membership {
    uint32_t voters_count;
    uint32_t learners_count;
    uint64_t voters[KV_NODES_MAX];
    uint64_t learners[KV_NODES_MAX];
} raft_membership;

typedef struct raft_hard_state {
    uint64_t term;
    uint64_t vote; /* 0: no vote in this term */
    uint64_t commit;
} raft_hard_state;

typedef struct raft_soft_state {
    uint64_t leader; /* 0: unknown */
    raft_role role;
} raft_soft_state;

/* What a snapshot covers: the state after applying entry (index, term), and
 * the membership in effect at index. */
typedef struct raft_snapshot_meta {
    uint64_t index;
    uint64_t term;
    raft_membership membership;
} raft_snapshot_meta;

typedef enum raft_msg_type {
    RAFT_MSG_APPEND = 1,     /* index/log_term: previous entry; entries; commit */
    RAFT_MSG_APPEND_RESP,    /* index: last matching index; or reject (see below) */
    RAFT_MSG_VOTE,           /* index/log_term: candidate's last entry; transfer */
    RAFT_MSG_VOTE_RESP,      /* reject: vote refused */
    RAFT_MSG_PREVOTE,        /* term: the term the candidate would campaign in */
    RAFT_MSG_PREVOTE_RESP,   /* reject: refused */
    RAFT_MSG_HEARTBEAT,      /* commit; context: ReadIndex round */
    RAFT_MSG_HEARTBEAT_RESP, /* context echoed */
    RAFT_MSG_SNAPSHOT,       /* snap, snap_offset, snap_data/len, snap_total, snap_last */
    RAFT_MSG_SNAPSHOT_RESP,  /* snap.index/term; snap_offset: next offset expected;
                                snap_last: installed; reject: not wanted, stop
                                (index: its durable committed index) */
    RAFT_MSG_TIMEOUT_NOW,    /* leadership transfer: campaign now (thesis §3.10) */
} raft_msg_type;

/* One message. Plain data; the network layer serializes it. Fields a type
 * does not use are 0.
 *  APPEND_RESP with reject: the follower's log does not contain (index,
 *  log_term) of the APPEND; reject_hint is the largest index the leader
 *  should try next as "previous" and hint_term the follower's term at
 *  reject_hint (fast backtracking by term, etcd-io/raft). */
typedef struct raft_msg {
    uint32_t type; /* raft_msg_type */
    uint64_t from;
    uint64_t to;
    uint64_t term;
    uint64_t log_term;
    uint64_t index;
    uint64_t commit;
    raft_entry *entries;
    size_t entries_count;
    bool reject;
    bool transfer; /* VOTE: campaign of a leadership transfer (ignores leases) */
    uint64_t reject_hint;
    uint64_t hint_term;
    uint64_t context;
    /* SNAPSHOT / SNAPSHOT_RESP */
    raft_snapshot_meta snap;
    uint64_t snap_offset;
    uint64_t snap_total;
    void *snap_data;
    size_t snap_len;
    bool snap_last;
} raft_msg;

/* Deep-copies src into dst (entries and their data in one allocation, chunk
 * data in another). Ownership: dst owns its memory; release it with
 * raft_msg_free(dst). Returns 0 or KV_ENOMEM (dst then owns nothing). */
int raft_msg_copy(raft_msg *dst, const raft_msg *src);

/* Frees what raft_msg_copy() allocated for m and zeroes m. Only for copies. */
void raft_msg_free(raft_msg *m);

/* The app's snapshot reader. Reads up to len bytes at offset of the snapshot
 * (index, term) into buf; sets *got (< len only at its end) and *total_size.
 * Returns 0, or a negative KV_E* code (KV_ESTALE: no longer available). */
typedef int (*raft_snapshot_read_fn)(void *ctx, uint64_t index, uint64_t term, uint64_t offset,
                                     void *buf, size_t len, size_t *got, uint64_t *total_size);

typedef struct raft_config {
    uint64_t id;                    /* this node; nonzero */
    uint32_t election_ticks;        /* timeout is random in [election_ticks, 2*election_ticks) */
    uint32_t heartbeat_ticks;       /* < election_ticks */
    uint64_t seed;                  /* seeds all randomness */
    bool pre_vote;                  /* PreVote (thesis §9.6); default on */
    bool check_quorum;              /* leader steps down without a quorum; default on */
    bool lease_read;                /* lease-based reads; default off; needs check_quorum */
    uint32_t max_inflight_msgs;     /* default and most KV_RAFT_INFLIGHT_MSGS_MAX */
    uint64_t max_msg_bytes;         /* default and most KV_RAFT_MSG_BYTES_MAX: an APPEND's
                                       entries, each counted as its payload plus
                                       KV_RAFT_ENTRY_WIRE_OVERHEAD_BYTES (one entry
                                       always goes); every APPEND fits in a frame */
    uint64_t max_uncommitted_bytes; /* default KV_RAFT_UNCOMMITTED_BYTES_MAX */
    uint64_t max_entry_bytes;       /* default and most KV_ENTRY_BYTES_MAX */
    uint64_t max_kept_bytes;        /* default KV_RAFT_LOG_KEEP_BYTES_MAX: committed entries
                                       raft_compact_floor keeps for followers */
    uint32_t max_read_pending;      /* default KV_READ_INDEX_PENDING_MAX */
    raft_snapshot_read_fn snapshot_read; /* may be NULL: never sends snapshots */
    void *snapshot_ctx;

    /* Restart state (all zero for a brand-new node). */
    raft_hard_state hs;
    bool has_snapshot;
    raft_snapshot_meta snapshot; /* the last installed snapshot, if has_snapshot */
    const raft_entry *entries;   /* durable entries after the snapshot, in order; copied */
    size_t entries_count;
    uint64_t applied; /* the state machine's applied index */
    /* A founding node of a brand-new cluster passes the initial voters, the
     * same on every founding node: with no snapshot and no entries, raft
     * appends them as CONF entry 1 of term 1, committed (as etcd-io/raft
     * bootstraps), which comes out in the first Ready like any entry. Ignored
     * once there is a snapshot or a log; a node joining later passes none. */
    raft_membership bootstrap;
} raft_config;

/* Fills cfg with defaults for node id: election 10 ticks, heartbeat 1 tick,
 * seed = id, pre_vote and check_quorum on, lease_read off, limits from
 * kv/limits.h, no restart state. Always start from it: a zero limit is
 * refused by raft_new (there is no "0 means default/unlimited"). */
void raft_config_init(raft_config *cfg, uint64_t id);

/* Creates a raft from cfg (copied; entries copied). Ownership: *out belongs to
 * the caller, release with raft_free(). Returns 0, KV_EINVAL (id 0, zero
 * limit, heartbeat_ticks >= election_ticks, lease_read without check_quorum,
 * entries not contiguous after the snapshot, bad membership, a limit past
 * its kv/limits.h maximum), KV_ENOMEM.
 * A restarted node starts as a follower of no one. */
int raft_new(const raft_config *cfg, raft **out);
void raft_free(raft *r);

/* One tick of the logical clock: election timeouts, heartbeats, CheckQuorum,
 * transfer and snapshot-chunk timeouts. A follower whose randomized election
 * timeout passes campaigns (with pre_vote: a PreVote round first); a
 * (pre-)candidate refused by a majority goes back to follower of its term;
 * one that neither wins nor loses retries at its next timeout. */
void raft_tick(raft *r);

/* Starts an election now, as if the election timeout had passed (etcd's
 * Campaign; for tests and operator commands). Returns 0 (also when already
 * leader: nothing happens), KV_EINVAL (this node is not a voter). */
int raft_campaign(raft *r);

/* A hint from the transport: the link to node id closed (e.g. its process
 * died). When id is this follower's leader, the follower forgets it (it no
 * longer ignores campaigns for CheckQuorum's lease; clients are told no
 * leader is known) and campaigns, through PreVote, after a random 1 to
 * election_ticks/3 ticks instead of its election timeout. Otherwise, and
 * always with lease_read (which relies on that lease), nothing happens.
 * Liveness only: terms, votes and PreVote are as without the hint, and a
 * wrong hint costs no term (the leader's next message restores it). */
void raft_leader_unreachable(raft *r, uint64_t id);

/* Processes one message addressed to this node. The caller keeps ownership
 * of m (raft copies what it keeps). Returns 0 (also for stale or unexpected
 * messages, which are ignored), KV_EINVAL (m->to is not this node),
 * KV_EPROTO, KV_ENOMEM. KV_EPROTO: a field no correct node sends (unknown
 * type, from 0 or this node, term 0 or past RAFT_TERM_MAX, entries not contiguous
 * or with terms going down, a reject hint past the rejected index, a
 * snapshot of term 0 or without a voter, a second leader in a known
 * leader's term, a change to an entry committed or matched with this
 * term's leader, an acknowledgement of entries or read rounds the leader
 * never had, ...). Every field of m is checked against what this node
 * knows before it is used: no assert is reachable from m's contents, and a
 * refused message changes nothing. Refusals are counted
 * (raft_msgs_refused). */
int raft_step(raft *r, const raft_msg *m);

/* Appends one NORMAL entry with a copy of data (leader only). *index_out (may
 * be NULL) gets its index. Returns 0, KV_ENOTLEADER, KV_ETOOBIG (len >
 * max_entry_bytes), KV_EBUSY (leadership transfer in progress, or the
 * uncommitted bytes would pass max_uncommitted_bytes; nothing is kept; as in
 * etcd-io/raft a proposal is always accepted when nothing is uncommitted, so
 * one batch larger than the budget is not starved),
 * KV_ENOMEM. Committed only if it reaches a majority; a caller learns the
 * outcome from the committed entry at that index (same term) or not. */
int raft_propose(raft *r, const void *data, size_t len, uint64_t *index_out);

typedef struct raft_buf {
    const void *data;
    size_t len;
} raft_buf;

/* Appends count NORMAL entries at once, all or none (one allocation for all
 * their data). *first_index_out (may be NULL) gets the first one's index;
 * the others follow. Errors as raft_propose(); KV_EINVAL when count is 0. */
int raft_propose_batch(raft *r, const raft_buf *bufs, size_t count, uint64_t *first_index_out);

typedef enum raft_conf_op {
    RAFT_CONF_BOOTSTRAP = 0,   /* entry 1 of a new cluster (never proposed) */
    RAFT_CONF_ADD_LEARNER = 1, /* a new node joins as a learner */
    RAFT_CONF_PROMOTE = 2,     /* a caught-up learner becomes a voter */
    RAFT_CONF_REMOVE = 3,      /* a voter or learner leaves (may be the leader) */
} raft_conf_op;

/* Proposes one membership change (leader only). Returns 0, KV_ENOTLEADER,
 * KV_EBUSY (a change is not yet committed, no entry of this term committed
 * yet, transfer in progress, or PROMOTE of a learner not caught up),
 * KV_EINVAL (ADD of a member, PROMOTE of a non-learner, REMOVE of a
 * non-member or of the last voter, node id 0, unknown op), KV_ETOOBIG
 * (KV_NODES_MAX reached), KV_ENOMEM. */
int raft_propose_conf(raft *r, raft_conf_op op, uint64_t node, uint64_t *index_out);

/* Encodes a CONF entry payload (the CONF ENTRY FORMAT above) into buf of
 * RAFT_CONF_BYTES_MAX bytes; returns its length. For tools that write a log
 * themselves (kvd restore, kvd recover: a new membership as the next entry). */
#define RAFT_CONF_BYTES_MAX (12u + 8u * KV_NODES_MAX)
size_t raft_conf_encode(raft_conf_op op, uint64_t node, const raft_membership *c, uint8_t *buf);

/* Decodes a CONF entry payload. Returns 0, KV_EVERSION, KV_ECORRUPT. */
int raft_conf_decode(const void *data, size_t len, raft_conf_op *op, uint64_t *node,
                     raft_membership *out);

/* Requests a linearizable read (leader only); the answer comes in a later
 * Ready's reads with the same ctx. Returns 0, KV_ENOTLEADER, KV_EBUSY
 * (max_read_pending reads already wait or wait to be handed out), KV_ENOMEM. */
int raft_read_index(raft *r, uint64_t ctx);

/* Starts handing leadership to voter id (thesis §3.10): proposals are refused
 * (KV_EBUSY) meanwhile, the target is brought up to date, then gets
 * TIMEOUT_NOW. Aborted after election_ticks ticks. A new request replaces a
 * running one. Returns 0 (also when id is this node: nothing to do),
 * KV_ENOTLEADER, KV_EINVAL (id not a voter). */
int raft_transfer_leader(raft *r, uint64_t id);

/* The app's log is durable up to (index, term). Ignored when the log no
 * longer has term at index (the write was superseded by a truncation) or it
 * is not newer than an earlier report. */
void raft_persisted(raft *r, uint64_t index, uint64_t term);

/* The app's state machine snapshot now covers (index, term); index <= the
 * applied index. Lagging followers get this snapshot. Returns 0, KV_EINVAL
 * (index > applied, term mismatch), KV_ESTALE (not newer than the last). */
int raft_snapshot_done(raft *r, uint64_t index, uint64_t term);

/* Drops in-memory log entries <= index (at most up to the last snapshot
 * index; larger values are clamped). A follower that then needs a dropped
 * entry is sent the snapshot. raft_compact_floor() tells which index keeps
 * every follower that currently replicates from entries off snapshots.
 * Returns 0 or KV_EINVAL (no snapshot yet). */
int raft_compact(raft *r, uint64_t index);

/* Leader: the lowest index a follower heard from in this election-timeout
 * window still needs: its match, or for one receiving a snapshot that
 * snapshot's index, so that once installed it catches up from the log (it
 * holds it while quiet for up to ten windows: installing takes a while).
 * But no more than cfg.max_kept_bytes of entries up to the applied index:
 * past it the slowest is sent a snapshot. Compacting below the floor sends
 * no snapshot. Non-leader: the applied index. */
uint64_t raft_compact_floor(const raft *r);

/* The oldest snapshot index being sent to a follower (the app must keep it
 * readable), or 0. */
uint64_t raft_snapshot_sending(const raft *r);

/* ---- the Ready loop ---------------------------------------------------- */

typedef struct raft_read_state {
    uint64_t ctx;   /* from raft_read_index() */
    uint64_t index; /* serve once applied >= index */
    int status;     /* 0, or KV_ENOTLEADER: not confirmed, retry elsewhere */
} raft_read_state;

/* A chunk of a snapshot being received (follower). */
typedef struct raft_snapshot_chunk {
    uint64_t index; /* the snapshot */
    uint64_t term;
    uint64_t offset;
    const void *data;
    size_t len;
    uint64_t total_size;
    bool last; /* offset + len == total_size: the next Ready installs it */
} raft_snapshot_chunk;

struct raft_ready {
    bool hs_changed;   /* hs differs from the last Ready's */
    bool hs_must_sync; /* term or vote changed: step 1 */
    raft_hard_state hs;
    bool ss_changed;
    raft_soft_state ss;
    bool has_snapshot; /* step 2: install snapshot */
    raft_snapshot_meta snapshot;
    bool has_chunk; /* step 3: store chunk */
    raft_snapshot_chunk chunk;
    const raft_msg *msgs; /* step 4 */
    size_t msgs_count;
    const raft_entry *entries; /* step 5 */
    size_t entries_count;
    const raft_entry *committed; /* step 6 */
    size_t committed_count;
    bool membership_changed;      /* a CONF entry is in committed: */
    raft_membership membership;   /* the membership after the last one */
    const raft_read_state *reads; /* step 7 */
    size_t reads_count;
};

/* True when raft_ready() would return something to do. */
bool raft_has_ready(const raft *r);

/* Fills rd (overwritten entirely). The type is spelled struct raft_ready
 * (raft_ready is the function). Everything it points to belongs to raft
 * and is valid until raft_advance(r, rd). Returns 0 or KV_ENOMEM. */
int raft_ready(raft *r, struct raft_ready *rd);

/* The app has done everything rd asked (steps 1-7). */
void raft_advance(raft *r, const struct raft_ready *rd);

/* ---- accessors (const; allowed between raft_ready and raft_advance) ---- */

uint64_t raft_id(const raft *r);
raft_role raft_state_role(const raft *r);
uint64_t raft_term(const raft *r);
uint64_t raft_vote(const raft *r);
uint64_t raft_leader(const raft *r); /* 0: unknown */
uint64_t raft_commit_index(const raft *r);
uint64_t raft_applied_index(const raft *r);   /* as acknowledged by raft_advance */
uint64_t raft_persisted_index(const raft *r); /* as reported by raft_persisted */
uint64_t raft_first_index(const raft *r);     /* first entry kept in memory */
uint64_t raft_last_index(const raft *r);
uint64_t raft_snapshot_index(const raft *r); /* last raft_snapshot_done / installed */
/* Term of the entry at index: 0 on success, KV_ECOMPACTED (before the first
 * kept entry, other than the snapshot index), KV_ENOTFOUND (after the last). */
int raft_log_term(const raft *r, uint64_t index, uint64_t *term);
void raft_membership_get(const raft *r, raft_membership *out);
uint64_t raft_transferring(const raft *r);      /* leader: the transfer's target, or 0 */
size_t raft_read_pending(const raft *r);        /* reads waiting for confirmation */
uint64_t raft_uncommitted_bytes(const raft *r); /* leader: proposed, uncommitted */
/* Messages raft_step() refused (KV_EINVAL, KV_EPROTO) since raft_new(). */
uint64_t raft_msgs_refused(const raft *r);

typedef enum raft_progress_state {
    RAFT_PROGRESS_PROBE = 0,     /* one append at a time until the log matches */
    RAFT_PROGRESS_REPLICATE = 1, /* pipelined appends, inflight window */
    RAFT_PROGRESS_SNAPSHOT = 2,  /* receiving a snapshot */
} raft_progress_state;

typedef struct raft_progress_info {
    uint64_t id;
    bool learner;
    raft_progress_state state;
    uint64_t match;       /* highest index known durable and matching on it */
    uint64_t next;        /* next index to send */
    uint32_t inflight;    /* append messages unacknowledged */
    bool recent_active;   /* heard from within the current election timeout */
    uint64_t snap_index;  /* SNAPSHOT: the snapshot being sent */
    uint64_t snap_offset; /* SNAPSHOT: bytes acknowledged */
} raft_progress_info;

/* Leader: the progress of member id (this node included). Returns 0,
 * KV_ENOTLEADER, KV_ENOTFOUND. */
int raft_progress(const raft *r, uint64_t id, raft_progress_info *out);

/* Leader: learner id has every committed entry and is active (heard from in
 * the current election-timeout window, as recent_active), so promoting it
 * does not stall commits. Right after a window starts a live learner may
 * read as not caught up until its next answer: retry. */
bool raft_learner_caught_up(const raft *r, uint64_t id);

#endif /* KV_RAFT_H */
