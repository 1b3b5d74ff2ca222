/* WATCH (kv.proto): a stream of the events on a prefix, served by any node
 * from what it applied, read from the state machine's history
 * (sm_history_read). Nothing is buffered here but what the connection
 * queues: a watcher is a place in the history, and each loop turn
 * (server_watch_step, after applying) reads from there up to the applied
 * index and sends what it found. So a follower's stream is in order and
 * complete, only possibly later than the leader's.
 *
 * Every Response of a stream has the WATCH's id: the first answers the
 * request (net_reply: events, possibly none), the next are pushed
 * (net_push). Response.revision is the revision through which every event
 * was sent (the applied index once the watcher has caught up). A stream
 * ends when its connection closes or with one final Response:
 *   COMPACTED  the place is older than the oldest revision kept (revision:
 *              the oldest kept), at the start or after falling behind
 *   CANCELED   a watcher that had caught up has events to send while its
 *              connection already queues KV_WATCH_BUFFER_BYTES_MAX: its
 *              client does not keep up (it resumes from its last revision)
 * A watcher catching up (a start in the past, or after a burst) is paced
 * instead: read only while its connection queues less than half that.
 *
 * Costs: with no watchers the loop's turn pays one comparison. Reading is
 * bounded per turn (KV_WATCH_PUMP_BYTES_MAX a watcher, KV_WATCH_TURN_BYTES_MAX
 * for all); the idle handle keeps the loop turning while some watcher has
 * more to read and room to send it. */
#include "server/server_int.h"

#include "common/clock.h"
#include "common/logging.h"
#include "kv/errors.h"
#include "kv/limits.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

typedef struct server_watcher {
    net_conn *conn; /* referenced */
    uint64_t req_id;
    uint8_t *prefix; /* malloc'd (NULL when empty) */
    size_t plen;
    sm_history_pos pos; /* the next event to read */
    bool live;          /* caught up at its last read: not paced, may be CANCELED */
    uint64_t sent_rev;  /* the revision the last Response said is complete */
    uint64_t sent_ns;   /* when it was sent */
} server_watcher;

/* A watcher whose prefix sees no writes still hears, at most this often,
 * how far its stream is complete: a client resuming after a long quiet
 * spell asks from there, not from a revision the history no longer keeps. */
#define SERVER_WATCH_PROGRESS_NS 1000000000ull

/* The events of one Response, copied out of the history. */
typedef struct watch_batch {
    Kv__WatchEvent *ev;
    Kv__KeyValue *kv;
    Kv__WatchEvent **ptrs;
    size_t n, cap;
    uint64_t bytes;
} watch_batch;

static void batch_free(watch_batch *b) {
    for (size_t i = 0; i < b->n; i++)
        free(b->kv[i].key.data); /* key and value in one block */
    free(b->ev);
    free(b->kv);
    free(b->ptrs);
    memset(b, 0, sizeof(*b));
}

static int batch_grow(watch_batch *b) {
    size_t cap = b->cap ? 2 * b->cap : 16;
    Kv__WatchEvent *ev = realloc(b->ev, cap * sizeof(*ev));
    if (ev != NULL)
        b->ev = ev;
    Kv__KeyValue *kv = realloc(b->kv, cap * sizeof(*kv));
    if (kv != NULL)
        b->kv = kv;
    if (ev == NULL || kv == NULL)
        return KV_ENOMEM;
    b->cap = cap;
    return 0;
}

/* sm_history_fn: copies ev into the batch. */
static int batch_add(void *arg, const sm_event *e) {
    watch_batch *b = arg;
    if (b->n == b->cap && batch_grow(b) != 0)
        return KV_ENOMEM;
    uint8_t *mem = malloc(e->klen + e->vlen + 1);
    if (mem == NULL)
        return KV_ENOMEM;
    memcpy(mem, e->key, e->klen);
    memcpy(mem + e->klen, e->value, e->vlen);
    Kv__KeyValue *kv = &b->kv[b->n];
    kv__key_value__init(kv);
    kv->key.data = mem;
    kv->key.len = e->klen;
    kv->value.data = mem + e->klen;
    kv->value.len = e->vlen;
    kv->create_rev = e->create_rev;
    kv->mod_rev = e->type == SM_EVENT_DELETE ? e->rev : e->mod_rev;
    kv->version = e->version;
    kv->lease = e->lease;
    kv__watch_event__init(&b->ev[b->n]);
    b->ev[b->n].type =
        e->type == SM_EVENT_DELETE ? KV__WATCH_EVENT__TYPE__DELETE : KV__WATCH_EVENT__TYPE__PUT;
    b->n++;
    b->bytes += e->klen + e->vlen;
    return 0;
}

/* The pointers the Response needs, once the arrays stopped moving. */
static int batch_link(watch_batch *b) {
    if (b->n == 0)
        return 0;
    b->ptrs = malloc(b->n * sizeof(*b->ptrs));
    if (b->ptrs == NULL)
        return KV_ENOMEM;
    for (size_t i = 0; i < b->n; i++) {
        b->ev[i].kv = &b->kv[i];
        b->ptrs[i] = &b->ev[i];
    }
    return 0;
}

/* Drops watcher i (the last one takes its place). */
static void watcher_drop(server *s, uint32_t i) {
    assert(i < s->watchers_count);
    server_watcher *w = &s->watchers[i];
    net_conn_unref(w->conn);
    free(w->prefix);
    s->watchers[i] = s->watchers[--s->watchers_count];
}

/* The final Response of w's stream: code, with revision. */
static void watcher_end(server *s, server_watcher *w, int code, uint64_t revision,
                        const char *detail, bool first) {
    Kv__Response r = KV__RESPONSE__INIT;
    r.id = w->req_id;
    r.code = code;
    r.revision = revision;
    r.detail = (char *)detail;
    (void)s;
    if (first)
        net_reply(w->conn, &r);
    else
        net_push(w->conn, &r);
}

/* Reads from pos (prefix[0..plen)) up to KV_WATCH_PUMP_BYTES_MAX into b,
 * linked; *pos moves to where the read ended. 0, KV_ECOMPACTED or
 * KV_ENOMEM (b freed then); a RocksDB failure stops the node. */
static int watch_read(server *s, sm_history_pos *pos, const uint8_t *prefix, size_t plen,
                      watch_batch *b) {
    uint64_t from = pos->rev;
    int rc = sm_history_read(s->sm, pos, prefix, plen, KV_WATCH_PUMP_BYTES_MAX, batch_add, b);
    if (rc == 0)
        rc = batch_link(b);
    if (rc == KV_ECOMPACTED || rc == KV_ENOMEM)
        batch_free(b);
    else if (rc != 0)
        server_fatal_sm(s, rc, "reading the watch history from revision %" PRIu64, from);
    return rc;
}

/* Sends w evs[0..n) read up to end (always, when first: the answer to the
 * request; without events at most once a second, for progress). 0 or
 * KV_ECANCELED (a watcher that had caught up, its connection full). */
static int watcher_send(server *s, server_watcher *w, Kv__WatchEvent **evs, size_t n,
                        sm_history_pos end, bool first) {
    if (n > 0 && w->live && net_conn_queued(w->conn) >= KV_WATCH_BUFFER_BYTES_MAX)
        return KV_ECANCELED;
    w->pos = end;
    w->live = end.rev > sm_applied_index(s->sm);
    uint64_t now = kv_now_ns();
    bool progress =
        w->live && end.rev - 1 > w->sent_rev && now - w->sent_ns >= SERVER_WATCH_PROGRESS_NS;
    if (n == 0 && !first && !progress)
        return 0;
    Kv__Response r = KV__RESPONSE__INIT;
    r.id = w->req_id;
    r.revision = end.rev - 1;
    r.n_events = n;
    r.events = evs;
    if (first)
        net_reply(w->conn, &r);
    else
        net_push(w->conn, &r);
    s->watch_events_total += n;
    w->sent_rev = end.rev - 1;
    w->sent_ns = now;
    return 0;
}

/* Reads w's next events and sends them. 0 or the code that ended the
 * stream (COMPACTED, CANCELED, NOMEM). */
static int watcher_pump(server *s, server_watcher *w, bool first, uint64_t *used) {
    watch_batch b = {0};
    sm_history_pos end = w->pos;
    int rc = watch_read(s, &end, w->prefix, w->plen, &b);
    if (rc != 0)
        return rc;
    *used += b.bytes;
    rc = watcher_send(s, w, b.ptrs, b.n, end, first);
    batch_free(&b);
    return rc;
}

/* Ends w's stream with code (from watcher_pump), logged; w is dropped by
 * the caller. */
static void watcher_fail(server *s, server_watcher *w, int code, bool first) {
    uint64_t oldest = sm_history_oldest(s->sm);
    if (code == KV_ECOMPACTED) {
        KV_LOGI("COMPACTED", "watch from %s at revision %" PRIu64 ": the oldest kept is %" PRIu64,
                net_conn_peer_addr(w->conn), w->pos.rev, oldest);
        watcher_end(s, w, code, oldest, "the revision is older than the oldest kept", first);
        return;
    }
    if (code == KV_ECANCELED) {
        s->watch_canceled_total++;
        KV_LOGW("CANCELED",
                "watch from %s: over %u bytes queued while events wait; cancelled at revision "
                "%" PRIu64,
                net_conn_peer_addr(w->conn), KV_WATCH_BUFFER_BYTES_MAX, w->pos.rev);
        watcher_end(s, w, code, w->pos.rev - 1, "the watcher fell behind its buffer limit", first);
        return;
    }
    KV_LOGE(kv_errword(code), "watch from %s: %s", net_conn_peer_addr(w->conn), kv_strerror(code));
    watcher_end(s, w, code, w->pos.rev - 1, kv_strerror(code), first);
}

/* A new watcher for q on c, or why not (answered here). */
static server_watcher *watcher_add(server *s, net_conn *c, const Kv__Request *q) {
    if (q->key.len > KV_KEY_BYTES_MAX) {
        server_reply_code(c, q->id, KV_ETOOBIG, "the prefix is over 4096 bytes");
        return NULL;
    }
    if (s->watchers_count >= KV_WATCHERS_MAX) {
        KV_LOGW("BUSY", "watch from %s refused: %u watchers on this node", net_conn_peer_addr(c),
                s->watchers_count);
        server_reply_code(c, q->id, KV_EBUSY, "too many watchers on this node");
        return NULL;
    }
    if (s->watchers == NULL &&
        (s->watchers = calloc(KV_WATCHERS_MAX, sizeof(*s->watchers))) == NULL) {
        server_reply_code(c, q->id, KV_ENOMEM, "out of memory");
        return NULL;
    }
    server_watcher *w = &s->watchers[s->watchers_count];
    memset(w, 0, sizeof(*w));
    if (q->key.len > 0 && (w->prefix = malloc(q->key.len)) == NULL) {
        server_reply_code(c, q->id, KV_ENOMEM, "out of memory");
        return NULL;
    }
    if (q->key.len > 0)
        memcpy(w->prefix, q->key.data, q->key.len);
    w->plen = q->key.len;
    w->conn = c;
    w->req_id = q->id;
    w->pos.rev = q->rev != 0 ? q->rev : sm_applied_index(s->sm) + 1;
    net_conn_ref(c);
    s->watchers_count++;
    return w;
}

static void on_watch_idle(uv_idle_t *h) {
    (void)h; /* the loop turned: on_prepare runs server_watch_step */
}

void server_watch_init(server *s) {
    uv_idle_init(&s->loop, &s->watch_idle);
    s->watch_idle.data = s;
}

/* Whether w waits for nothing but a loop turn: it has events to read and
 * room to send them (else the connection's drain or an apply wakes us). */
static bool watcher_wants_turn(server_watcher *w, uint64_t applied) {
    if (w->pos.rev > applied || net_conn_closed(w->conn))
        return false;
    return w->live || net_conn_queued(w->conn) < KV_WATCH_BUFFER_BYTES_MAX / 2;
}

void server_watch_request(server *s, net_conn *c, Kv__Request *q) {
    server_watcher *w = watcher_add(s, c, q);
    kv__request__free_unpacked(q, NULL);
    if (w == NULL)
        return;
    uint64_t used = 0;
    int rc = watcher_pump(s, w, true, &used);
    if (rc != 0) {
        watcher_fail(s, w, rc, true);
        watcher_drop(s, (uint32_t)(w - s->watchers));
        return;
    }
    KV_LOGI("WATCH", "watch from %s from revision %" PRIu64 " (%u watchers)", net_conn_peer_addr(c),
            w->pos.rev, s->watchers_count);
    if (watcher_wants_turn(w, sm_applied_index(s->sm)) &&
        !uv_is_active((uv_handle_t *)&s->watch_idle))
        uv_idle_start(&s->watch_idle, on_watch_idle); /* more to read: keep the loop turning */
}

/* Whether key starts with w's prefix. */
static bool watcher_matches(const server_watcher *w, const ProtobufCBinaryData *key) {
    return key->len >= w->plen && (w->plen == 0 || memcmp(key->data, w->prefix, w->plen) == 0);
}

/* The watchers waiting at the same place g (those that had caught up all
 * wait just past the applied index before the last apply) share one read
 * of the history, of every key; each is sent what starts with its prefix.
 * With many watchers, one RocksDB read a turn instead of one each. */
static void watch_group_pump(server *s, sm_history_pos g, uint64_t applied, uint64_t *used) {
    watch_batch b = {0};
    sm_history_pos end = g;
    if (watch_read(s, &end, NULL, 0, &b) != 0)
        return; /* each watcher meets it again on its own read */
    *used += b.bytes;
    Kv__WatchEvent **sel = malloc((b.n > 0 ? b.n : 1) * sizeof(*sel));
    /* downwards: a watcher dropped takes the last one's place, already seen */
    for (uint32_t i = s->watchers_count; sel != NULL && i-- > 0;) {
        server_watcher *w = &s->watchers[i];
        if (w->pos.rev != g.rev || w->pos.event != g.event || !watcher_wants_turn(w, applied))
            continue;
        size_t n = 0;
        for (size_t k = 0; k < b.n; k++)
            if (watcher_matches(w, &b.kv[k].key))
                sel[n++] = b.ptrs[k];
        int rc = watcher_send(s, w, sel, n, end, false);
        if (rc != 0) {
            watcher_fail(s, w, rc, false);
            watcher_drop(s, i);
        }
    }
    free(sel);
    batch_free(&b);
}

/* The place of the first watcher that caught up, when another one waits
 * at the same place (in the steady state they all do). */
static bool watch_group_at(const server *s, uint64_t applied, sm_history_pos *g) {
    uint32_t same = 0;
    for (uint32_t i = 0; i < s->watchers_count; i++) {
        server_watcher *w = &s->watchers[i];
        if (!w->live || !watcher_wants_turn(w, applied))
            continue;
        if (same == 0)
            *g = w->pos;
        if (w->pos.rev == g->rev && w->pos.event == g->event && ++same == 2)
            return true;
    }
    return false;
}

void server_watch_step(server *s) {
    if (s->watchers_count == 0)
        return; /* the common case: no history read at all */
    uint64_t applied = sm_applied_index(s->sm);
    uint64_t used = 0;
    bool more = false;
    sm_history_pos g = {0, 0};
    if (watch_group_at(s, applied, &g))
        watch_group_pump(s, g, applied, &used);
    uint32_t n = s->watchers_count;
    uint32_t start = s->watch_cursor < n ? s->watch_cursor : 0;
    for (uint32_t k = 0; k < n && s->watchers_count > 0; k++) {
        uint32_t i = (start + k) % s->watchers_count;
        server_watcher *w = &s->watchers[i];
        if (net_conn_closed(w->conn)) {
            watcher_drop(s, i);
            continue;
        }
        if (!watcher_wants_turn(w, applied))
            continue;
        if (used >= KV_WATCH_TURN_BYTES_MAX) {
            more = true;
            s->watch_cursor = i; /* the next turn starts here */
            break;
        }
        int rc = watcher_pump(s, w, false, &used);
        if (rc != 0) {
            watcher_fail(s, w, rc, false);
            watcher_drop(s, i);
            continue;
        }
        more = more || watcher_wants_turn(w, applied);
    }
    if (more && !uv_is_active((uv_handle_t *)&s->watch_idle))
        uv_idle_start(&s->watch_idle, on_watch_idle);
    else if (!more && uv_is_active((uv_handle_t *)&s->watch_idle))
        uv_idle_stop(&s->watch_idle);
}

void server_watch_close(server *s) {
    while (s->watchers_count > 0)
        watcher_drop(s, s->watchers_count - 1);
    free(s->watchers);
    s->watchers = NULL;
}
