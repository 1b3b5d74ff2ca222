/* One TCP connection's I/O: frames in (header first, then exactly its
 * payload), batched frames out. See net_int.h. */
#include "net/net_int.h"

#include "common/logging.h"
#include "kv/errors.h"

#include <assert.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int buf_reserve(net_buf *b, size_t more) {
    if (b->cap - b->len >= more)
        return 0;
    size_t cap = b->cap > 0 ? b->cap : 4096;
    while (cap - b->len < more)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (p == NULL)
        return KV_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

static void buf_free(net_buf *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

void net__sock_init(net *n, net_sock *s, net_sock_kind kind) {
    assert(n != NULL && !n->closing);
    memset(s, 0, sizeof *s);
    s->n = n;
    s->kind = kind;
    int rc = uv_tcp_init(n->cfg.loop, &s->tcp); /* creates no socket: cannot fail */
    assert(rc == 0);
    s->tcp.data = s;
    n->handles_open++;
}

bool net__sock_done(const net_sock *s) {
    return s->closing || s->close_after_flush;
}

size_t net__sock_queued(const net_sock *s) {
    return s->out.len + s->wout.len - s->wout_off;
}

/* ---- the dirty list: socks with output to hand to uv_write ---- */

static void idle_cb(uv_idle_t *h) {
    net_flush(h->data);
}

static void dirty_add(net_sock *s) {
    net *n = s->n;
    assert(!s->dirty && !s->closing);
    s->dirty = true;
    s->dirty_prev = NULL;
    s->dirty_next = n->dirty;
    if (n->dirty != NULL)
        n->dirty->dirty_prev = s;
    n->dirty = s;
    if (!n->idle_on) {
        /* An active idle handle makes the loop poll without blocking, so
         * output queued anywhere in a turn (even by a prepare callback that
         * runs after ours) is written at the check phase right after. */
        n->idle_on = true;
        uv_idle_start(&n->idle, idle_cb);
    }
}

static void dirty_remove(net_sock *s) {
    if (!s->dirty)
        return;
    net *n = s->n;
    if (s->dirty_prev != NULL)
        s->dirty_prev->dirty_next = s->dirty_next;
    else
        n->dirty = s->dirty_next;
    if (s->dirty_next != NULL)
        s->dirty_next->dirty_prev = s->dirty_prev;
    s->dirty = false;
    s->dirty_prev = s->dirty_next = NULL;
}

/* The owner's reaction to a dead connection. */
static void sock_fail(net_sock *s) {
    if (s->kind == NET_SOCK_CONN)
        net__conn_close((net_conn *)s);
    else
        net__link_fail((net_link *)s);
}

/* ---- output ---- */

int net__sock_queue_frame(net_sock *s, uint8_t type, const ProtobufCMessage *msg,
                          size_t frame_bytes) {
    assert(!s->closing);
    assert(frame_bytes >= KV_FRAME_HEADER_BYTES);
    if (buf_reserve(&s->out, frame_bytes) != 0)
        return KV_ENOMEM;
    size_t wrote = kv_frame_pack_into(type, msg, s->out.data + s->out.len);
    assert(wrote == frame_bytes);
    s->out.len += wrote;
    if (!s->dirty && !s->writing)
        dirty_add(s);
    return 0;
}

static void write_cb(uv_write_t *req, int status) {
    net_sock *s = req->data;
    assert(s->writing);
    s->writing = false;
    if (status == 0 && s->n != NULL)
        s->n->stats.bytes_out += s->wout.len - s->wout_off;
    s->wout.len = 0;
    s->wout_off = 0;
    if (s->wout.cap > NET_BUF_KEEP_BYTES)
        buf_free(&s->wout);
    if (s->closing) /* UV_ECANCELED from uv_close: the close callback follows */
        return;
    if (status < 0) {
        kv_log(KV_LOG_DEBUG, "IO", "write to %s: %s", s->addr, uv_strerror(status));
        sock_fail(s);
        return;
    }
    if (s->out.len > 0)
        dirty_add(s);
    else if (s->close_after_flush)
        sock_fail(s);
}

/* Writes out now as far as the socket takes it (net_int.h): a uv_write,
 * whose callback comes a loop turn later, only for what is left. */
static void sock_flush(net_sock *s) {
    if (s->writing || s->closing || s->out.len == 0)
        return;
    assert(s->wout.len == 0 && s->out.len <= UINT32_MAX);
    uv_buf_t b = uv_buf_init((char *)s->out.data, (unsigned)s->out.len);
    int rc = uv_try_write((uv_stream_t *)&s->tcp, &b, 1);
    if (rc < 0 && rc != UV_EAGAIN) {
        kv_log(KV_LOG_DEBUG, "IO", "write to %s: %s", s->addr, uv_strerror(rc));
        s->out.len = 0;
        sock_fail(s);
        return;
    }
    size_t done = rc > 0 ? (size_t)rc : 0;
    if (s->n != NULL)
        s->n->stats.bytes_out += done;
    if (done == s->out.len) {
        s->out.len = 0;
        if (s->out.cap > NET_BUF_KEEP_BYTES)
            buf_free(&s->out);
        if (s->close_after_flush)
            sock_fail(s);
        return;
    }
    net_buf t = s->out;
    s->out = s->wout;
    s->wout = t;
    s->wout_off = done;
    b = uv_buf_init((char *)s->wout.data + done, (unsigned)(s->wout.len - done));
    s->wreq.data = s;
    rc = uv_write(&s->wreq, (uv_stream_t *)&s->tcp, &b, 1, write_cb);
    if (rc < 0) {
        kv_log(KV_LOG_DEBUG, "IO", "write to %s: %s", s->addr, uv_strerror(rc));
        s->wout.len = 0;
        s->wout_off = 0;
        sock_fail(s);
        return;
    }
    s->writing = true;
}

void net_flush(net *n) {
    /* A sock whose write is in flight leaves the list; its write callback
     * puts it back when more output waits. */
    while (n->dirty != NULL) {
        net_sock *s = n->dirty;
        dirty_remove(s);
        sock_flush(s);
    }
    if (n->idle_on) {
        n->idle_on = false;
        uv_idle_stop(&n->idle);
    }
}

void net__sock_close(net_sock *s, uv_close_cb cb) {
    if (s->closing)
        return;
    dirty_remove(s);
    s->closing = true;
    uv_read_stop((uv_stream_t *)&s->tcp);
    uv_close((uv_handle_t *)&s->tcp, cb);
}

void net__sock_free_bufs(net_sock *s) {
    assert(!s->writing);
    buf_free(&s->out);
    buf_free(&s->wout);
    free(s->rbuf);
    s->rbuf = NULL;
    s->rlen = s->rcap = s->rframe = 0;
}

/* ---- input ---- */

void net__sock_bad(net_sock *s, int err, const char *fmt, ...) {
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    /* Unknown frame type comes back as KV_EINVAL; on the wire it is a
     * protocol error like any other. */
    const char *word = err == KV_EINVAL ? kv_errword(KV_EPROTO) : kv_errword(err);
    KV_LOGW(word, "%s %s: %s; closing the connection",
            s->kind == NET_SOCK_CONN ? "connection from" : "link to", s->addr, what);
    if (s->n != NULL) {
        if (err == KV_ETOOBIG)
            s->n->stats.frames_toobig++;
        else
            s->n->stats.frames_bad++;
    }
    sock_fail(s);
}

static void sock_dispatch(net_sock *s, const kv_frame_header *h, const uint8_t *payload) {
    if (s->kind == NET_SOCK_CONN)
        net__conn_on_frame((net_conn *)s, h, payload);
    else
        net__link_on_frame((net_link *)s, h, payload);
}

/* Handles the whole frames in p[0..len); returns the bytes taken. What is
 * left is a partial frame (s->rframe: its size when its header is in). */
static size_t sock_parse(net_sock *s, const uint8_t *p, size_t len) {
    size_t off = 0;
    s->rframe = 0;
    while (!net__sock_done(s) && len - off >= KV_FRAME_HEADER_BYTES) {
        kv_frame_header h;
        int rc = kv_frame_header_decode(p + off, s->n->cfg.frame_max, &h);
        if (rc == KV_ETOOBIG) {
            net__sock_bad(s, rc, "frame of %u bytes, over the limit of %u", h.length,
                          s->n->cfg.frame_max);
            return len;
        }
        if (rc != 0) {
            net__sock_bad(s, rc, "bad frame header (%s)", kv_strerror(rc));
            return len;
        }
        size_t frame = KV_FRAME_HEADER_BYTES + (size_t)h.length;
        if (len - off < frame) {
            s->rframe = frame;
            break;
        }
        const uint8_t *payload = p + off + KV_FRAME_HEADER_BYTES;
        if (kv_frame_payload_check(&h, payload) != 0) {
            net__sock_bad(s, KV_ECORRUPT, "payload of a type %u frame fails its checksum", h.type);
            return len;
        }
        off += frame;
        sock_dispatch(s, &h, payload);
    }
    return off;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    (void)suggested;
    net_sock *s = h->data;
    if (s->rlen == 0) {
        /* Nothing partial: read into the shared scratch; read_cb keeps
         * only a partial frame's bytes. */
        *buf = uv_buf_init((char *)s->n->scratch, NET_READ_CHUNK_BYTES);
        return;
    }
    size_t want = s->rlen + NET_READ_CHUNK_BYTES;
    if (want < s->rframe)
        want = s->rframe;
    if (s->rcap < want) {
        uint8_t *p = realloc(s->rbuf, want);
        if (p == NULL) {
            *buf = uv_buf_init(NULL, 0); /* read_cb gets UV_ENOBUFS */
            return;
        }
        s->rbuf = p;
        s->rcap = want;
    }
    *buf = uv_buf_init((char *)s->rbuf + s->rlen, (unsigned)(s->rcap - s->rlen));
}

/* Keeps p[0..len), a partial frame read into the scratch. */
static int keep_partial(net_sock *s, const uint8_t *p, size_t len) {
    assert(s->rlen == 0 && len > 0);
    size_t want = len + NET_READ_CHUNK_BYTES;
    if (want < s->rframe)
        want = s->rframe;
    if (s->rcap < want) {
        uint8_t *b = realloc(s->rbuf, want);
        if (b == NULL)
            return KV_ENOMEM;
        s->rbuf = b;
        s->rcap = want;
    }
    memcpy(s->rbuf, p, len);
    s->rlen = len;
    return 0;
}

static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
    net_sock *s = st->data;
    if (nread == 0 || s->closing)
        return;
    if (nread < 0) {
        if (nread != UV_EOF)
            kv_log(KV_LOG_DEBUG, "IO", "read from %s: %s", s->addr, uv_strerror((int)nread));
        sock_fail(s);
        return;
    }
    s->n->stats.bytes_in += (uint64_t)nread;
    size_t len = (size_t)nread;
    if (buf->base == (char *)s->n->scratch) {
        size_t used = sock_parse(s, s->n->scratch, len);
        if (!net__sock_done(s) && used < len && keep_partial(s, s->n->scratch + used, len - used)) {
            KV_LOGE("NOMEM", "no memory for a frame from %s; closing", s->addr);
            sock_fail(s);
        }
        return;
    }
    s->rlen += len;
    size_t used = sock_parse(s, s->rbuf, s->rlen);
    if (net__sock_done(s))
        return;
    memmove(s->rbuf, s->rbuf + used, s->rlen - used);
    s->rlen -= used;
    if (s->rlen == 0) { /* the next read goes to the scratch again */
        free(s->rbuf);
        s->rbuf = NULL;
        s->rcap = 0;
    }
}

void net__sock_user_timeout(net_sock *s, unsigned ms) {
    uv_os_fd_t fd;
    int rc = uv_fileno((const uv_handle_t *)&s->tcp, &fd);
    if (rc == 0 && setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms) != 0)
        rc = -errno;
    if (rc != 0)
        KV_LOGW("IO", "TCP_USER_TIMEOUT on the link to %s: %s", s->addr, uv_strerror(rc));
}

int net__sock_start_read(net_sock *s) {
    assert(!s->closing);
    return uv_read_start((uv_stream_t *)&s->tcp, alloc_cb, read_cb);
}
