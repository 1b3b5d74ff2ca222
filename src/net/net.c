/* The net: listener, flushing, addresses, open and close. See net.h; the
 * connections are in net_sock.c, net_conn.c and net_peer.c. */
#include "net/net_int.h"

#include "common/clock.h"
#include "common/logging.h"
#include "kv/errors.h"

#include <arpa/inet.h>
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NET_LISTEN_BACKLOG 511

void net_config_default(net_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->conns_max = KV_CONNS_MAX;
    cfg->conn_inflight_max = KV_CONN_INFLIGHT_REQUESTS_MAX;
    cfg->conn_output_max = KV_CONN_OUTPUT_BYTES_MAX;
    cfg->frame_max = KV_FRAME_BYTES_MAX;
}

/* ---- addresses ---- */

static int parse_port(const char *p, bool for_listen, int *port) {
    size_t len = strlen(p);
    if (len == 0 || len > 5 || strspn(p, "0123456789") != len)
        return KV_EINVAL;
    int v = atoi(p);
    if (v > 65535 || (v == 0 && !for_listen))
        return KV_EINVAL;
    *port = v;
    return 0;
}

int net__parse_addr(const char *s, bool for_listen, struct sockaddr_storage *out) {
    char host[NET_ADDR_BYTES_MAX];
    const char *port_str;
    bool v6 = false;
    if (s == NULL || strlen(s) >= sizeof host)
        return KV_EINVAL;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (end == NULL || end[1] != ':')
            return KV_EINVAL;
        memcpy(host, s + 1, (size_t)(end - s - 1));
        host[end - s - 1] = '\0';
        port_str = end + 2;
        v6 = true;
    } else {
        const char *colon = strrchr(s, ':');
        if (colon == NULL || memchr(s, ':', (size_t)(colon - s)) != NULL)
            return KV_EINVAL; /* no port, or an IPv6 address without [] */
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = '\0';
        port_str = colon + 1;
    }
    int port;
    if (parse_port(port_str, for_listen, &port) != 0)
        return KV_EINVAL;
    memset(out, 0, sizeof *out);
    if (v6)
        return uv_ip6_addr(host, port, (struct sockaddr_in6 *)out) == 0 ? 0 : KV_EINVAL;
    if (host[0] == '\0' && !for_listen)
        return KV_EINVAL;
    const char *ip = host[0] == '\0' ? "0.0.0.0" : host;
    if (strcmp(host, "localhost") == 0)
        ip = "127.0.0.1";
    return uv_ip4_addr(ip, port, (struct sockaddr_in *)out) == 0 ? 0 : KV_EINVAL;
}

void net__format_addr(const struct sockaddr *sa, char *out, size_t cap) {
    char ip[64] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        uv_ip4_name(a, ip, sizeof ip);
        port = ntohs(a->sin_port);
        snprintf(out, cap, "%s:%d", ip, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        uv_ip6_name(a, ip, sizeof ip);
        port = ntohs(a->sin6_port);
        snprintf(out, cap, "[%s]:%d", ip, port);
    } else {
        snprintf(out, cap, "?");
    }
}

uint64_t net__rand(net *n) {
    /* xorshift64*: jitter only, nothing depends on its quality. */
    uint64_t x = n->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    n->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

void net__handle_closed(net *n) {
    assert(n->handles_open > 0);
    n->handles_open--;
}

/* ---- the listener and flushing ---- */

static void on_connection(uv_stream_t *server, int status) {
    net *n = server->data;
    if (status < 0) {
        KV_LOGW("IO", "accept on %s: %s", n->listen_addr, uv_strerror(status));
        return;
    }
    net__conn_accept(n);
}

static void on_handle_closed(uv_handle_t *h) {
    net__handle_closed(h->data);
}

static void prepare_cb(uv_prepare_t *h) {
    net_flush(h->data);
}

static void check_cb(uv_check_t *h) {
    net_flush(h->data);
}

static int listen_error(const net *n, int uv_err) {
    if (uv_err == UV_EADDRINUSE) {
        KV_LOGE("EXIST", "listen on %s: the address is in use", n->listen_addr);
        return KV_EEXIST;
    }
    if (uv_err == UV_EADDRNOTAVAIL) {
        KV_LOGE("CONFIG", "listen on %s: not an address of this host", n->listen_addr);
        return KV_EINVAL;
    }
    KV_LOGE("IO", "listen on %s: %s", n->listen_addr, uv_strerror(uv_err));
    return KV_EIO;
}

static int net_listen(net *n, const struct sockaddr_storage *sa) {
    uv_tcp_init(n->cfg.loop, &n->listener);
    n->listener.data = n;
    n->handles_open++;
    n->listening = true;
    /* libuv sets SO_REUSEADDR itself; EADDRINUSE may come from either call. */
    int rc = uv_tcp_bind(&n->listener, (const struct sockaddr *)sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&n->listener, NET_LISTEN_BACKLOG, on_connection);
    return rc == 0 ? 0 : listen_error(n, rc);
}

static void net_start_flushers(net *n) {
    uv_prepare_init(n->cfg.loop, &n->prepare);
    uv_check_init(n->cfg.loop, &n->check);
    uv_idle_init(n->cfg.loop, &n->idle);
    n->prepare.data = n->check.data = n->idle.data = n;
    n->handles_open += 3;
    uv_prepare_start(&n->prepare, prepare_cb);
    uv_check_start(&n->check, check_cb);
    /* They must not keep the loop alive on their own. */
    uv_unref((uv_handle_t *)&n->prepare);
    uv_unref((uv_handle_t *)&n->check);
    uv_unref((uv_handle_t *)&n->idle);
}

static int net_check_config(const net_config *cfg) {
    if (cfg->conns_max == 0 || cfg->conn_inflight_max == 0 || cfg->conn_output_max == 0 ||
        cfg->frame_max == 0) {
        KV_LOGE("CONFIG", "net: a limit is 0 (start from net_config_default)");
        return KV_EINVAL;
    }
    if (cfg->node_name == NULL || strlen(cfg->node_name) > KV_NODE_NAME_BYTES_MAX) {
        KV_LOGE("CONFIG", "net: node name missing or over %u bytes", KV_NODE_NAME_BYTES_MAX);
        return KV_EINVAL;
    }
    return 0;
}

static char *dup_or_empty(const char *s) {
    return strdup(s != NULL ? s : "");
}

static void net_free(net *n) {
    free(n->listen_addr);
    free(n->node_name);
    free(n->cluster_id);
    free(n->token);
    free(n->scratch);
    free(n);
}

static net *net_alloc(const net_config *cfg) {
    net *n = calloc(1, sizeof *n);
    if (n == NULL)
        return NULL;
    n->cfg = *cfg;
    n->listen_addr = dup_or_empty(cfg->listen_addr);
    n->node_name = dup_or_empty(cfg->node_name);
    n->cluster_id = dup_or_empty(cfg->cluster_id);
    n->token = dup_or_empty(cfg->token);
    n->scratch = malloc(NET_READ_CHUNK_BYTES);
    if (n->listen_addr == NULL || n->node_name == NULL || n->cluster_id == NULL ||
        n->token == NULL || n->scratch == NULL) {
        net_free(n);
        return NULL;
    }
    n->cfg.listen_addr = n->listen_addr;
    n->cfg.node_name = n->node_name;
    n->cfg.cluster_id = n->cluster_id;
    n->cfg.token = n->token;
    n->rng = kv_now_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)n;
    if (n->rng == 0)
        n->rng = 1;
    return n;
}

/* Runs the loop until every handle of n has been closed. */
static void net_wait_closed(net *n) {
    while (n->handles_open > 0)
        uv_run(n->cfg.loop, UV_RUN_ONCE);
}

int net_open(const net_config *cfg, net **out) {
    assert(cfg != NULL && out != NULL && cfg->loop != NULL);
    assert(cfg->on_request != NULL && cfg->on_raft != NULL);
    int rc = net_check_config(cfg);
    if (rc != 0)
        return rc;
    struct sockaddr_storage sa;
    if (net__parse_addr(cfg->listen_addr, true, &sa) != 0) {
        KV_LOGE("CONFIG", "bad listen address \"%s\" (want host:port or [v6]:port)",
                cfg->listen_addr != NULL ? cfg->listen_addr : "");
        return KV_EINVAL;
    }
    net *n = net_alloc(cfg);
    if (n == NULL)
        return KV_ENOMEM;
    rc = net_listen(n, &sa);
    if (rc != 0) {
        n->listening = false;
        uv_close((uv_handle_t *)&n->listener, on_handle_closed);
        net_wait_closed(n);
        net_free(n);
        return rc;
    }
    net_start_flushers(n);
    *out = n;
    return 0;
}

void net_stop_listening(net *n) {
    if (!n->listening)
        return;
    n->listening = false;
    uv_close((uv_handle_t *)&n->listener, on_handle_closed);
}

void net_close(net *n) {
    if (n == NULL)
        return;
    assert(!n->closing);
    n->closing = true;
    net_stop_listening(n);
    uv_close((uv_handle_t *)&n->prepare, on_handle_closed);
    uv_close((uv_handle_t *)&n->check, on_handle_closed);
    uv_close((uv_handle_t *)&n->idle, on_handle_closed);
    n->idle_on = false;
    for (net_conn *c = n->conns; c != NULL; c = c->next)
        net__conn_close(c);
    net__peers_close_all(n);
    net_wait_closed(n);
    /* Connections still referenced by the caller outlive n, closed: their
     * last net_conn_unref() frees them. */
    net_conn *c = n->conns;
    while (c != NULL) {
        net_conn *next = c->next;
        assert(c->refs > 0 && c->handles == 0);
        c->s.n = NULL;
        c->prev = c->next = NULL;
        c = next;
    }
    n->conns = NULL;
    assert(n->dirty == NULL && n->peers == NULL);
    net_free(n);
}

void net_get_stats(const net *n, net_stats *out) {
    *out = n->stats;
}
