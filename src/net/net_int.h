/*
 * Internals of src/net, shared by net.c (the net, listener, flushing),
 * net_sock.c (one TCP connection's buffers, frame reading, batched writes),
 * net_conn.c (accepted connections: handshake, requests, inbound Raft) and
 * net_peer.c (outgoing peer links). Nothing here is for other modules.
 *
 * Handles and memory: every libuv handle net opens is counted in
 * net.handles_open and released in its close callback; net_close() runs the
 * loop until the count is 0. A net_conn is freed when its two handles are
 * closed and nobody holds a reference; a net_link (one attempt of a peer
 * link) when its handle is closed; a net_peer when its timer is closed.
 */
#ifndef KV_NET_NET_INT_H
#define KV_NET_NET_INT_H

#include "net/frame.h"
#include "net/net.h"

#include "kv/limits.h"

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define NET_HELLO_TIMEOUT_MS 5000u         /* accept -> Hello; connect -> HelloReply */
#define NET_READ_CHUNK_BYTES (64u * 1024u) /* one read(2) at most, shared scratch */
#define NET_BUF_KEEP_BYTES (256u * 1024u)  /* output buffers above it are freed once empty */
#define NET_BACKOFF_MIN_MS 50u
#define NET_BACKOFF_MAX_MS 2000u
/* A peer link whose sent bytes stay unacknowledged this long is dropped by
 * the kernel (TCP_USER_TIMEOUT) and redialled with backoff. Without it a
 * link kept through a partition sat in TCP's retransmission backoff, which
 * doubles up to minutes: after the heal a follower caught up only ~20 s
 * later (tests/jepsen-lite, partition-long). Above a few heartbeat rounds
 * and an fsync stall, far below an operator's patience. */
#define NET_PEER_USER_TIMEOUT_MS 3000u
#define NET_ADDR_BYTES_MAX 128u   /* "host:port" strings, configured or printed */
#define NET_REASON_BYTES_MAX 256u /* a HelloReply's reason */

/* A growable byte buffer. */
typedef struct net_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} net_buf;

typedef enum net_sock_kind {
    NET_SOCK_CONN = 1, /* accepted: embedded in a net_conn */
    NET_SOCK_LINK = 2, /* our outgoing peer link: embedded in a net_link */
} net_sock_kind;

/* One TCP connection (first member of net_conn and net_link). Output goes
 * into `out`; a flush writes it with one uv_try_write, so everything queued
 * during a loop turn leaves in one write(2) and, when the socket takes it
 * all (the usual case), nothing more happens: no write request, no
 * callback, no extra loop turn. A remainder goes to one uv_write (`out`
 * becomes `wout`, wout_off bytes of it already written) and output queued
 * meanwhile waits for its callback. Input is read
 * into the net's shared scratch buffer when no frame is partly received, or
 * else into rbuf, which holds the partial frame and is freed once empty. */
typedef struct net_sock net_sock;
struct net_sock {
    uv_tcp_t tcp; /* tcp.data = this */
    net *n;       /* NULL once detached (a net_conn kept by refs after net_close) */
    net_sock_kind kind;
    bool closing;           /* uv_close called: no more I/O */
    bool close_after_flush; /* refused Hello: close once the reply is written */
    bool writing;           /* a uv_write of wout is in flight */
    bool dirty;             /* on n's dirty list (out has bytes to write) */
    net_sock *dirty_prev;
    net_sock *dirty_next;
    net_buf out;  /* queued, not yet handed to uv_write */
    net_buf wout; /* being written (by a uv_write: what the socket did not take at once) */
    size_t wout_off; /* bytes of wout written before the uv_write */
    uv_write_t wreq;
    uint8_t *rbuf; /* partial frame, or NULL */
    size_t rlen;
    size_t rcap;
    size_t rframe;                 /* bytes of the partial frame (header seen), else 0 */
    char addr[NET_ADDR_BYTES_MAX]; /* remote "ip:port", for logs */
};

typedef enum net_conn_state {
    NET_CONN_HELLO = 1, /* waiting for Hello */
    NET_CONN_CLIENT,    /* Requests */
    NET_CONN_PEER,      /* RaftBatches from peer_name */
} net_conn_state;

struct net_conn {
    net_sock s; /* first: (net_sock *) <-> (net_conn *) */
    uv_timer_t hello_timer;
    net_conn_state state;
    uint32_t handles;  /* of tcp and hello_timer, not yet closed */
    uint32_t refs;     /* net_conn_ref()s */
    uint32_t inflight; /* requests handed out, not answered */
    bool counted;      /* in stats.conns_open */
    bool client;       /* in stats.clients_open */
    char *peer_name;   /* NET_CONN_PEER: malloc'd */
    net_conn *prev;    /* n->conns: every conn attached to n */
    net_conn *next;
};

typedef struct net_peer net_peer;

/* One attempt of an outgoing link (a new one per connect). */
typedef struct net_link {
    net_sock s; /* first */
    uv_connect_t creq;
    net_peer *peer; /* NULL once the peer let go of it (closing) */
} net_link;

typedef enum net_link_state {
    NET_LINK_CONNECTING = 1,
    NET_LINK_HELLO,   /* connected, Hello sent, waiting for HelloReply */
    NET_LINK_UP,      /* handshake done: RAFT frames go out */
    NET_LINK_BACKOFF, /* waiting to reconnect */
} net_link_state;

struct net_peer {
    net *n;
    uint64_t id;
    char name[KV_NODE_NAME_BYTES_MAX + 1];
    char addr[NET_ADDR_BYTES_MAX];
    struct sockaddr_storage sa;
    net_link *link; /* the current attempt, or NULL in backoff */
    net_link_state state;
    uint32_t backoff_ms; /* the next backoff before jitter */
    uv_timer_t timer;    /* handshake timeout, or backoff */
    net_peer *prev;
    net_peer *next;
};

struct net {
    net_config cfg; /* strings point at the copies below */
    char *listen_addr;
    char *node_name;
    char *cluster_id;
    char *token;
    uv_tcp_t listener;
    bool listening;
    uv_prepare_t prepare; /* flush before the loop blocks */
    uv_check_t check;     /* flush after the loop's I/O callbacks */
    uv_idle_t idle;       /* active while output is unflushed: keeps poll from blocking */
    bool idle_on;
    bool closing;          /* net_close() began */
    uint64_t handles_open; /* libuv handles of ours not yet closed */
    net_sock *dirty;       /* socks with output to write */
    net_conn *conns;
    net_peer *peers;
    uint8_t *scratch; /* NET_READ_CHUNK_BYTES, shared by every read */
    uint64_t rng;     /* xorshift64* state for backoff jitter */
    uint64_t busy_logged_ms; /* loop time of the last "refused" line */
    uint64_t busy_quiet;     /* refusals not logged since */
    net_stats stats;
};

/* ---- net.c ---- */
/* Parses "host:port" (IPv4, [IPv6], "localhost"; an empty host and port 0
 * only when for_listen). 0 or KV_EINVAL. */
int net__parse_addr(const char *s, bool for_listen, struct sockaddr_storage *out);
/* "ip:port" of sa into out. */
void net__format_addr(const struct sockaddr *sa, char *out, size_t cap);
/* A pseudo-random number (jitter only). */
uint64_t net__rand(net *n);
/* Counts a handle closed; its close callbacks call this. */
void net__handle_closed(net *n);

/* ---- net_sock.c ---- */
void net__sock_init(net *n, net_sock *s, net_sock_kind kind);
int net__sock_start_read(net_sock *s);
/* Sets TCP_USER_TIMEOUT on s (connected); a failure is logged, not fatal. */
void net__sock_user_timeout(net_sock *s, unsigned ms);
/* Bytes queued for output (including what a write in flight has left). */
size_t net__sock_queued(const net_sock *s);
/* Packs msg as a frame of type (frame_bytes = kv_frame_size(msg)) at the end
 * of s's output; written at the next flush. 0 or KV_ENOMEM. */
int net__sock_queue_frame(net_sock *s, uint8_t type, const ProtobufCMessage *msg,
                          size_t frame_bytes);
/* Stops I/O and uv_close()s the tcp handle with cb. Idempotent. */
void net__sock_close(net_sock *s, uv_close_cb cb);
/* Frees the buffers (after the close callback). */
void net__sock_free_bufs(net_sock *s);
/* True when no more frames should be handled (closing or refusing). */
bool net__sock_done(const net_sock *s);
/* Logs a bad frame (word, remote address, what), counts it (frames_toobig
 * for KV_ETOOBIG, else frames_bad) and closes the connection. */
void net__sock_bad(net_sock *s, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- net_conn.c ---- */
void net__conn_accept(net *n);
void net__conn_on_frame(net_conn *c, const kv_frame_header *h, const uint8_t *payload);
/* Closes c (its handles close asynchronously). */
void net__conn_close(net_conn *c);
/* Closes every inbound connection from peer name (except keep). */
void net__conns_close_peer(net *n, const char *name, const net_conn *keep);
/* 0 when a received Hello is acceptable (net.h "Handshake checks"), else
 * the code and, in reason[cap], why. Reads n's name, cluster id, token and
 * peer list only (the Hello fuzz target calls it on a bare net). */
int net__hello_check(net *n, const Kv__Hello *hello, char *reason, size_t cap);

/* ---- net_peer.c ---- */
void net__link_on_frame(net_link *l, const kv_frame_header *h, const uint8_t *payload);
/* The link failed (EOF, error, bad frame): close it and back off. */
void net__link_fail(net_link *l);
net_peer *net__peer_by_name(net *n, const char *name);
/* Closes every peer link and timer (net_close). */
void net__peers_close_all(net *n);

#endif /* KV_NET_NET_INT_H */
