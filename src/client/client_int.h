/*
 * libkvclient internals, shared by its files (internal names carry kvc_).
 *
 *   conn.c    endpoints, one TCP connection: connect, handshake, buffers,
 *             frames in and out, the protobuf arena
 *   engine.c  requests ("slots"), the send queue, the loop that connects,
 *             sends, reads and decides what every answer means (leader
 *             finding, retries, sessions, deadlines)
 *   session.c the client's sessions: a write takes one with no other write
 *             in flight (registering more, up to KVC_SESSIONS_MAX)
 *   share.c   threads sharing one client: the mutex, who runs the loop,
 *             the others' waits, requests sent by the calling thread
 *   client.c  the public API (include/kv/client.h) on top of the engine
 *   txn.c     revisions and transactions (kv_txn_*, kv_del_prefix): the
 *             requests are writes like a put, on client.c's sync path
 *   ops.c     membership and operations (member list/add/remove,
 *             transfer-leader, snapshot save, check): the engine, and
 *             connections of their own ("side" connections, conn.c)
 *
 * One loop serves both forms: a synchronous call queues one slot and runs
 * the loop until that slot is done; kv_client_poll runs it until any user
 * request completes. Every request, whatever its form, is retried the same
 * way.
 */
#ifndef KV_CLIENT_CLIENT_INT_H
#define KV_CLIENT_CLIENT_INT_H

#include "kv/client.h"
#include "proto/kv.pb-c.h"

#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KVC_TIMEOUT_MS_DEFAULT 5000u
#define KVC_CONNECT_TIMEOUT_MS_DEFAULT 1000u

/* Endpoints in one list: a cluster has at most KV_NODES_MAX nodes, the rest
 * is room for several addresses per node. */
#define KVC_ENDPOINTS_MAX 64u
/* "host:port" text, as given or as a node names its leader. */
#define KVC_ADDR_BYTES 256u
/* The token's first line. */
#define KVC_TOKEN_BYTES_MAX 4096u

/* Sessions one client keeps (session.c). A write goes in a session with
 * no other write in flight, so that a retry finds its own reply stored (a
 * session keeps only its last); past this many writes in flight they share.
 * 64: the clients of the benchmarks (etcd's too); 1,024 such clients fill a
 * cluster's KV_SESSIONS_MAX. */
#define KVC_SESSIONS_MAX 64u

/* Requests one client holds: the user's (KV_CONN_INFLIGHT_REQUESTS_MAX, the
 * node's limit per connection: asynchronous ones, or synchronous calls of
 * many threads), one operator call's own, a REGISTER per session. */
#define KVC_SLOTS_MAX (KV_CONN_INFLIGHT_REQUESTS_MAX + 1u + KVC_SESSIONS_MAX)
#define KVC_SLOTS_PAGE 64u
#define KVC_SLOT_PAGES ((KVC_SLOTS_MAX + KVC_SLOTS_PAGE - 1) / KVC_SLOTS_PAGE)
#define KVC_NONE UINT16_MAX

/* Pause before trying the next node when none leads (NOTLEADER without an
 * address, UNAVAILABLE, nothing reachable): doubling from min to max, but
 * at most KVC_PAUSE_MS_SEARCH for the first KVC_SEARCH_FAST_MS of a search
 * (a failover: an election takes well under it; a pause of 800 ms there
 * was most of the time a client took to find the new leader). */
#define KVC_PAUSE_MS_MIN 10u
#define KVC_PAUSE_MS_MAX 800u
#define KVC_PAUSE_MS_SEARCH 100u
#define KVC_SEARCH_FAST_MS 2000u
/* Pause before sending again after BUSY: doubling from min to max. */
#define KVC_BUSY_MS_MIN 2u
#define KVC_BUSY_MS_MAX 200u
/* Redirects followed in a row without pausing (two nodes naming each other
 * during an election must not spin). */
#define KVC_REDIRECTS_FREE 3u

/* A connection that received an answer less than this long ago is used as
 * it is; one idle for longer is first checked for a close by the node (a
 * peek), so that a request is not sent into a connection already closed
 * (a write sent there would have an unknown outcome). */
#define KVC_ALIVE_TRUST_MS 1u

/* Output queued on one connection before the loop waits for it to drain. */
#define KVC_WBUF_BYTES_SOFT (4u * 1024u * 1024u)
#define KVC_RBUF_BYTES_MIN (64u * 1024u)
/* The arena keeps at most this much between responses. */
#define KVC_ARENA_BYTES_KEEP (8u * 1024u * 1024u)

typedef struct kvc_endpoint {
    char text[KVC_ADDR_BYTES]; /* "host:port" */
    char host[KVC_ADDR_BYTES];
    char port[8];
} kvc_endpoint;

/* A bump allocator for unpacked responses: reset after each one, so
 * reading an answer allocates nothing in the steady state. */
typedef struct kvc_arena_block kvc_arena_block;
typedef struct kvc_arena {
    uint8_t *base;
    size_t cap, used;
    size_t overflow_bytes;    /* asked of extra blocks since the last reset */
    kvc_arena_block *extra;   /* blocks for what did not fit, freed at reset */
    ProtobufCAllocator alloc; /* hands out from this arena */
} kvc_arena;

/* One TCP connection and its buffers. */
typedef struct kvc_conn {
    int fd; /* -1: none */
    uint8_t *rbuf;
    size_t rcap, rstart, rlen; /* received bytes at rbuf[rstart, rstart + rlen) */
    uint8_t *wbuf;
    size_t wcap, wstart, wlen; /* bytes to send at wbuf[wstart, wstart + wlen) */
    uint64_t out_total;        /* bytes ever queued on this connection */
    uint64_t sent_total;       /* of which the kernel took */
    uint64_t rx_ns;            /* bytes last received after the handshake; 0: none */
    bool drained;              /* the last kvc_conn_fill took less than it had room for */
} kvc_conn;

typedef struct kvc_slot kvc_slot;
typedef struct kvc_result kvc_result;

/* A session of the client (session.c). */
typedef struct kvc_session {
    uint64_t id;     /* the client id REGISTER gave */
    uint64_t seq;    /* the last number given in it */
    uint32_t writes; /* numbered in it and not complete */
} kvc_session;

/* A thread waiting in a synchronous call while another runs the loop
 * (share.c); on its stack. */
typedef struct kvc_waiter {
    sem_t sem; /* posted once per link: its request is done, or it runs the loop */
    bool linked;
    struct kvc_waiter *prev, *next;
} kvc_waiter;
/* Internal completion: the slot is still valid, r may be NULL. */
typedef void (*kvc_done_fn)(kv_client *c, kvc_slot *s, int status, const Kv__Response *r);

/* One request, from the call that queued it until it completes. */
struct kvc_slot {
    uint64_t id;          /* 0: free; else the Request id, kept over resends */
    uint64_t deadline_ns; /* completes past it */
    uint64_t seq;         /* writes: number in session (0: not given yet) */
    uint64_t session;     /* writes: the session seq belongs to */
    uint64_t frame_end;   /* on the wire: conn.out_total after its frame; 0: not */
    uint64_t order;       /* writes: when numbered (the client's count): resend order */
    Kv__Request__Type type;
    bool stale;                 /* reads answered by any node */
    bool has_expected;          /* CAS: expected given (may be empty) */
    bool user;                  /* an async request of the user (counts in inflight) */
    bool queued;                /* in the send queue */
    bool unknown;               /* a write or change that may be applied (sent, answer lost) */
    bool busy;                  /* the last answer was BUSY */
    uint32_t limit;             /* SCAN */
    uint64_t lease;             /* PUT, CAS_ABSENT: attach; LEASE_REVOKE, LEASE_KEEPALIVE */
    int64_t ttl;                /* LEASE_GRANT */
    const char *name, *address; /* MEMBER_ADD, MEMBER_REMOVE, TRANSFER_LEADER */
    const uint8_t *key, *value, *expected, *start_after;
    uint32_t key_len, value_len, expected_len, start_after_len;
    const Kv__Txn *txn; /* TXN: borrowed from the kv_txn for the call */
    uint8_t *own; /* copies of the data for async requests (reused) */
    size_t own_cap;
    kvc_done_fn done;      /* internal requests */
    kv_done_fn user_cb;    /* user requests */
    void *arg;             /* user_cb's argument, or the kvc_result */
    uint16_t index;        /* position in the pool */
    uint16_t qprev, qnext; /* send queue links (KVC_NONE) */
};

/* What a synchronous call gets back. Owned by the caller's frame; malloc'd
 * members are handed to the user or freed by the API function. */
struct kvc_result {
    bool done;
    int status;
    bool want_current; /* CAS: keep the current value on COMPARE */
    void *value;       /* GET value, CAS current */
    size_t value_len;
    bool present;
    uint64_t index;
    kv_pair *pairs;
    size_t count;
    bool more;
    char *line; /* STATUS */
    /* STATUS with want_members: who answered and what it knows, instead
     * of the line */
    bool want_members;
    bool unknown;                  /* a change that may have been applied before a retry */
    char endpoint[KVC_ADDR_BYTES]; /* where the answer came from */
    char node_name[KV_NODE_NAME_BYTES_MAX + 1];
    char leader_name[KV_NODE_NAME_BYTES_MAX + 1];
    bool transferring;  /* it leads and hands leadership over */
    kv_member *members; /* malloc'd */
    size_t members_count;
    bool has_membership;
    uint64_t hash; /* CHECK_POINT */
    kv_keyinfo info;        /* GET */
    bool want_infos;        /* SCAN: fill infos */
    kv_keyinfo *infos;      /* SCAN: malloc'd, parallel to pairs */
    bool succeeded;         /* TXN */
    kv_txn_result *results; /* TXN: malloc'd (kv_txn_results_free) */
    size_t results_count;
    uint64_t deleted; /* DELETE_PREFIX, LEASE_REVOKE: keys deleted */
    bool more_deleted;
    uint64_t lease;   /* LEASE_GRANT: the new lease */
    kv_lease *leases; /* LEASE_KEEPALIVE, LEASE_LIST: malloc'd */
    size_t leases_count;
    char detail[256];   /* the node's words on a failure (kv_errstr of the caller) */
    kvc_waiter *waiter; /* the calling thread's, while it waits (share.c) */
};

/* The thread's error detail (kv_errstr, api.c): cleared at the start of
 * each public call; set where a failure has more to say than its code.
 * kvc_errstr_set returns rc, so `return kvc_errstr_set(KV_EINVAL, ...)`. */
void kvc_errstr_clear(void);
int kvc_errstr_set(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

struct kv_client {
    uint32_t timeout_ms, connect_timeout_ms;
    char *token;      /* NULL: none */
    char *cluster_id; /* from the first HelloReply; NULL before */

    kvc_endpoint eps[KVC_ENDPOINTS_MAX];
    size_t eps_count;
    size_t next_ep;        /* the next endpoint to try */
    kvc_endpoint redirect; /* a leader named by a node, tried first */
    bool has_redirect;
    uint32_t redirects_in_row;     /* followed without a success */
    char cur_text[KVC_ADDR_BYTES]; /* the connected endpoint */
    long cur_ep;                   /* its index in eps, -1: a redirect */
    bool is_leader;

    kvc_conn conn;
    uint64_t conn_gen;   /* bumped at every drop */
    bool drop_pending;   /* drop the connection once its input is read */
    size_t wire_count;   /* requests on the wire, waiting for an answer */
    uint64_t last_rx_ns; /* bytes last received (or the wire got busy) */
    kvc_arena arena;

    uint64_t next_id;
    kvc_session sessions[KVC_SESSIONS_MAX]; /* session.c */
    uint32_t sessions_count;
    uint32_t registering; /* REGISTERs in flight */
    uint64_t order;       /* writes numbered so far */

    kvc_slot *pages[KVC_SLOT_PAGES];
    uint16_t free_list[KVC_SLOTS_MAX];
    uint16_t free_count;
    uint16_t slots_hw; /* slots ever created */
    uint16_t qhead, qtail;
    size_t used;          /* slots in use */
    size_t user_inflight; /* of which async requests of the user */
    uint32_t max_inflight;
    uint64_t completed_user; /* user requests ever completed */
    uint64_t min_deadline_ns;

    uint64_t reconnect_ns;  /* no connection attempt before */
    uint32_t pause_ms;      /* next pause before trying another node */
    uint64_t search_ns;     /* the first pause since the last success; 0: none */
    uint64_t send_pause_ns; /* no sending before (after BUSY) */
    uint32_t busy_ms;
    bool in_loop; /* the loop runs: callbacks must not re-enter */

    /* threads (share.c): mu guards everything above and below */
    pthread_mutex_t mu; /* recursive: a callback of the loop may queue more */
    bool mu_ok;
    int lock_depth;
    int wake_fd;     /* eventfd the runner polls beside the socket; -1: none */
    bool has_runner; /* a thread runs the loop */
    bool polling;    /* ... and waits in poll() without the mutex */
    bool connecting; /* ... and connects without the mutex */
    kvc_waiter *waiters_head, *waiters_tail;
    uint32_t calls; /* synchronous calls in progress */
    bool exclusive; /* an operator call (or the async form) has the client */
    uint32_t exclusive_depth;
    pthread_t exclusive_tid;
};

/* ---- conn.c ---- */
int kvc_endpoint_parse(const char *text, size_t len, kvc_endpoint *ep);
int kvc_endpoints_parse(const char *list, kvc_endpoint *eps, size_t *count);
void kvc_arena_init(kvc_arena *a);
void kvc_arena_reset(kvc_arena *a);
void kvc_arena_free(kvc_arena *a);
void kvc_conn_init(kvc_conn *k);
void kvc_conn_close(kvc_conn *k); /* closes the socket, keeps the buffers */
void kvc_conn_free(kvc_conn *k);
/* Connects and says Hello; 0, KV_EAUTH/KV_ECONFIG/KV_EVERSION (refused),
 * or KV_EUNAVAILABLE (not reached, or it spoke nonsense). */
int kvc_conn_open(kv_client *c, kvc_conn *k, const kvc_endpoint *ep, uint64_t deadline_ns);
/* Appends msg as one frame to the output; KV_ENOMEM. */
int kvc_conn_queue(kvc_conn *k, uint8_t type, const ProtobufCMessage *msg);
/* Sends what the kernel takes now; 0 or KV_ECLOSED. */
int kvc_conn_flush(kvc_conn *k);
/* Reads what is there; >0 bytes, 0 nothing yet, KV_ECLOSED. k->drained:
 * it read less than it had room for (nothing more was there then). */
int kvc_conn_fill(kvc_conn *k);
/* The next whole frame's payload: 1 (*type, *payload, *len set), 0 more
 * bytes needed, or KV_EPROTO/KV_ECORRUPT/KV_ETOOBIG/KV_EVERSION/KV_ENOMEM
 * (close the connection). kvc_conn_consume drops it. */
int kvc_conn_frame(kvc_conn *k, uint8_t *type, const uint8_t **payload, uint32_t *len);
void kvc_conn_consume(kvc_conn *k, uint32_t len);
/* Waits for the next frame until deadline: 1, or negative as above and
 * KV_ETIMEOUT. */
int kvc_conn_wait_frame(kvc_conn *k, uint64_t deadline_ns, uint8_t *type, const uint8_t **payload,
                        uint32_t *len);
/* True unless the node closed the connection: without a system call when
 * an answer came less than KVC_ALIVE_TRUST_MS before now, else a peek. */
bool kvc_conn_alive_at(const kvc_conn *k, uint64_t now_ns);
/* Sends all output until deadline: 0, KV_ECLOSED, KV_ETIMEOUT. */
int kvc_conn_send_all(kvc_conn *k, uint64_t deadline_ns);
/* poll() for ms (-1 would block forever: callers never pass it). */
int kvc_wait_ms(uint64_t until_ns, uint64_t now_ns);

/* ---- engine.c ---- */
kvc_slot *kvc_slot_alloc(kv_client *c);
kvc_slot *kvc_slot_at(const kv_client *c, uint16_t i);
/* Gives back a slot never started. */
void kvc_slot_release(kv_client *c, kvc_slot *s);
void kvc_queue_push(kv_client *c, kvc_slot *s);
/* Runs the loop until `wait` is done (a synchronous call) or, wait NULL,
 * until a user request completes or until_ns passes. Returns the number of
 * user requests completed. */
int kvc_loop(kv_client *c, uint64_t until_ns, const kvc_result *wait);
/* Connects to some node, trying every endpoint once; as kvc_conn_open. */
int kvc_connect_any(kv_client *c, uint64_t deadline_ns);
void kvc_drop(kv_client *c);
/* Between calls: leaves the current node for address (a leader named by a
 * STATUS; at once for the first few in a row) or, NULL, for the next
 * endpoint after a pause. */
void kvc_move(kv_client *c, const char *address);
void kvc_slots_free(kv_client *c);
bool kvc_is_write(Kv__Request__Type t);
/* Writes and membership changes: sent and unanswered, the outcome is
 * unknown (TIMEOUT, never a "failed" code). */
bool kvc_is_change(Kv__Request__Type t);
/* Packs what is queued and sends what the kernel takes (a thread other than
 * the runner, while the runner polls): 0 or KV_ECLOSED. */
int kvc_send_queued(kv_client *c);

/* ---- session.c ---- */
/* The session for a write: one with no write in flight, else the least
 * busy (NULL: none yet). *want_register: start a REGISTER (for this write
 * when none exists, else for the next). */
kvc_session *kvc_session_pick(kv_client *c, bool *want_register);
/* Numbers s (a write) in x. */
void kvc_session_number(kv_client *c, kvc_session *x, kvc_slot *s);
/* s (numbered or not) no longer holds its number: complete, or to be
 * numbered again (BUSY: never stored). */
void kvc_session_release(kv_client *c, kvc_slot *s);
/* A session REGISTER made; one the cluster expired. */
void kvc_session_add(kv_client *c, uint64_t id);
void kvc_session_drop(kv_client *c, uint64_t id);

/* ---- share.c ---- */
int kvc_share_init(kv_client *c); /* 0 or KV_ENOMEM */
void kvc_share_free(kv_client *c);
void kvc_lock(kv_client *c);
void kvc_unlock(kv_client *c);
/* The calling thread runs c's loop (so it is in a callback of it). */
bool kvc_in_callback(const kv_client *c);
/* The runner lets go of the mutex to block (polling: in poll() on the
 * connection, where other threads may send) and takes it back. */
void kvc_io_release(kv_client *c, bool polling);
void kvc_io_reacquire(kv_client *c);
void kvc_wake_drain(kv_client *c);
/* A synchronous call: begin takes the mutex (0) or says why not (EINVAL
 * from a callback, BUSY beside the other forms or past max_inflight);
 * abort gives it back unused; run (the request queued) runs the loop or
 * waits until the request is done and returns without the mutex; complete
 * is the request's end, from the loop (res filled in: the last access). */
int kvc_share_begin(kv_client *c);
void kvc_share_abort(kv_client *c);
void kvc_share_run(kv_client *c, kvc_result *res);
void kvc_share_complete(kv_client *c, kvc_result *res);
/* Operator calls: the client alone (KV_EBUSY while other threads' calls
 * run; theirs are refused meanwhile). Nests on one thread. */
int kvc_exclusive_begin(kv_client *c);
void kvc_exclusive_end(kv_client *c);
/* kv_client_poll's loop (mutex held): KV_EINVAL from a callback, KV_EBUSY
 * beside other threads' calls, else the number completed. */
int kvc_share_poll(kv_client *c, uint64_t until_ns);

/* ---- conn.c: one request on a connection of its own ---- */
/* Opens k to ep (connect_timeout_ms, within deadline) with the handshake. */
int kvc_side_open(kv_client *c, kvc_conn *k, const kvc_endpoint *ep, uint64_t deadline_ns);
/* Sends q (its id is set here) and waits for its answer: 0 and *r (in
 * c->arena: kvc_arena_reset once read), KV_ECLOSED when the connection
 * failed, KV_ETIMEOUT at the deadline, KV_ENOMEM. Stray answers are
 * skipped. */
int kvc_side_call(kv_client *c, kvc_conn *k, Kv__Request *q, uint64_t deadline_ns,
                  Kv__Response **r);
/* A request id no slot uses (the slot index bits all set). */
uint64_t kvc_side_id(kv_client *c);

/* ---- lease.c ---- */
/* The lease fields of r into res (GRANT, REVOKE, KEEPALIVE, LIST): 0 or
 * KV_ENOMEM. */
int kvc_lease_result(const kvc_slot *s, const Kv__Response *r, kvc_result *res);

/* ---- client.c, for ops.c and lease.c ---- */
/* A request for a synchronous call, or NULL and *rc. */
kvc_slot *kvc_sync_begin(kv_client *c, Kv__Request__Type type, kvc_result *res, int *rc);
/* Runs s to its end (deadline_ns: 0 for the client's timeout from now). */
int kvc_sync_run(kv_client *c, kvc_slot *s, kvc_result *res, uint64_t deadline_ns);
/* Every call with a key starts here (the error detail is cleared): 0,
 * KV_EINVAL (NULL or empty), KV_ETOOBIG; and a value's check. */
int kvc_check_key(const void *key, size_t len);
int kvc_check_value(const void *v, size_t len);
/* kv_cas_ex that also attaches the key to lease (0: none); expected NULL:
 * create if absent. */
int kvc_cas(kv_client *c, const void *key, size_t key_len, const void *expected,
            size_t expected_len, const void *value, size_t value_len, uint64_t lease,
            void **current, size_t *current_len, bool *present);

/* ---- txn.c, for client.c ---- */
/* A key's revisions from a KeyValue (NULL: zeros). */
void kvc_keyinfo_of(const Kv__KeyValue *kv, kv_keyinfo *info);
/* TXN's answer into res (succeeded, results): 0 or KV_ENOMEM. */
int kvc_txn_copy(const Kv__Response *r, kvc_result *res);

#endif /* KV_CLIENT_CLIENT_INT_H */
