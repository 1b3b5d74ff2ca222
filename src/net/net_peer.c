/* Outgoing peer links: connect, Hello, then RAFT frames out; reconnect with
 * exponential backoff and jitter. See net.h and net_int.h. */
#include "net/net_int.h"

#include "common/logging.h"
#include "kv/errors.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static net_peer *peer_by_id(const net *n, uint64_t id) {
    for (net_peer *p = n->peers; p != NULL; p = p->next)
        if (p->id == id)
            return p;
    return NULL;
}

net_peer *net__peer_by_name(net *n, const char *name) {
    for (net_peer *p = n->peers; p != NULL; p = p->next)
        if (strcmp(p->name, name) == 0)
            return p;
    return NULL;
}

bool net_peer_connected(const net *n, uint64_t id) {
    const net_peer *p = peer_by_id(n, id);
    return p != NULL && p->state == NET_LINK_UP;
}

/* ---- the link's life ---- */

static void link_closed(uv_handle_t *h) {
    net_link *l = h->data;
    net *n = l->s.n;
    assert(l->peer == NULL);
    net__sock_free_bufs(&l->s);
    free(l);
    net__handle_closed(n);
}

/* Lets go of p's current link, if any (closed asynchronously). */
static void link_release(net_peer *p) {
    net_link *l = p->link;
    if (l == NULL)
        return;
    p->link = NULL;
    l->peer = NULL;
    net__sock_close(&l->s, link_closed);
}

static void peer_connect(net_peer *p);

static void backoff_cb(uv_timer_t *t) {
    peer_connect(t->data);
}

/* Closes p's link and schedules the next attempt. */
static void link_down(net_peer *p) {
    net *n = p->n;
    if (p->state == NET_LINK_UP)
        KV_LOGI("NET", "link to peer %s (%s) is down", p->name, p->addr);
    link_release(p);
    p->state = NET_LINK_BACKOFF;
    /* backoff_ms +-25% */
    uint64_t span = p->backoff_ms / 2 + 1;
    uint64_t delay_ms = p->backoff_ms - p->backoff_ms / 4 + net__rand(n) % span;
    p->backoff_ms = p->backoff_ms * 2 > NET_BACKOFF_MAX_MS ? NET_BACKOFF_MAX_MS : p->backoff_ms * 2;
    uv_timer_start(&p->timer, backoff_cb, delay_ms, 0);
}

void net__link_fail(net_link *l) {
    if (l->peer != NULL)
        link_down(l->peer);
    else
        net__sock_close(&l->s, link_closed);
}

static void handshake_timeout_cb(uv_timer_t *t) {
    net_peer *p = t->data;
    kv_log(p->state == NET_LINK_HELLO ? KV_LOG_WARN : KV_LOG_DEBUG, "TIMEOUT",
           "link to peer %s (%s): no %s within %u ms", p->name, p->addr,
           p->state == NET_LINK_HELLO ? "HelloReply" : "connection", NET_HELLO_TIMEOUT_MS);
    link_down(p);
}

static void send_hello(net_peer *p) {
    net *n = p->n;
    Kv__Hello h = KV__HELLO__INIT;
    h.version = KV_WIRE_VERSION;
    h.cluster_id = n->cluster_id;
    h.node_name = n->node_name;
    h.token = n->token;
    if (net__sock_queue_frame(&p->link->s, KV_FRAME_HELLO, &h.base, kv_frame_size(&h.base))) {
        KV_LOGE("NOMEM", "no memory for the Hello to peer %s", p->name);
        link_down(p);
        return;
    }
    p->state = NET_LINK_HELLO;
}

static void connect_cb(uv_connect_t *req, int status) {
    net_link *l = req->data;
    net_peer *p = l->peer;
    if (l->s.closing || p == NULL) /* UV_ECANCELED: closed meanwhile */
        return;
    assert(p->link == l && p->state == NET_LINK_CONNECTING);
    if (status < 0) {
        kv_log(KV_LOG_DEBUG, "IO", "connect to peer %s (%s): %s", p->name, p->addr,
               uv_strerror(status));
        link_down(p);
        return;
    }
    uv_tcp_nodelay(&l->s.tcp, 1);
    net__sock_user_timeout(&l->s, NET_PEER_USER_TIMEOUT_MS);
    int rc = net__sock_start_read(&l->s);
    if (rc != 0) {
        kv_log(KV_LOG_DEBUG, "IO", "read from peer %s: %s", p->name, uv_strerror(rc));
        link_down(p);
        return;
    }
    send_hello(p);
}

static void peer_connect(net_peer *p) {
    net *n = p->n;
    assert(p->link == NULL && !n->closing);
    net_link *l = calloc(1, sizeof *l);
    if (l == NULL) {
        KV_LOGE("NOMEM", "no memory for the link to peer %s", p->name);
        link_down(p);
        return;
    }
    net__sock_init(n, &l->s, NET_SOCK_LINK);
    snprintf(l->s.addr, sizeof l->s.addr, "%s", p->addr);
    l->peer = p;
    l->creq.data = l;
    p->link = l;
    p->state = NET_LINK_CONNECTING;
    int rc = uv_tcp_connect(&l->creq, &l->s.tcp, (const struct sockaddr *)&p->sa, connect_cb);
    if (rc != 0) {
        kv_log(KV_LOG_DEBUG, "IO", "connect to peer %s (%s): %s", p->name, p->addr,
               uv_strerror(rc));
        link_down(p);
        return;
    }
    uv_timer_start(&p->timer, handshake_timeout_cb, NET_HELLO_TIMEOUT_MS, 0);
}

/* ---- the HelloReply ---- */

static void link_hello_reply(net_peer *p, const uint8_t *payload, size_t len) {
    net *n = p->n;
    Kv__HelloReply *r = kv__hello_reply__unpack(NULL, len, payload);
    if (r == NULL) {
        net__sock_bad(&p->link->s, KV_EPROTO, "undecodable HelloReply from peer %s", p->name);
        return;
    }
    if (r->code != 0) {
        KV_LOGW(kv_errword(r->code), "peer %s (%s) refused our Hello: %.200s", p->name, p->addr,
                r->reason);
        link_down(p);
    } else if (strcmp(r->node_name, p->name) != 0 ||
               (r->cluster_id[0] != '\0' && strcmp(r->cluster_id, n->cluster_id) != 0)) {
        KV_LOGW("CONFIG", "peer %s at %s is node %.64s of cluster %.64s; check its address",
                p->name, p->addr, r->node_name, r->cluster_id);
        link_down(p);
    } else {
        uv_timer_stop(&p->timer);
        p->state = NET_LINK_UP;
        p->backoff_ms = NET_BACKOFF_MIN_MS;
        KV_LOGI("NET", "link to peer %s (%s) is up", p->name, p->addr);
    }
    kv__hello_reply__free_unpacked(r, NULL);
}

void net__link_on_frame(net_link *l, const kv_frame_header *h, const uint8_t *payload) {
    net_peer *p = l->peer;
    assert(p != NULL && p->link == l);
    if (p->state != NET_LINK_HELLO || h->type != KV_FRAME_HELLO_REPLY) {
        net__sock_bad(&l->s, KV_EPROTO, "frame type %u from peer %s on our link (expected %s)",
                      h->type, p->name, p->state == NET_LINK_HELLO ? "HelloReply" : "nothing");
        return;
    }
    link_hello_reply(p, payload, h->length);
}

/* ---- adding and removing peers ---- */

static void peer_timer_closed(uv_handle_t *h) {
    net_peer *p = h->data;
    net *n = p->n;
    free(p);
    net__handle_closed(n);
}

static void peer_unlink(net *n, net_peer *p) {
    if (p->prev != NULL)
        p->prev->next = p->next;
    else
        n->peers = p->next;
    if (p->next != NULL)
        p->next->prev = p->prev;
}

static void peer_destroy(net_peer *p) {
    peer_unlink(p->n, p);
    link_release(p);
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, peer_timer_closed);
}

void net__peers_close_all(net *n) {
    while (n->peers != NULL)
        peer_destroy(n->peers);
}

static int peer_check(net *n, uint64_t id, const char *name, const char *addr,
                      struct sockaddr_storage *sa) {
    if (id == 0 || name == NULL || name[0] == '\0' || strlen(name) > KV_NODE_NAME_BYTES_MAX ||
        strcmp(name, n->node_name) == 0) {
        KV_LOGE("CONFIG", "peer %llu: bad name \"%s\"", (unsigned long long)id,
                name != NULL ? name : "");
        return KV_EINVAL;
    }
    const net_peer *other = net__peer_by_name(n, name);
    if (other != NULL && other->id != id) {
        KV_LOGE("CONFIG", "peer %llu: name %s is taken by peer %llu", (unsigned long long)id, name,
                (unsigned long long)other->id);
        return KV_EINVAL;
    }
    if (addr == NULL || strlen(addr) >= NET_ADDR_BYTES_MAX ||
        net__parse_addr(addr, false, sa) != 0) {
        KV_LOGE("CONFIG", "peer %s: bad address \"%s\" (want host:port or [v6]:port)", name,
                addr != NULL ? addr : "");
        return KV_EINVAL;
    }
    return 0;
}

int net_peer_add(net *n, uint64_t id, const char *name, const char *addr) {
    if (n->closing)
        return KV_ESHUTDOWN;
    struct sockaddr_storage sa;
    int rc = peer_check(n, id, name, addr, &sa);
    if (rc != 0)
        return rc;
    net_peer *p = peer_by_id(n, id);
    if (p != NULL) {
        snprintf(p->name, sizeof p->name, "%s", name);
        if (strcmp(p->addr, addr) == 0)
            return 0;
        snprintf(p->addr, sizeof p->addr, "%s", addr);
        p->sa = sa;
        link_release(p); /* reconnect to the new address now */
        uv_timer_stop(&p->timer);
        p->backoff_ms = NET_BACKOFF_MIN_MS;
        peer_connect(p);
        return 0;
    }
    p = calloc(1, sizeof *p);
    if (p == NULL)
        return KV_ENOMEM;
    p->n = n;
    p->id = id;
    snprintf(p->name, sizeof p->name, "%s", name);
    snprintf(p->addr, sizeof p->addr, "%s", addr);
    p->sa = sa;
    p->backoff_ms = NET_BACKOFF_MIN_MS;
    uv_timer_init(n->cfg.loop, &p->timer);
    p->timer.data = p;
    n->handles_open++;
    p->next = n->peers;
    if (n->peers != NULL)
        n->peers->prev = p;
    n->peers = p;
    peer_connect(p);
    return 0;
}

void net_peer_remove(net *n, uint64_t id) {
    net_peer *p = peer_by_id(n, id);
    if (p == NULL)
        return;
    KV_LOGI("NET", "peer %s (%llu) removed", p->name, (unsigned long long)id);
    net__conns_close_peer(n, p->name, NULL);
    peer_destroy(p);
}

/* ---- sending ---- */

static size_t varint_bytes(size_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Queues pbs[0..count) as one RaftBatch frame of payload_bytes on p's link,
 * or drops them when the link's queue would pass conn_output_max. */
static void link_queue_batch(net_peer *p, Kv__RaftMessage **pbs, size_t count,
                             size_t payload_bytes) {
    net *n = p->n;
    Kv__RaftBatch b = KV__RAFT_BATCH__INIT;
    b.n_msgs = count;
    b.msgs = pbs;
    size_t bytes = KV_FRAME_HEADER_BYTES + payload_bytes;
    if (net__sock_queued(&p->link->s) + bytes > n->cfg.conn_output_max ||
        net__sock_queue_frame(&p->link->s, KV_FRAME_RAFT, &b.base, bytes) != 0) {
        n->stats.raft_msgs_dropped += count;
        return;
    }
    n->stats.raft_msgs_sent += count;
}

/* Sends msgs[idx[0..k)] to p in as few frames as the frame limit allows. */
static void link_send(net_peer *p, const raft_msg *msgs, const size_t *idx, size_t k) {
    net *n = p->n;
    size_t ents_count = 0;
    for (size_t j = 0; j < k; j++)
        ents_count += msgs[idx[j]].entries_count;
    Kv__RaftMessage *pbs = malloc(k * sizeof *pbs);
    Kv__RaftMessage **ptrs = malloc(k * sizeof *ptrs);
    Kv__RaftEntry *ents = malloc((ents_count + 1) * sizeof *ents);
    Kv__RaftEntry **ent_ptrs = malloc((ents_count + 1) * sizeof *ent_ptrs);
    if (pbs == NULL || ptrs == NULL || ents == NULL || ent_ptrs == NULL) {
        n->stats.raft_msgs_dropped += k;
        goto out;
    }
    size_t start = 0, acc = 0, e = 0, kept = 0;
    for (size_t j = 0; j < k; j++) {
        raftwire_to_pb(&msgs[idx[j]], &pbs[j], ents + e, ent_ptrs + e);
        e += msgs[idx[j]].entries_count;
        size_t sz = kv__raft_message__get_packed_size(&pbs[j]);
        size_t wire = 1 + varint_bytes(sz) + sz; /* its field in the batch */
        if (wire > KV_FRAME_BYTES_MAX) {
            KV_LOGW("TOOBIG",
                    "Raft message (type %u, %zu bytes) to peer %s over the frame "
                    "limit; dropped",
                    pbs[j].type, sz, p->name);
            n->stats.raft_msgs_dropped++;
            continue;
        }
        if (acc + wire > KV_FRAME_BYTES_MAX) {
            link_queue_batch(p, ptrs + start, kept - start, acc);
            start = kept;
            acc = 0;
        }
        ptrs[kept++] = &pbs[j];
        acc += wire;
    }
    if (kept > start)
        link_queue_batch(p, ptrs + start, kept - start, acc);
out:
    free(pbs);
    free(ptrs);
    free(ents);
    free(ent_ptrs);
}

void net_send_raft(net *n, const raft_msg *msgs, size_t count) {
    if (count == 0)
        return;
    if (n->closing) {
        n->stats.raft_msgs_dropped += count;
        return;
    }
    size_t *idx = malloc(count * sizeof *idx);
    if (idx == NULL) {
        n->stats.raft_msgs_dropped += count;
        return;
    }
    size_t known = 0;
    for (net_peer *p = n->peers; p != NULL; p = p->next) {
        size_t k = 0;
        for (size_t i = 0; i < count; i++)
            if (msgs[i].to == p->id && msgs[i].to != msgs[i].from)
                idx[k++] = i;
        known += k;
        if (k == 0)
            continue;
        if (p->state != NET_LINK_UP)
            n->stats.raft_msgs_dropped += k;
        else
            link_send(p, msgs, idx, k);
    }
    n->stats.raft_msgs_dropped += count - known; /* to us or to no known peer */
    free(idx);
}
