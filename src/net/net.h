/*
 * src/net: kvd's network layer on one libuv loop. One listening port takes
 * both clients and peers; every connection starts with a handshake (kv.Hello
 * from the connecting side, kv.HelloReply back) and then carries frames
 * (frame.h).
 *
 *   clients   send REQUEST frames, get RESPONSE frames (any order, matched by
 *             Request.id). Up to conn_inflight_max requests may wait for an
 *             answer per connection; past it net answers BUSY itself.
 *   peers     each node opens one outgoing link to every other node and sends
 *             only RAFT frames on it (kv.RaftBatch); what a peer says to us
 *             arrives on the link it opened. Links reconnect with exponential
 *             backoff (50 ms doubling to 2 s) and +-25% jitter.
 *
 * Handshake checks (server side), each refusal answered with a HelloReply
 * whose reason the other side logs, then the connection is closed:
 *   version != KV_WIRE_VERSION              VERSION
 *   cluster_id given and not ours           CONFIG  "cluster id X, this node is in Y"
 *   token configured and not matching       AUTH
 *   node_name given but not a known peer    CONFIG  (net_peer_add tells who is known)
 * A connection that sends nothing valid within 5 s of accepting is closed.
 *
 * Faults: a frame failing kv_frame_header_decode or kv_frame_payload_check,
 * a frame type not allowed on that connection (e.g. RAFT from a client), a
 * body that does not unpack, or a Raft message whose `from` is not the node
 * the connection's Hello named (a peer speaks only for itself; counted in
 * raft_from_bad too, and no message of that frame is delivered) closes that
 * connection, is logged once with its code word and the remote address, and
 * is counted (net_stats frames_bad). The loop keeps serving everyone else.
 *
 * Limits (include/kv/limits.h): a frame over frame_max closes the
 * connection; conns_max client connections at once: the Hello of one more
 * client is answered with code BUSY (and a reason naming the limit), then
 * the connection is closed (counted in conns_refused). Peer links and
 * connections still in their handshake have KV_CONNS_RESERVE more, so a
 * node full of clients still takes its peers; past conns_max +
 * KV_CONNS_RESERVE a connection is closed as soon as it is accepted
 * (counted too). Bytes queued for output per connection over
 * conn_output_max: a client that does not read is disconnected (counted);
 * a peer link whose queue is full drops the newest messages instead (Raft
 * resends).
 *
 * Threads: everything here runs on the loop's thread, including every
 * callback.
 */
#ifndef KV_NET_NET_H
#define KV_NET_NET_H

#include "proto/kv.pb-c.h"
#include "raft/raft.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct net net;
typedef struct net_conn net_conn; /* an accepted client connection */

typedef struct net_config {
    uv_loop_t *loop;
    const char *listen_addr; /* "host:port" (IPv4 or [IPv6]:port) */
    const char *node_name;   /* this node, sent in our Hello */
    const char *cluster_id;  /* ours; sent in Hello and HelloReply */
    const char *token;       /* NULL or "": no token configured */
    uint32_t conns_max;         /* client connections; default KV_CONNS_MAX */
    uint32_t conn_inflight_max; /* default KV_CONN_INFLIGHT_REQUESTS_MAX */
    uint64_t conn_output_max;   /* default KV_CONN_OUTPUT_BYTES_MAX */
    uint32_t frame_max;         /* default KV_FRAME_BYTES_MAX */
    void *ctx;                  /* passed to the callbacks */
    /* A client's request. The callee owns req (free it with
     * kv__request__free_unpacked(req, NULL)) and must answer it exactly
     * once with net_reply(), now or later (c stays valid until then: take
     * net_conn_ref() to keep it past this call). */
    void (*on_request)(void *ctx, net_conn *c, Kv__Request *req);
    /* One Raft message from peer `from_name` (already the wire's kv.RaftMessage
     * decoded into m; m and what it points to live only for the call;
     * raft_step copies what it keeps). */
    void (*on_raft)(void *ctx, const char *from_name, const raft_msg *m);
} net_config;

/* Fills cfg's limits with the defaults (other fields zero). */
void net_config_default(net_config *cfg);

/* Binds and listens. KV_EINVAL for a bad address (logged, naming it),
 * KV_EEXIST when the port is in use (EADDRINUSE), KV_EIO otherwise.
 * *out is the caller's; net_close() it. */
int net_open(const net_config *cfg, net **out);

/* Closes every connection and the listener; returns after their close
 * callbacks ran (it runs the loop until then; the caller's own handles may
 * fire meanwhile, and net calls on n then are harmless: replies give
 * KV_ECLOSED, Raft messages are dropped). Frees n. A net_conn the caller
 * still references outlives n, closed: net_reply() gives KV_ECLOSED and the
 * last net_conn_unref() frees it. Not from one of n's callbacks. */
void net_close(net *n);

/* Stops accepting new connections (shutdown begins); existing ones stay. */
void net_stop_listening(net *n);

/* Output (net_reply, net_send_raft, handshakes) is queued per connection and
 * written with one write per connection per flush: net flushes in its own
 * uv_prepare and uv_check callbacks, and while anything is queued it keeps
 * an idle handle active so the loop never blocks with output unsent. What
 * the socket takes at once is done (no callback, no extra loop turn); only
 * a remainder waits in a uv_write for the socket to drain.
 * A caller that wants its output on the wire at once (e.g. at the end of its
 * own prepare callback, after a Ready's messages) may flush now. */
void net_flush(net *n);

/* ---- clients ---------------------------------------------------------- */

/* Answers one request. resp->id must be the request's id. When the
 * connection has closed meanwhile, the answer is dropped (returns
 * KV_ECLOSED). When the output queue would pass conn_output_max the
 * connection is closed (KV_EBUSY, counted). The response is packed at once;
 * the caller keeps resp. */
int net_reply(net_conn *c, const Kv__Response *resp);

/* One more Response to a request already answered (a stream: WATCH);
 * as net_reply otherwise, without counting an answer. */
int net_push(net_conn *c, const Kv__Response *resp);
/* Bytes queued for output on c (0 once closed). */
size_t net_conn_queued(const net_conn *c);

/* Keeps c allocated after its request callback returned (for an answer
 * that comes later, e.g. after commit). Every ref needs one unref. */
void net_conn_ref(net_conn *c);
void net_conn_unref(net_conn *c);
bool net_conn_closed(const net_conn *c);
/* "ip:port" of the client, for logs. */
const char *net_conn_peer_addr(const net_conn *c);

/* ---- peers ------------------------------------------------------------ */

/* Declares peer id (nonzero, not us) with its name and "host:port" and
 * starts its outgoing link. Known peer names are accepted in Hellos.
 * Adding an id again updates its address (the link reconnects). Returns 0,
 * KV_EINVAL (bad address or name: empty, ours, or another id's), KV_ENOMEM.
 * Addresses are numeric (IPv4, [IPv6]) or "localhost": no DNS on the loop. */
int net_peer_add(net *n, uint64_t id, const char *name, const char *addr);
/* Forgets peer id: closes its link and its connections to us; its Hellos
 * are refused from then on. */
void net_peer_remove(net *n, uint64_t id);

/* Queues msgs for their peers (msgs[i].to), as one kv.RaftBatch frame per
 * peer per call (more when one would pass KV_FRAME_BYTES_MAX; a single
 * message over it is dropped and logged TOOBIG). Messages to an unknown or
 * unconnected peer, or to ourselves (to == from), are dropped and counted
 * (Raft resends); nothing here blocks. The caller keeps msgs. */
void net_send_raft(net *n, const raft_msg *msgs, size_t count);

/* Whether the outgoing link to peer id is connected (handshake done). */
bool net_peer_connected(const net *n, uint64_t id);

/* ---- counters ---------------------------------------------------------- */

#define NET_REPLY_CODES 32u /* replies_by_code[-code]: 0 is OK (and unknown codes) */

typedef struct net_stats {
    uint64_t conns_accepted;
    uint64_t conns_open;       /* clients + inbound peer links + handshakes now */
    uint64_t clients_open;     /* client connections now (past their Hello) */
    uint64_t conns_refused;    /* clients over conns_max (BUSY), or over the reserve */
    uint64_t hello_refused;    /* version, cluster id, token, unknown peer */
    uint64_t frames_bad;       /* header, checksum, type, undecodable body */
    uint64_t frames_toobig;    /* over frame_max */
    uint64_t output_overflows; /* clients disconnected for not reading */
    uint64_t requests;         /* REQUEST frames taken */
    uint64_t busy_inflight;    /* answered BUSY for conn_inflight_max */
    uint64_t raft_msgs_sent;
    uint64_t raft_msgs_dropped; /* peer unknown, down, or its queue full */
    uint64_t raft_msgs_received;
    uint64_t raft_from_bad; /* a Raft message whose from is not the Hello's node */
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t replies_by_code[NET_REPLY_CODES]; /* answers sent, by -code */
} net_stats;

void net_get_stats(const net *n, net_stats *out);

/* ---- raft_msg <-> kv.RaftMessage (raftwire.c) ---------------------------- */

/* Fills pb (kv__raft_message__init'ed by the callee) from m, pointing into
 * m's memory: valid while m is. Entries go in ents[0..m->entries_count)
 * and their pointers in ent_ptrs (caller-provided arrays of that size). */
void raftwire_to_pb(const raft_msg *m, Kv__RaftMessage *pb, Kv__RaftEntry *ents,
                    Kv__RaftEntry **ent_ptrs);
/* Fills m from pb, pointing into pb's memory; m->entries is malloc'd
 * (free(m->entries) after use; NULL when none). KV_EPROTO when pb is not a
 * valid message (too many members, entries without data where needed),
 * KV_ENOMEM. */
int raftwire_from_pb(const Kv__RaftMessage *pb, raft_msg *m);

#endif /* KV_NET_NET_H */
