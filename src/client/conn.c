/* libkvclient: endpoints, one connection, frames, the response arena. */
#include "client/client_int.h"

#include "common/clock.h"
#include "net/frame.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define NS_PER_MS 1000000ull

/* ---- endpoints ------------------------------------------------------------ */

static bool is_space(char ch) {
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

/* "host:port" or "[v6]:port", spaces around allowed; port 1..65535. */
int kvc_endpoint_parse(const char *text, size_t len, kvc_endpoint *ep) {
    while (len > 0 && is_space(text[0])) {
        text++;
        len--;
    }
    while (len > 0 && is_space(text[len - 1]))
        len--;
    if (len == 0 || len >= KVC_ADDR_BYTES)
        return KV_EINVAL;
    const char *colon = NULL, *host = text;
    size_t host_len;
    if (text[0] == '[') {
        const char *close = memchr(text, ']', len);
        if (close == NULL || close + 1 >= text + len || close[1] != ':')
            return KV_EINVAL;
        host = text + 1;
        host_len = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = memchr(text, ':', len);
        if (colon == NULL || memchr(colon + 1, ':', len - (size_t)(colon + 1 - text)) != NULL)
            return KV_EINVAL; /* none, or an IPv6 address without brackets */
        host_len = (size_t)(colon - text);
    }
    const char *port = colon + 1;
    size_t port_len = len - (size_t)(port - text);
    if (host_len == 0 || port_len == 0 || port_len > 5)
        return KV_EINVAL;
    unsigned long v = 0;
    for (size_t i = 0; i < port_len; i++) {
        if (port[i] < '0' || port[i] > '9')
            return KV_EINVAL;
        v = v * 10 + (unsigned long)(port[i] - '0');
    }
    if (v == 0 || v > 65535)
        return KV_EINVAL;
    for (size_t i = 0; i < host_len; i++)
        if (is_space(host[i]) || host[i] == ',')
            return KV_EINVAL;
    memcpy(ep->text, text, len);
    ep->text[len] = '\0';
    memcpy(ep->host, host, host_len);
    ep->host[host_len] = '\0';
    memcpy(ep->port, port, port_len);
    ep->port[port_len] = '\0';
    return 0;
}

int kvc_endpoints_parse(const char *list, kvc_endpoint *eps, size_t *count) {
    *count = 0;
    if (list == NULL)
        return KV_EINVAL;
    const char *p = list;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (*count == KVC_ENDPOINTS_MAX)
            return kvc_errstr_set(KV_EINVAL, "more than %u endpoints", KVC_ENDPOINTS_MAX);
        int rc = kvc_endpoint_parse(p, len, &eps[*count]);
        if (rc != 0)
            return kvc_errstr_set(rc, "endpoint '%.*s' is not HOST:PORT (port 1 to 65535, IPv6 as "
                                      "[ADDRESS]:PORT)", (int)(len > 256 ? 256 : len), p);
        (*count)++;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    assert(*count > 0 && *count <= KVC_ENDPOINTS_MAX);
    return 0;
}

/* ---- arena ---------------------------------------------------------------- */

struct kvc_arena_block {
    kvc_arena_block *next;
    max_align_t data[];
};

static void *arena_alloc(void *data, size_t size) {
    kvc_arena *a = data;
    size_t n = (size + 15u) & ~(size_t)15u;
    if (n < size)
        return NULL;
    if (a->base != NULL && a->cap - a->used >= n) {
        void *p = a->base + a->used;
        a->used += n;
        return p;
    }
    kvc_arena_block *b = malloc(sizeof *b + n);
    if (b == NULL)
        return NULL;
    b->next = a->extra;
    a->extra = b;
    a->overflow_bytes += n;
    return b->data;
}

static void arena_free(void *data, void *p) {
    (void)data;
    (void)p; /* everything goes at the next reset */
}

void kvc_arena_init(kvc_arena *a) {
    *a = (kvc_arena){.alloc = {.alloc = arena_alloc, .free = arena_free, .allocator_data = a}};
    a->base = malloc(4096);
    a->cap = a->base ? 4096 : 0;
}

/* Frees what did not fit and grows the main block to hold it next time
 * (up to KVC_ARENA_BYTES_KEEP). */
void kvc_arena_reset(kvc_arena *a) {
    assert(a->alloc.allocator_data == a);
    while (a->extra != NULL) {
        kvc_arena_block *b = a->extra;
        a->extra = b->next;
        free(b);
    }
    size_t want = a->cap + a->overflow_bytes;
    if (a->overflow_bytes > 0 && want <= KVC_ARENA_BYTES_KEEP) {
        uint8_t *p = realloc(a->base, want);
        if (p != NULL) {
            a->base = p;
            a->cap = want;
        }
    }
    a->used = 0;
    a->overflow_bytes = 0;
}

void kvc_arena_free(kvc_arena *a) {
    kvc_arena_reset(a);
    free(a->base);
    a->base = NULL;
    a->cap = 0;
}

/* ---- connection ----------------------------------------------------------- */

void kvc_conn_init(kvc_conn *k) {
    *k = (kvc_conn){.fd = -1};
}

void kvc_conn_close(kvc_conn *k) {
    if (k->fd >= 0)
        close(k->fd);
    k->fd = -1;
    k->rstart = k->rlen = 0;
    k->wstart = k->wlen = 0;
    k->out_total = k->sent_total = 0;
    k->rx_ns = 0;
    k->drained = false;
}

void kvc_conn_free(kvc_conn *k) {
    kvc_conn_close(k);
    free(k->rbuf);
    free(k->wbuf);
    kvc_conn_init(k);
}

int kvc_wait_ms(uint64_t until_ns, uint64_t now_ns) {
    if (until_ns <= now_ns)
        return 0;
    uint64_t ms = (until_ns - now_ns + NS_PER_MS - 1) / NS_PER_MS;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* Waits until fd is ready for events or deadline: 1 ready, 0 timed out. */
static int wait_fd(int fd, short events, uint64_t deadline_ns) {
    for (;;) {
        uint64_t now = kv_now_ns();
        if (now >= deadline_ns)
            return 0;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, kvc_wait_ms(deadline_ns, now));
        if (n > 0)
            return 1;
        if (n < 0 && errno != EINTR)
            return 0;
    }
}

/* A non-blocking TCP connection to one address of ep, or -1. */
static int tcp_connect(const kvc_endpoint *ep, uint64_t deadline_ns) {
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    if (getaddrinfo(ep->host, ep->port, &hints, &res) != 0)
        return -1;
    int fd = -1;
    for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
        if (rc != 0 && errno == EINPROGRESS && wait_fd(fd, POLLOUT, deadline_ns)) {
            int err = 0;
            socklen_t len = sizeof err;
            rc = getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0 ? 0 : -1;
        }
        if (rc != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd >= 0) {
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

/* Hello, HelloReply (docs/protocol.md "Handshake"). */
static int handshake(kv_client *c, kvc_conn *k, uint64_t deadline_ns) {
    Kv__Hello h = KV__HELLO__INIT;
    h.version = KV_WIRE_VERSION;
    h.cluster_id = c->cluster_id ? c->cluster_id : (char *)"";
    h.token = c->token ? c->token : (char *)"";
    int rc = kvc_conn_queue(k, KV_FRAME_HELLO, &h.base);
    if (rc != 0)
        return rc;
    uint8_t type;
    const uint8_t *payload;
    uint32_t len;
    if (kvc_conn_send_all(k, deadline_ns) != 0 ||
        kvc_conn_wait_frame(k, deadline_ns, &type, &payload, &len) != 1 ||
        type != KV_FRAME_HELLO_REPLY)
        return KV_EUNAVAILABLE;
    /* malloc'd, not in c->arena: kv_watch's thread says Hello on its own
     * connection while another thread may be reading c's */
    Kv__HelloReply *r = kv__hello_reply__unpack(NULL, len, payload);
    kvc_conn_consume(k, len);
    if (r == NULL)
        return KV_EUNAVAILABLE;
    rc = 0;
    if (r->code == KV_EAUTH || r->code == KV_ECONFIG || r->code == KV_EVERSION)
        rc = r->code; /* refused: another node will not say otherwise */
    else if (r->code != 0)
        rc = KV_EUNAVAILABLE; /* e.g. BUSY: too many connections there */
    else if (r->cluster_id != NULL && r->cluster_id[0] != '\0') {
        if (c->cluster_id == NULL) {
            c->cluster_id = strdup(r->cluster_id); /* never mix two clusters */
            rc = c->cluster_id ? 0 : KV_ENOMEM;
        } else if (strcmp(c->cluster_id, r->cluster_id) != 0) {
            rc = KV_ECONFIG;
        }
    }
    kv__hello_reply__free_unpacked(r, NULL);
    return rc;
}

int kvc_conn_open(kv_client *c, kvc_conn *k, const kvc_endpoint *ep, uint64_t deadline_ns) {
    kvc_conn_close(k);
    int fd = tcp_connect(ep, deadline_ns);
    if (fd < 0)
        return KV_EUNAVAILABLE;
    k->fd = fd;
    int rc = handshake(c, k, deadline_ns);
    if (rc != 0)
        kvc_conn_close(k);
    k->rx_ns = 0; /* a fresh connection is checked before its first use */
    assert(rc != 0 || (k->fd >= 0 && k->wlen == 0));
    return rc;
}

int kvc_conn_queue(kvc_conn *k, uint8_t type, const ProtobufCMessage *msg) {
    size_t n = kv_frame_size(msg);
    if (n - KV_FRAME_HEADER_BYTES > KV_FRAME_BYTES_MAX)
        return KV_ETOOBIG;
    if (k->wlen == 0)
        k->wstart = 0;
    if (k->wstart + k->wlen + n > k->wcap && k->wstart > 0) {
        memmove(k->wbuf, k->wbuf + k->wstart, k->wlen);
        k->wstart = 0;
    }
    if (k->wlen + n > k->wcap) {
        size_t cap = k->wcap ? 2 * k->wcap : 64u * 1024u;
        while (cap < k->wlen + n)
            cap *= 2;
        uint8_t *p = realloc(k->wbuf, cap);
        if (p == NULL)
            return KV_ENOMEM;
        k->wbuf = p;
        k->wcap = cap;
    }
    size_t w = kv_frame_pack_into(type, msg, k->wbuf + k->wstart + k->wlen);
    assert(w == n);
    k->wlen += n;
    k->out_total += n;
    return 0;
}

int kvc_conn_flush(kvc_conn *k) {
    while (k->wlen > 0) {
        ssize_t n = send(k->fd, k->wbuf + k->wstart, k->wlen, MSG_NOSIGNAL);
        if (n > 0) {
            k->wstart += (size_t)n;
            k->wlen -= (size_t)n;
            k->sent_total += (uint64_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        return KV_ECLOSED;
    }
    k->wstart = 0;
    assert(k->sent_total <= k->out_total);
    return 0;
}

bool kvc_conn_alive_at(const kvc_conn *k, uint64_t now_ns) {
    if (k->rx_ns != 0 && now_ns - k->rx_ns < KVC_ALIVE_TRUST_MS * NS_PER_MS)
        return true; /* it just answered: the common case costs no system call */
    uint8_t b;
    ssize_t n = recv(k->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR));
}

int kvc_conn_send_all(kvc_conn *k, uint64_t deadline_ns) {
    for (;;) {
        int rc = kvc_conn_flush(k);
        if (rc != 0 || k->wlen == 0)
            return rc;
        if (!wait_fd(k->fd, POLLOUT, deadline_ns))
            return KV_ETIMEOUT;
    }
}

/* Makes room for need bytes at the end of the received data. */
static int rbuf_room(kvc_conn *k, size_t need) {
    if (k->rcap - k->rstart - k->rlen >= need)
        return 0;
    if (k->rstart > 0) {
        memmove(k->rbuf, k->rbuf + k->rstart, k->rlen);
        k->rstart = 0;
        if (k->rcap - k->rlen >= need)
            return 0;
    }
    size_t cap = k->rcap ? k->rcap : KVC_RBUF_BYTES_MIN;
    while (cap - k->rlen < need)
        cap *= 2;
    uint8_t *p = realloc(k->rbuf, cap);
    if (p == NULL)
        return KV_ENOMEM;
    k->rbuf = p;
    k->rcap = cap;
    return 0;
}

int kvc_conn_fill(kvc_conn *k) {
    if (rbuf_room(k, KVC_RBUF_BYTES_MIN / 4) != 0)
        return KV_ECLOSED;
    for (;;) {
        size_t room = k->rcap - k->rstart - k->rlen;
        ssize_t n = recv(k->fd, k->rbuf + k->rstart + k->rlen, room, 0);
        k->drained = n >= 0 && (size_t)n < room;
        if (n > 0) {
            k->rlen += (size_t)n;
            k->rx_ns = kv_now_ns();
            return n > INT_MAX ? INT_MAX : (int)n;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        return KV_ECLOSED;
    }
}

int kvc_conn_frame(kvc_conn *k, uint8_t *type, const uint8_t **payload, uint32_t *len) {
    if (k->rlen < KV_FRAME_HEADER_BYTES)
        return 0;
    kv_frame_header h;
    int rc = kv_frame_header_decode(k->rbuf + k->rstart, KV_FRAME_BYTES_MAX, &h);
    if (rc != 0)
        return rc; /* the node is confused: this connection is done */
    size_t total = KV_FRAME_HEADER_BYTES + (size_t)h.length;
    if (k->rlen < total)
        return rbuf_room(k, total - k->rlen);
    const uint8_t *p = k->rbuf + k->rstart + KV_FRAME_HEADER_BYTES;
    if (kv_frame_payload_check(&h, p) != 0)
        return KV_ECORRUPT;
    *type = h.type;
    *payload = p;
    *len = h.length;
    return 1;
}

void kvc_conn_consume(kvc_conn *k, uint32_t len) {
    size_t total = KV_FRAME_HEADER_BYTES + (size_t)len;
    assert(k->rlen >= total);
    k->rstart += total;
    k->rlen -= total;
    if (k->rlen == 0)
        k->rstart = 0;
}

int kvc_conn_wait_frame(kvc_conn *k, uint64_t deadline_ns, uint8_t *type, const uint8_t **payload,
                        uint32_t *len) {
    for (;;) {
        int rc = kvc_conn_frame(k, type, payload, len);
        if (rc != 0)
            return rc;
        rc = kvc_conn_fill(k);
        if (rc < 0)
            return rc;
        if (rc == 0 && !wait_fd(k->fd, POLLIN, deadline_ns))
            return KV_ETIMEOUT;
    }
}

/* ---- one request on a connection of its own -------------------------------- */

uint64_t kvc_side_id(kv_client *c) {
    return ++c->next_id << 11 | 0x7ffu; /* engine.c: no slot has this index */
}

int kvc_side_open(kv_client *c, kvc_conn *k, const kvc_endpoint *ep, uint64_t deadline_ns) {
    uint64_t now = kv_now_ns();
    uint64_t d = now + (uint64_t)c->connect_timeout_ms * NS_PER_MS;
    return kvc_conn_open(c, k, ep, d < deadline_ns ? d : deadline_ns);
}

int kvc_side_call(kv_client *c, kvc_conn *k, Kv__Request *q, uint64_t deadline_ns,
                  Kv__Response **r) {
    *r = NULL;
    q->id = kvc_side_id(c);
    int rc = kvc_conn_queue(k, KV_FRAME_REQUEST, &q->base);
    if (rc != 0)
        return rc;
    rc = kvc_conn_send_all(k, deadline_ns);
    if (rc != 0)
        return rc == KV_ETIMEOUT ? rc : KV_ECLOSED;
    for (;;) {
        uint8_t type;
        const uint8_t *p;
        uint32_t len;
        rc = kvc_conn_wait_frame(k, deadline_ns, &type, &p, &len);
        if (rc == KV_ETIMEOUT || rc == KV_ENOMEM)
            return rc;
        if (rc != 1 || type != KV_FRAME_RESPONSE)
            return KV_ECLOSED; /* closed, or it spoke nonsense: done with it */
        Kv__Response *a = kv__response__unpack(&c->arena.alloc, len, p);
        kvc_conn_consume(k, len);
        if (a == NULL) {
            kvc_arena_reset(&c->arena);
            return KV_ECLOSED;
        }
        if (a->id == q->id) {
            *r = a;
            return 0;
        }
        kvc_arena_reset(&c->arena); /* a stray answer */
    }
}
