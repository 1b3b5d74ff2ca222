/* /metrics and /health over HTTP: see http.h. */
#include "server/http.h"

#include "common/logging.h"
#include "kv/errors.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HTTP_REQUEST_MAX 8192u
#define HTTP_CONNS_MAX 64u
#define HTTP_TIMEOUT_MS 2000u

struct http_server {
    uv_tcp_t listener;
    http_handler fn;
    void *ctx;
    unsigned conns;
    unsigned handles; /* open handles: listener + connections */
    int closing;
    struct http_conn *list; /* open connections */
};

typedef struct http_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    http_server *srv;
    char buf[HTTP_REQUEST_MAX + 1];
    size_t len;
    int answered;
    int closes_pending;
    uv_write_t wr;
    char *out;
    struct http_conn *next, *prev;
} http_conn;

int http_parse_addr(const char *addr, struct sockaddr_storage *out) {
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || colon == addr || (size_t)(colon - addr) >= sizeof host)
        return KV_EINVAL;
    size_t hl = (size_t)(colon - addr);
    memcpy(host, addr, hl);
    host[hl] = 0;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port <= 0 || port > 65535)
        return KV_EINVAL;
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        host[hl - 1] = 0;
        return uv_ip6_addr(host + 1, (int)port, (struct sockaddr_in6 *)out) == 0 ? 0 : KV_EINVAL;
    }
    return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)out) == 0 ? 0 : KV_EINVAL;
}

static void srv_handle_closed(http_server *h) {
    if (--h->handles == 0 && h->closing)
        free(h);
}

static void conn_closed(uv_handle_t *hd) {
    http_conn *c = hd->data;
    if (--c->closes_pending > 0)
        return;
    http_server *h = c->srv;
    h->conns--;
    if (c->prev)
        c->prev->next = c->next;
    else
        h->list = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c->out);
    free(c);
    srv_handle_closed(h);
}

static void conn_close(http_conn *c) {
    if (uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    c->closes_pending = 2;
    uv_close((uv_handle_t *)&c->timer, conn_closed);
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void on_written(uv_write_t *w, int status) {
    (void)status;
    conn_close(w->data);
}

static const char *reason(int code) {
    switch (code) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 503:
        return "Service Unavailable";
    default:
        return "Error";
    }
}

/* The answer; head_only (HEAD) sends the headers a GET would get, with
 * the GET's Content-Length, and no body (RFC 9110 section 9.3.2). */
static void answer(http_conn *c, int code, const char *ctype, const char *body, size_t len,
                   bool head_only) {
    c->answered = 1;
    char head[256];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n",
                      code, reason(code), ctype, len);
    c->out = malloc((size_t)hl + len);
    if (c->out == NULL) {
        conn_close(c);
        return;
    }
    memcpy(c->out, head, (size_t)hl);
    if (head_only)
        len = 0;
    memcpy(c->out + hl, body, len);
    uv_buf_t b = uv_buf_init(c->out, (unsigned)((size_t)hl + len));
    c->wr.data = c;
    if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0)
        conn_close(c);
}

static void handle(http_conn *c) {
    c->buf[c->len] = 0;
    char method[8], path[512];
    if (sscanf(c->buf, "%7s %511s", method, path) != 2) {
        const char *m = "bad request line\n";
        answer(c, 400, "text/plain", m, strlen(m), false);
        return;
    }
    bool head = strcmp(method, "HEAD") == 0;
    if (strcmp(method, "GET") != 0 && !head) {
        const char *m = "only GET and HEAD\n";
        answer(c, 405, "text/plain", m, strlen(m), false);
        return;
    }
    path[strcspn(path, "?#")] = '\0'; /* /health?verbose is /health */
    char *body = NULL;
    size_t len = 0;
    const char *ctype = "text/plain";
    int code = c->srv->fn(c->srv->ctx, path, &body, &len, &ctype);
    answer(c, code, ctype, body ? body : "", body ? len : 0, head);
    free(body);
}

static void on_alloc(uv_handle_t *hd, size_t sz, uv_buf_t *b) {
    (void)sz;
    http_conn *c = hd->data;
    *b = uv_buf_init(c->buf + c->len, (unsigned)(HTTP_REQUEST_MAX - c->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    (void)b;
    http_conn *c = s->data;
    if (n < 0 || c->answered) {
        if (!c->answered)
            conn_close(c);
        return;
    }
    c->len += (size_t)n;
    c->buf[c->len] = 0;
    if (strstr(c->buf, "\r\n\r\n") != NULL || strstr(c->buf, "\n\n") != NULL) {
        uv_read_stop(s);
        handle(c);
    } else if (c->len >= HTTP_REQUEST_MAX) {
        uv_read_stop(s);
        const char *m = "request too large\n";
        answer(c, 400, "text/plain", m, strlen(m), false);
    }
}

static void on_timeout(uv_timer_t *t) {
    http_conn *c = t->data;
    if (!c->answered)
        conn_close(c);
}

static void on_conn(uv_stream_t *l, int status) {
    http_server *h = l->data;
    if (status < 0 || h->closing)
        return;
    http_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    c->srv = h;
    uv_tcp_init(l->loop, &c->tcp);
    uv_timer_init(l->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    h->conns++;
    h->handles++;
    c->next = h->list;
    if (h->list)
        h->list->prev = c;
    h->list = c;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0 || h->conns > HTTP_CONNS_MAX) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_timeout, HTTP_TIMEOUT_MS, 0);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void listener_closed(uv_handle_t *hd);

int http_open(uv_loop_t *loop, const char *addr, http_handler fn, void *ctx, http_server **out) {
    struct sockaddr_storage sa;
    if (http_parse_addr(addr, &sa) != 0) {
        KV_LOGE("CONFIG", "--metrics %s: want HOST:PORT", addr);
        return KV_EINVAL;
    }
    http_server *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return KV_ENOMEM;
    h->fn = fn;
    h->ctx = ctx;
    uv_tcp_init(loop, &h->listener);
    h->listener.data = h;
    h->handles = 1;
    int rc = uv_tcp_bind(&h->listener, (struct sockaddr *)&sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&h->listener, 64, on_conn);
    if (rc != 0) {
        KV_LOGE("IO", "metrics: cannot listen on %s: %s", addr, uv_strerror(rc));
        http_close(h); /* freed once the loop has run the close */
        return rc == UV_EADDRINUSE ? KV_EEXIST : KV_EIO;
    }
    *out = h;
    return 0;
}

static void listener_closed(uv_handle_t *hd) {
    srv_handle_closed(hd->data);
}

void http_close(http_server *h) {
    if (h == NULL)
        return;
    h->closing = 1;
    uv_close((uv_handle_t *)&h->listener, listener_closed);
    for (http_conn *c = h->list; c != NULL; c = c->next)
        conn_close(c);
}
