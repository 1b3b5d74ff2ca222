/*
 * A fake kv node for libkvclient's tests: one thread, a listening socket on
 * 127.0.0.1, the real frames and messages (src/net/frame.h, proto/kv.proto),
 * an in-memory map and sessions with the server's exactly-once rules
 * (docs/protocol.md). Behaviours a test turns on: follower (NOTLEADER with
 * or without a leader address), BUSY for the first N writes, a session
 * expired once, closing the connection after applying a write without
 * answering, never answering, a token.
 *
 * Membership and operations: a member list (fake_set_members) shown in
 * STATUS, MEMBER_ADD/REMOVE applied to it, TRANSFER_LEADER switching the
 * leader a STATUS names after some polls, a snapshot stream per node and
 * generation (valid stream format, content seeded by the node's name) read
 * with SNAPSHOT_READ, CHECK_POINT and HASH answering a configured hash.
 */
#ifndef KV_TESTS_CLIENT_FAKE_SERVER_H
#define KV_TESTS_CLIENT_FAKE_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct fake_config {
    const char *name;             /* node name; "f" when NULL */
    bool follower;                /* answers NOTLEADER to writes and linearizable reads */
    const char *leader_address;   /* follower: where the leader is ("" or NULL: unknown) */
    const char *notleader_detail; /* follower: the detail (default "not the leader") */
    bool notleader_unknown;       /* follower: NOTLEADER with outcome_unknown (proposed, lost) */
    bool unavailable;             /* answers UNAVAILABLE ("no leader") instead */
    uint32_t busy_writes;         /* BUSY to the first N write attempts */
    bool busy_forever;            /* BUSY to every write */
    bool expire_session_once;     /* STALE "session expired" to the first sessioned write */
    uint32_t close_after_apply;   /* close without answering right after the Nth applied write */
    bool black_hole;              /* reads requests, answers none */
    const char *token;            /* refuse (AUTH) a Hello with another token */
    /* membership and operations */
    const char *leader_name;      /* STATUS: the leader named (default: itself; "" as a follower) */
    uint32_t busy_changes;        /* BUSY to the first N MEMBER_ADD/REMOVE */
    uint32_t close_after_change;  /* close without answering right after the Nth applied change */
    uint32_t transfer_after;      /* TRANSFER_LEADER: STATUS names the target after N STATUS */
    bool transfer_never;          /* TRANSFER_LEADER: answered 0, transferring for ever */
    bool transfer_given_up;       /* TRANSFER_LEADER: answered 0, then not transferring */
    uint64_t hash;                /* CHECK_POINT and HASH answer this */
    uint32_t hash_notfound;       /* NOTFOUND to the first N HASH */
    bool hash_silent;             /* HASH never answered */
    uint32_t snap_bytes;          /* about this many stream bytes (default 2.5 MiB) */
    uint32_t snap_piece;          /* bytes per SNAPSHOT_READ answer (default 1 MiB) */
    uint32_t snap_stale_at;       /* the Nth SNAPSHOT_READ finds its snapshot gone: STALE */
    uint32_t snap_close_at;       /* the Nth SNAPSHOT_READ: connection closed unanswered */
    const char *snap_then_leader; /* ... and from then on a follower of this member */
} fake_config;

/* One request as the fake received it. */
typedef struct fake_req {
    int type; /* Kv__Request__Type */
    uint64_t client_id, seq;
    char key[64]; /* first bytes, NUL-terminated */
} fake_req;

typedef struct fake_server fake_server;

/* Starts a fake on a free port in 22000..22899; NULL when none binds. */
fake_server *fake_start(const fake_config *cfg);
/* Stops it: the port closes, every connection with it. */
void fake_stop(fake_server *f);
/* "127.0.0.1:port" (static per fake). */
const char *fake_addr(const fake_server *f);
int fake_port(const fake_server *f);

/* Counters and the request log (copied under the fake's lock). */
uint64_t fake_applied(fake_server *f); /* writes applied (duplicates not counted) */
uint64_t fake_duplicates(fake_server *f);
uint64_t fake_registers(fake_server *f);
uint64_t fake_hellos(fake_server *f);
/* The cluster_id the nth Hello carried ("" for none); false past the end. */
bool fake_hello_cluster(fake_server *f, uint64_t n, char *out, size_t out_len);
/* Requests received so far (all types); the nth into *out. */
uint64_t fake_requests(fake_server *f);
bool fake_request(fake_server *f, uint64_t n, fake_req *out);
/* The value stored under key (malloc'd copy, caller frees) or NULL. */
void *fake_value(fake_server *f, const char *key, size_t *len);

/* Membership: "n1=host:port,n2=host:port"; a name ending in '+' is a
 * learner, in '?' joining. */
void fake_set_members(fake_server *f, const char *list);
/* The members now, in the same form. */
void fake_members(fake_server *f, char *out, size_t out_len);
/* Requests of one type received so far. */
uint64_t fake_count(fake_server *f, int type);
/* The snapshot stream of generation gen (1: the first taken; each fresh
 * SNAPSHOT_READ takes the next), malloc'd, and its index and term. */
uint8_t *fake_snapshot(fake_server *f, uint32_t gen, uint64_t *len, uint64_t *index,
                       uint64_t *term);
/* CHECK_POINT index of the last check point (0: none). */
uint64_t fake_checkpoint(fake_server *f);
/* The index the last HASH asked about. */
uint64_t fake_hash_index(fake_server *f);

#endif
