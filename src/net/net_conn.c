/* Accepted connections: the handshake, client requests and answers, and
 * inbound Raft from peers. See net.h and net_int.h. */
#include "net/net_int.h"

#include "common/logging.h"
#include "kv/errors.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char busy_detail[] = "too many requests in flight on this connection";

/* ---- lifetime ---- */

static void conn_link(net *n, net_conn *c) {
    c->prev = NULL;
    c->next = n->conns;
    if (n->conns != NULL)
        n->conns->prev = c;
    n->conns = c;
}

static void conn_unlink(net *n, net_conn *c) {
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        n->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void conn_maybe_free(net_conn *c) {
    if (c->handles > 0 || c->refs > 0)
        return;
    if (c->s.n != NULL)
        conn_unlink(c->s.n, c);
    net__sock_free_bufs(&c->s);
    free(c->peer_name);
    free(c);
}

static void conn_tcp_closed(uv_handle_t *h) {
    net_conn *c = h->data;
    assert(c->handles > 0);
    c->handles--;
    net__handle_closed(c->s.n);
    conn_maybe_free(c);
}

static void conn_timer_closed(uv_handle_t *h) {
    conn_tcp_closed(h); /* same bookkeeping; h->data is c for both */
}

void net__conn_close(net_conn *c) {
    if (c->s.closing)
        return;
    net *n = c->s.n;
    if (c->counted) {
        assert(n->stats.conns_open > 0);
        n->stats.conns_open--;
        c->counted = false;
    }
    if (c->client) {
        assert(n->stats.clients_open > 0);
        n->stats.clients_open--;
        c->client = false;
    }
    uv_timer_stop(&c->hello_timer);
    uv_close((uv_handle_t *)&c->hello_timer, conn_timer_closed);
    net__sock_close(&c->s, conn_tcp_closed);
}

void net__conns_close_peer(net *n, const char *name, const net_conn *keep) {
    for (net_conn *c = n->conns; c != NULL; c = c->next)
        if (c != keep && c->state == NET_CONN_PEER && !c->s.closing &&
            strcmp(c->peer_name, name) == 0)
            net__conn_close(c);
}

void net_conn_ref(net_conn *c) {
    assert(c->refs < UINT32_MAX);
    c->refs++;
}

void net_conn_unref(net_conn *c) {
    assert(c->refs > 0);
    c->refs--;
    conn_maybe_free(c);
}

bool net_conn_closed(const net_conn *c) {
    return c->s.n == NULL || net__sock_done(&c->s);
}

const char *net_conn_peer_addr(const net_conn *c) {
    return c->s.addr;
}

/* Connections refused for a limit: one log line a second at most (a
 * thousand clients retrying must not flood the log); the count is in
 * conns_refused. */
static void conn_log_busy(net *n, const char *addr, const char *why) {
    uint64_t now = uv_now(n->cfg.loop);
    if (n->busy_logged_ms != 0 && now - n->busy_logged_ms < 1000) {
        n->busy_quiet++;
        return;
    }
    KV_LOGW("BUSY", "connection from %s refused: %s (%" PRIu64 " more since the last line)", addr,
            why, n->busy_quiet);
    n->busy_logged_ms = now;
    n->busy_quiet = 0;
}

static void hello_timeout_cb(uv_timer_t *t) {
    net_conn *c = t->data;
    KV_LOGW("PROTOCOL", "connection from %s: no Hello within %u ms; closing", c->s.addr,
            NET_HELLO_TIMEOUT_MS);
    net__conn_close(c);
}

void net__conn_accept(net *n) {
    net_conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        KV_LOGE("NOMEM", "no memory for a new connection");
        return; /* libuv holds the connection until the next accept */
    }
    net__sock_init(n, &c->s, NET_SOCK_CONN);
    uv_timer_init(n->cfg.loop, &c->hello_timer);
    c->hello_timer.data = c;
    n->handles_open++;
    c->handles = 2;
    c->state = NET_CONN_HELLO;
    conn_link(n, c);
    int rc = uv_accept((uv_stream_t *)&n->listener, (uv_stream_t *)&c->s.tcp);
    if (rc != 0) {
        KV_LOGW("IO", "accept on %s: %s", n->listen_addr, uv_strerror(rc));
        net__conn_close(c);
        return;
    }
    struct sockaddr_storage sa;
    int sa_len = sizeof sa;
    if (uv_tcp_getpeername(&c->s.tcp, (struct sockaddr *)&sa, &sa_len) == 0)
        net__format_addr((struct sockaddr *)&sa, c->s.addr, sizeof c->s.addr);
    else
        snprintf(c->s.addr, sizeof c->s.addr, "?");
    /* Clients are counted at their Hello (answered BUSY past conns_max);
     * here only the hard cap that keeps room for peers. */
    if (n->stats.conns_open >= (uint64_t)n->cfg.conns_max + KV_CONNS_RESERVE) {
        n->stats.conns_refused++;
        char why[96];
        snprintf(why, sizeof why, "%" PRIu64 " connections open (conns_max %u + %u reserved)",
                 n->stats.conns_open, n->cfg.conns_max, KV_CONNS_RESERVE);
        conn_log_busy(n, c->s.addr, why);
        net__conn_close(c);
        return;
    }
    c->counted = true;
    n->stats.conns_open++;
    n->stats.conns_accepted++;
    uv_tcp_nodelay(&c->s.tcp, 1);
    uv_timer_start(&c->hello_timer, hello_timeout_cb, NET_HELLO_TIMEOUT_MS, 0);
    rc = net__sock_start_read(&c->s);
    if (rc != 0) {
        KV_LOGW("IO", "read from %s: %s", c->s.addr, uv_strerror(rc));
        net__conn_close(c);
    }
}

/* ---- output ---- */

/* Queues resp; over conn_output_max the connection is closed (KV_EBUSY). */
static int conn_queue_response(net_conn *c, const Kv__Response *resp) {
    net *n = c->s.n;
    size_t bytes = kv_frame_size(&resp->base);
    if (bytes - KV_FRAME_HEADER_BYTES > KV_FRAME_BYTES_MAX)
        return KV_ETOOBIG;
    size_t queued = net__sock_queued(&c->s);
    if (queued + bytes > n->cfg.conn_output_max) {
        n->stats.output_overflows++;
        KV_LOGW("BUSY",
                "client %s does not read: %zu bytes queued, over conn_output_max %llu; "
                "closing",
                c->s.addr, queued + bytes, (unsigned long long)n->cfg.conn_output_max);
        net__conn_close(c);
        return KV_EBUSY;
    }
    int rc = net__sock_queue_frame(&c->s, KV_FRAME_RESPONSE, &resp->base, bytes);
    if (rc != 0) {
        KV_LOGE("NOMEM", "no memory for a response to %s; closing", c->s.addr);
        net__conn_close(c);
    }
    return rc;
}

int net_reply(net_conn *c, const Kv__Response *resp) {
    assert(c != NULL && resp != NULL);
    assert(c->inflight > 0); /* one answer per request */
    c->inflight--;
    return net_push(c, resp);
}

size_t net_conn_queued(const net_conn *c) {
    assert(c != NULL);
    return net_conn_closed(c) ? 0 : net__sock_queued(&c->s);
}

int net_push(net_conn *c, const Kv__Response *resp) {
    assert(c != NULL && resp != NULL);
    if (net_conn_closed(c))
        return KV_ECLOSED;
    uint32_t code = resp->code <= 0 && resp->code > -(int32_t)NET_REPLY_CODES ? (uint32_t)-resp->code
                                                                              : 0;
    c->s.n->stats.replies_by_code[code]++;
    int rc = conn_queue_response(c, resp);
    if (rc == KV_ETOOBIG) {
        KV_LOGE("TOOBIG", "response %llu to %s is over the frame limit; answering TOOBIG",
                (unsigned long long)resp->id, c->s.addr);
        Kv__Response r = KV__RESPONSE__INIT;
        r.id = resp->id;
        r.code = KV_ETOOBIG;
        r.detail = "the response is over the frame limit";
        conn_queue_response(c, &r);
    }
    return rc;
}

/* ---- input ---- */

static bool token_equal(const char *a, const char *b) {
    /* Constant time in the configured token's length. */
    size_t la = strlen(a), lb = strlen(b);
    unsigned diff = la != lb;
    for (size_t i = 0; i < lb; i++)
        diff |= (unsigned)(uint8_t)b[i] ^ (unsigned)(uint8_t)(i < la ? a[i] : 0);
    return diff == 0;
}

int net__hello_check(net *n, const Kv__Hello *hello, char *reason, size_t cap) {
    if (hello->version != KV_WIRE_VERSION) {
        snprintf(reason, cap, "wire version %u, this node speaks %u", hello->version,
                 KV_WIRE_VERSION);
        return KV_EVERSION;
    }
    if (hello->cluster_id[0] != '\0' && strcmp(hello->cluster_id, n->cluster_id) != 0) {
        snprintf(reason, cap, "cluster id %.64s, this node is in %.64s", hello->cluster_id,
                 n->cluster_id);
        return KV_ECONFIG;
    }
    if (n->token[0] != '\0' && !token_equal(hello->token, n->token)) {
        snprintf(reason, cap, "wrong token");
        return KV_EAUTH;
    }
    if (hello->node_name[0] != '\0' && net__peer_by_name(n, hello->node_name) == NULL) {
        snprintf(reason, cap, "node %.64s is not a known peer of %.64s", hello->node_name,
                 n->node_name);
        return KV_ECONFIG;
    }
    return 0;
}

/* A client past conns_max is told BUSY in its HelloReply (then closed):
 * a clear answer it can retry on, not a connection reset. */
static int conn_client_limit(net_conn *c, const Kv__Hello *hello, char *reason, size_t cap) {
    net *n = c->s.n;
    if (hello->node_name[0] != '\0' || n->stats.clients_open < n->cfg.conns_max)
        return 0;
    n->stats.conns_refused++;
    snprintf(reason, cap,
             "%" PRIu64 " client connections open, the limit of node %.64s; retry later or at "
             "another node",
             n->stats.clients_open, n->node_name);
    return KV_EBUSY;
}

static int conn_hello_accepted(net_conn *c, const Kv__Hello *hello) {
    uv_timer_stop(&c->hello_timer);
    if (hello->node_name[0] == '\0') {
        c->state = NET_CONN_CLIENT;
        c->client = true;
        c->s.n->stats.clients_open++;
        return 0;
    }
    c->peer_name = strdup(hello->node_name);
    if (c->peer_name == NULL)
        return KV_ENOMEM;
    c->state = NET_CONN_PEER;
    /* A peer has one link to us: an older one is dead (half-open). */
    net__conns_close_peer(c->s.n, c->peer_name, c);
    KV_LOGI("NET", "peer %s connected from %s", c->peer_name, c->s.addr);
    return 0;
}

static void conn_hello(net_conn *c, const uint8_t *p, size_t len) {
    net *n = c->s.n;
    Kv__Hello *hello = kv__hello__unpack(NULL, len, p);
    if (hello == NULL) {
        net__sock_bad(&c->s, KV_EPROTO, "undecodable Hello");
        return;
    }
    char reason[NET_REASON_BYTES_MAX] = "";
    int code = net__hello_check(n, hello, reason, sizeof reason);
    bool busy = false;
    if (code == 0) {
        code = conn_client_limit(c, hello, reason, sizeof reason);
        busy = code != 0;
    }
    Kv__HelloReply r = KV__HELLO_REPLY__INIT;
    r.code = code;
    r.reason = reason;
    r.node_name = n->node_name;
    r.cluster_id = n->cluster_id;
    r.version = KV_WIRE_VERSION;
    if (busy) {
        conn_log_busy(n, c->s.addr, reason);
    } else if (code != 0) {
        n->stats.hello_refused++;
        KV_LOGW(kv_errword(code), "hello from %s refused: %s", c->s.addr, reason);
    } else if (conn_hello_accepted(c, hello) != 0) {
        kv__hello__free_unpacked(hello, NULL);
        KV_LOGE("NOMEM", "no memory for the connection from %s; closing", c->s.addr);
        net__conn_close(c);
        return;
    }
    kv__hello__free_unpacked(hello, NULL);
    if (net__sock_queue_frame(&c->s, KV_FRAME_HELLO_REPLY, &r.base, kv_frame_size(&r.base))) {
        net__conn_close(c);
        return;
    }
    if (code != 0) { /* written at the next flush, then closed */
        c->s.close_after_flush = true;
        uv_read_stop((uv_stream_t *)&c->s.tcp);
    }
}

static void conn_request(net_conn *c, const uint8_t *p, size_t len) {
    net *n = c->s.n;
    Kv__Request *req = kv__request__unpack(NULL, len, p);
    if (req == NULL) {
        net__sock_bad(&c->s, KV_EPROTO, "undecodable Request");
        return;
    }
    n->stats.requests++;
    if (c->inflight >= n->cfg.conn_inflight_max) {
        n->stats.busy_inflight++;
        Kv__Response r = KV__RESPONSE__INIT;
        r.id = req->id;
        r.code = KV_EBUSY;
        r.detail = (char *)busy_detail;
        kv__request__free_unpacked(req, NULL);
        conn_queue_response(c, &r);
        return;
    }
    c->inflight++;
    n->cfg.on_request(n->cfg.ctx, c, req);
}

/* True when every message of b is from the node the Hello named: a peer
 * speaks only for itself (issue 10), so one that claims another node's id
 * is cut off before any message of the frame reaches Raft. */
static bool conn_raft_from_ok(net_conn *c, const Kv__RaftBatch *b) {
    net *n = c->s.n;
    const net_peer *peer = net__peer_by_name(n, c->peer_name);
    for (size_t i = 0; i < b->n_msgs; i++) {
        uint64_t from = b->msgs[i]->from;
        if (peer == NULL || from != peer->id) {
            n->stats.raft_from_bad++;
            net__sock_bad(&c->s, KV_EPROTO,
                          "Raft message from node %llu on the connection of peer %s (node %llu)",
                          (unsigned long long)from, c->peer_name,
                          peer != NULL ? (unsigned long long)peer->id : 0ull);
            return false;
        }
    }
    return true;
}

static void conn_raft(net_conn *c, const uint8_t *p, size_t len) {
    net *n = c->s.n;
    Kv__RaftBatch *b = kv__raft_batch__unpack(NULL, len, p);
    if (b == NULL) {
        net__sock_bad(&c->s, KV_EPROTO, "undecodable RaftBatch from peer %s", c->peer_name);
        return;
    }
    if (!conn_raft_from_ok(c, b)) {
        kv__raft_batch__free_unpacked(b, NULL);
        return;
    }
    for (size_t i = 0; i < b->n_msgs && !net__sock_done(&c->s); i++) {
        raft_msg m;
        int rc = raftwire_from_pb(b->msgs[i], &m);
        if (rc == KV_ENOMEM) {
            KV_LOGE("NOMEM", "no memory for a Raft message from %s; closing", c->s.addr);
            net__conn_close(c);
            break;
        }
        if (rc != 0) {
            net__sock_bad(&c->s, rc, "invalid Raft message (type %u) from peer %s",
                          b->msgs[i]->type, c->peer_name);
            break;
        }
        n->stats.raft_msgs_received++;
        n->cfg.on_raft(n->cfg.ctx, c->peer_name, &m);
        free(m.entries);
    }
    kv__raft_batch__free_unpacked(b, NULL);
}

void net__conn_on_frame(net_conn *c, const kv_frame_header *h, const uint8_t *payload) {
    static const uint8_t expected[] = {
        [NET_CONN_HELLO] = KV_FRAME_HELLO,
        [NET_CONN_CLIENT] = KV_FRAME_REQUEST,
        [NET_CONN_PEER] = KV_FRAME_RAFT,
    };
    static const char *const who[] = {
        [NET_CONN_HELLO] = "before its Hello",
        [NET_CONN_CLIENT] = "from a client",
        [NET_CONN_PEER] = "from a peer",
    };
    assert(c->state >= NET_CONN_HELLO && c->state <= NET_CONN_PEER);
    if (h->type != expected[c->state]) {
        net__sock_bad(&c->s, KV_EPROTO, "frame type %u %s (expected %u)", h->type, who[c->state],
                      expected[c->state]);
        return;
    }
    switch (c->state) {
    case NET_CONN_HELLO:
        conn_hello(c, payload, h->length);
        break;
    case NET_CONN_CLIENT:
        conn_request(c, payload, h->length);
        break;
    case NET_CONN_PEER:
        conn_raft(c, payload, h->length);
        break;
    }
}
