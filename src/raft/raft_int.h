/*
 * raft_int.h: the inside of struct raft, shared by the raft_*.c files only.
 * Nothing here is part of the contract (raft.h is).
 */
#ifndef KV_RAFT_INT_H
#define KV_RAFT_INT_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv/errors.h"
#include "kv/limits.h"
#include "raft.h"

/* Entry payloads live in refcounted blocks: one block per proposal batch or
 * per received APPEND, so the hot path does one allocation per batch, not per
 * entry. refs counts the entries pointing into the block. */
typedef struct raft_blk {
    uint64_t refs;
    /* payload bytes follow */
} raft_blk;

/* The in-memory log (like etcd's MemoryStorage): entries (snap_index,
 * last] in ents[head .. head+count), contiguous so messages and Readys can
 * point straight into it. Entries <= stable are durable (raft_persisted);
 * entries <= handed were handed out in a Ready to be written. */
typedef struct raft_log {
    raft_entry *ents;
    size_t head;
    size_t count;
    size_t cap;
    uint64_t snap_index; /* the entry before the first kept one */
    uint64_t snap_term;
    uint64_t stable;
    uint64_t handed;
} raft_log;

typedef struct raft_inflights {
    uint64_t last[KV_RAFT_INFLIGHT_MSGS_MAX]; /* ring: last index of each APPEND in flight */
    uint32_t start;
    uint32_t count;
    uint32_t cap; /* cfg.max_inflight_msgs */
} raft_inflights;

/* The leader's view of one member (etcd-io/raft Progress). */
typedef struct raft_peer {
    uint64_t id;
    bool voter;
    uint8_t state; /* raft_progress_state */
    bool probe_sent;
    bool recent_active;
    uint32_t quiet_windows; /* election-timeout windows in a row it was not heard in */
    bool want_send;  /* flush appends at the next raft_ready */
    bool want_empty; /* ... and an empty one if nothing else goes */
    int8_t vote;     /* candidate: 1 granted, -1 refused, 0 unknown */
    uint64_t match;
    uint64_t next;
    uint64_t commit_sent; /* the commit index last sent to it */
    uint64_t read_acked;  /* highest ReadIndex round it confirmed */
    raft_inflights infl;
    /* SNAPSHOT state */
    uint64_t snap_index;
    uint64_t snap_term;
    raft_membership snap_conf;
    uint64_t snap_total;
    uint64_t snap_acked; /* next offset the follower expects */
    uint64_t snap_sent;  /* next offset to send */
    uint32_t snap_idle;  /* ticks without progress */
} raft_peer;

/* A follower receiving a snapshot and not heard from for fewer windows than
 * this still holds the compaction floor (raft_compact_floor): installing the
 * snapshot it goes quiet for a second or more under load (kvd restores on
 * its loop). */
#define RAFT_FLOOR_QUIET_WINDOWS 10u

/* Rounds whose start tick the leader remembers for lease reads; a lease
 * resting on an older round has expired (reads then take a round). */
#define RAFT_LEASE_ROUNDS 64u

typedef struct raft_read_req {
    uint64_t ctx;
    uint64_t index; /* 0: fill in with the commit index when released */
    uint64_t seq;   /* the heartbeat round that confirms it */
} raft_read_req;

/* A chunk received and queued for the app (follower). */
typedef struct raft_chunk_q {
    uint64_t from;
    uint64_t offset;
    void *data;
    size_t len;
} raft_chunk_q;

struct raft {
    raft_config cfg; /* limits and callbacks; restart fields cleared */
    uint64_t id;
    uint64_t rng;

    uint64_t term;
    uint64_t vote;
    uint64_t leader;
    raft_role role;
    uint64_t commit;
    uint64_t applied;
    raft_log log;

    raft_membership conf;      /* in effect: the latest in the log (§4.1) */
    raft_membership base_conf; /* the membership at log.snap_index */
    uint64_t conf_index;       /* the CONF entry conf comes from; 0: base_conf */
    raft_peer peers[KV_NODES_MAX];
    uint32_t peers_count;

    uint32_t election_elapsed;
    uint32_t heartbeat_elapsed;
    uint32_t election_timeout; /* randomized */

    uint64_t transferee;
    uint32_t transfer_elapsed;
    uint64_t uncommitted_bytes;

    /* follower */
    uint64_t leader_match; /* highest index known to match this term's leader */
    uint64_t acked;        /* highest index acknowledged to it */

    /* ReadIndex (leader) */
    raft_read_req *reads;
    size_t reads_head;
    size_t reads_count;
    size_t reads_cap;
    uint64_t read_seq;      /* last round started */
    bool read_round_wanted; /* a read waits for a round not yet started */
    /* lease_read: the leader's clock and when each recent round started, so
     * a lease lasts from the SEND of a round a quorum confirmed (raft_read.c) */
    uint64_t lead_ticks;
    uint64_t round_tick[RAFT_LEASE_ROUNDS];
    bool lease_revoked; /* a TIMEOUT_NOW went out this term: no lease reads */
    raft_read_state *read_out;
    size_t read_out_count;
    size_t read_out_cap;

    /* snapshots: the app's latest (raft_snapshot_done or installed) */
    bool has_snap;
    raft_snapshot_meta snap;
    /* follower: receiving one */
    bool rcv_active;
    raft_snapshot_meta rcv;
    uint64_t rcv_total;
    uint64_t rcv_from;   /* the sender of the transfer being received */
    uint64_t rcv_offset; /* stored by the app so far */
    raft_chunk_q rcv_q[RAFT_SNAPSHOT_CHUNKS_INFLIGHT];
    uint32_t rcv_q_count;
    bool install_pending;

    /* outputs */
    raft_msg *out;
    raft_msg out_sink; /* filled instead of a message when out cannot grow */
    size_t out_count;
    size_t out_cap;
    bool bcast_commit;     /* tell followers the new commit index at raft_ready */
    bool in_ready;         /* between raft_ready and raft_advance */
    uint64_t msgs_refused; /* raft_step() refused: malformed or impossible */
    raft_hard_state prev_hs;
    raft_soft_state prev_ss;
};

/* ---- raft.c ---- */
void raft_invariants(const raft *r);
void raft_become_follower(raft *r, uint64_t term, uint64_t leader);
void raft_campaign_start(raft *r, bool pre, bool transfer);
uint64_t raft_rand(raft *r);
int raft_quorum(const raft *r);
bool raft_is_voter(const raft_membership *c, uint64_t id);
bool raft_is_member(const raft_membership *c, uint64_t id);

/* ---- raft_log.c ---- */
raft_blk *raft_blk_new(size_t bytes);
void raft_blk_unref(raft_blk *b);
void *raft_blk_data(raft_blk *b);
uint64_t raft_log_first(const raft_log *l);
uint64_t raft_log_last(const raft_log *l);
uint64_t raft_log_last_term(const raft_log *l);
/* Term at index: 0 when unknown (compacted or past the end). */
uint64_t raft_log_term_at(const raft_log *l, uint64_t index);
raft_entry *raft_log_at(const raft_log *l, uint64_t index);
int raft_log_reserve(raft_log *l, size_t n);
void raft_log_push(raft *r, const raft_entry *e); /* after reserve; refs e's block */
void raft_log_truncate(raft *r, uint64_t from);
void raft_log_compact(raft *r, uint64_t upto);
void raft_log_reset(raft *r, uint64_t index, uint64_t term);
void raft_log_free(raft_log *l);
int raft_log_copy_in(raft *r, const raft_entry *ents, size_t n);
int raft_log_conf_at(const raft *r, uint64_t index, raft_membership *out);
bool raft_log_up_to_date(const raft_log *l, uint64_t index, uint64_t term);

/* ---- raft_repl.c ---- */
void raft_peers_reset(raft *r);
raft_peer *raft_peer_get(raft *r, uint64_t id);
const raft_peer *raft_peer_cget(const raft *r, uint64_t id);
void raft_send_want_all(raft *r);
void raft_flush_sends(raft *r);
void raft_send_heartbeats(raft *r, uint64_t ctx);
void raft_maybe_commit(raft *r);
int raft_handle_append(raft *r, const raft_msg *m);
int raft_handle_append_resp(raft *r, raft_peer *p, const raft_msg *m);
void raft_handle_heartbeat(raft *r, const raft_msg *m);
int raft_handle_heartbeat_resp(raft *r, raft_peer *p, const raft_msg *m);
void raft_follower_ack(raft *r);
void raft_send_timeout_now(raft *r, uint64_t to);

/* ---- raft_read.c ---- */
void raft_reads_fail_all(raft *r);
void raft_reads_release(raft *r);
void raft_reads_start_round(raft *r);
uint64_t raft_reads_new_round(raft *r);
void raft_reads_free(raft *r);

/* ---- raft_conf.c ---- */
void raft_conf_changed(raft *r);
bool raft_conf_valid(const raft_membership *c);
void raft_maybe_step_down_removed(raft *r);

/* ---- raft_snap.c ---- */
void raft_snap_send(raft *r, raft_peer *p);
void raft_snap_start(raft *r, raft_peer *p);
void raft_snap_tick(raft *r, raft_peer *p);
void raft_handle_snapshot(raft *r, const raft_msg *m);
int raft_handle_snapshot_resp(raft *r, raft_peer *p, const raft_msg *m);
void raft_snap_chunk_stored(raft *r, const raft_snapshot_chunk *c);
void raft_snap_installed(raft *r);
void raft_rcv_free(raft *r);
bool raft_snap_unwanted(raft *r, uint64_t index, uint64_t term, uint64_t to);

/* ---- raft_ready.c ---- */
raft_msg *raft_out_push(raft *r, uint32_t type, uint64_t to);
void raft_out_free(raft *r);

#endif /* KV_RAFT_INT_H */
