/*
 * kv_watch (include/kv/client.h): one WATCH stream on a connection of its
 * own (a "side" connection, conn.c), kept alive across lost connections,
 * dead nodes and CANCELED by reconnecting and resuming.
 *
 * Resuming without a gap or a repeat: the client remembers the revision of
 * the last event it delivered (last_rev) and how many of that revision's
 * events it delivered (last_count; a node may split one revision's events
 * between Responses), and `through`, the revision through which the node
 * said every event was sent (Response.revision). It resumes from
 * through + 1 when that is past last_rev, else from last_rev, skipping the
 * last_count events of last_rev it already gave (the events of a revision
 * on a prefix are the same on every node, in the same order).
 */
#include "client/client_int.h"

#include "common/clock.h"
#include "kv/errors.h"
#include "kv/limits.h"
#include "net/frame.h"

#include <assert.h>
#include <string.h>
#include <time.h>

/* How long without an event before the callback hears NULL. */
#define KVC_WATCH_IDLE_MS 1000u
#define NS_PER_MS 1000000ull
/* Pause before reconnecting after a failure: doubling from min to max. */
#define KVC_WATCH_PAUSE_MS_MIN 50u
#define KVC_WATCH_PAUSE_MS_MAX 1000u
/* Internal outcomes of reading a stream (not KV_E* codes): reconnect and
 * resume, or the callback returned non-zero (kept in user_rc). */
#define KVC_WATCH_AGAIN 1
#define KVC_WATCH_STOP 2

typedef struct kvc_watch {
    kv_client *c;
    const void *prefix;
    size_t plen;
    kv_watch_fn fn;
    void *arg;
    bool started;        /* a Response arrived at least once (rev 0 resolved) */
    uint64_t through;    /* every event through it was delivered */
    uint64_t last_rev;   /* the revision of the last event delivered (0: none) */
    uint64_t last_count; /* events of last_rev delivered */
    uint64_t skip;       /* events of last_rev still to skip on this stream */
    uint64_t idle_ns;    /* when the callback last heard something */
    size_t ep;           /* the endpoint to try next */
    uint32_t pause_ms;
    int user_rc; /* the callback's non-zero return */
    kvc_conn k;
} kvc_watch;

/* The revision to ask for (0: from the node's next write, before any
 * answer said where that is) and the events to skip. */
static uint64_t watch_from(kvc_watch *w) {
    if (!w->started && w->last_rev == 0 && w->through == 0)
        return 0;
    if (w->last_rev > w->through) {
        w->skip = w->last_count;
        return w->last_rev;
    }
    w->skip = 0;
    return w->through + 1;
}

/* Calls the callback with ev (NULL: nothing for a while): 0 or
 * KVC_WATCH_STOP. */
static int watch_call(kvc_watch *w, const kv_event *ev) {
    w->idle_ns = kv_now_ns();
    w->user_rc = w->fn(w->arg, ev);
    return w->user_rc != 0 ? KVC_WATCH_STOP : 0;
}

/* Calls the callback with NULL when it heard nothing for a while. */
static int watch_idle(kvc_watch *w) {
    if (kv_now_ns() - w->idle_ns < (uint64_t)KVC_WATCH_IDLE_MS * NS_PER_MS)
        return 0;
    return watch_call(w, NULL);
}

static void watch_sleep_ms(uint32_t ms) {
    struct timespec ts = {.tv_sec = ms / 1000u, .tv_nsec = (long)(ms % 1000u) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* A pause (growing) before the next attempt, calling the callback with
 * NULL when due: 0 or KVC_WATCH_STOP. */
static int watch_pause(kvc_watch *w) {
    kvc_conn_close(&w->k);
    w->ep = (w->ep + 1) % w->c->eps_count;
    watch_sleep_ms(w->pause_ms);
    w->pause_ms =
        w->pause_ms * 2 < KVC_WATCH_PAUSE_MS_MAX ? w->pause_ms * 2 : KVC_WATCH_PAUSE_MS_MAX;
    return watch_idle(w);
}

/* Connects to the next endpoint and sends the WATCH: 0, a refusal of the
 * handshake (AUTH, CONFIG, VERSION), or KV_EUNAVAILABLE. */
static int watch_open(kvc_watch *w, uint64_t *req_id) {
    kv_client *c = w->c;
    uint64_t deadline = kv_now_ns() + (uint64_t)c->connect_timeout_ms * NS_PER_MS;
    kvc_lock(c); /* the handshake may learn the cluster id into c */
    int rc = kvc_side_open(c, &w->k, &c->eps[w->ep], deadline);
    *req_id = kvc_side_id(c);
    kvc_unlock(c);
    if (rc != 0)
        return rc;
    Kv__Request q = KV__REQUEST__INIT;
    q.id = *req_id;
    q.type = KV__REQUEST__TYPE__WATCH;
    q.key.data = (uint8_t *)w->prefix;
    q.key.len = w->plen;
    q.rev = watch_from(w);
    rc = kvc_conn_queue(&w->k, KV_FRAME_REQUEST, &q.base);
    if (rc == 0 && kvc_conn_send_all(&w->k, deadline) != 0)
        rc = KV_EUNAVAILABLE;
    return rc;
}

/* Delivers r's events that are new: 0 or KVC_WATCH_STOP. */
static int watch_deliver(kvc_watch *w, const Kv__Response *r) {
    for (size_t i = 0; i < r->n_events; i++) {
        const Kv__WatchEvent *e = r->events[i];
        const Kv__KeyValue *kv = e->kv;
        if (kv == NULL)
            continue;
        uint64_t rev = kv->mod_rev;
        if (rev == w->last_rev && w->skip > 0) {
            w->skip--; /* delivered before the stream was resumed */
            continue;
        }
        if (rev < w->last_rev || (rev <= w->through && w->started))
            continue; /* never twice, whatever a node sends */
        kv_event ev = {
            .type = e->type == KV__WATCH_EVENT__TYPE__DELETE ? KV_EVENT_DELETE : KV_EVENT_PUT,
            .key = kv->key.data,
            .key_len = kv->key.len,
            .value = kv->value.data,
            .value_len = kv->value.len,
            .revision = rev,
            .create_rev = kv->create_rev,
            .version = kv->version,
            .lease = kv->lease,
        };
        w->last_count = rev == w->last_rev ? w->last_count + 1 : 1;
        w->last_rev = rev;
        if (watch_call(w, &ev) != 0)
            return KVC_WATCH_STOP;
    }
    return 0;
}

/* One Response of the stream: 0 (go on), KVC_WATCH_AGAIN (the stream
 * ended: reconnect), KVC_WATCH_STOP, or a KV_E* code kv_watch returns. */
static int watch_response(kvc_watch *w, const Kv__Response *r) {
    if (r->code == 0) {
        int rc = watch_deliver(w, r);
        if (rc != 0)
            return rc;
        if (r->revision > w->through)
            w->through = r->revision;
        w->started = true;
        w->pause_ms = KVC_WATCH_PAUSE_MS_MIN;
        return 0;
    }
    if (r->code == KV_ECOMPACTED)
        return kvc_errstr_set(KV_ECOMPACTED,
                              "revision %llu is no longer kept; the oldest revision kept is %llu",
                              (unsigned long long)watch_from(w), (unsigned long long)r->revision);
    if (r->code == KV_ECANCELED || r->code == KV_EBUSY || r->code == KV_EUNAVAILABLE ||
        r->code == KV_ENOMEM)
        return KVC_WATCH_AGAIN; /* the node let go of us: resume (elsewhere) */
    return kvc_errstr_set(r->code, "watch refused: %s", r->detail ? r->detail : "");
}

/* Reads the stream until it ends: as watch_response (KVC_WATCH_AGAIN also
 * when the connection failed). */
static int watch_read(kvc_watch *w, uint64_t req_id) {
    for (;;) {
        uint8_t type;
        const uint8_t *p;
        uint32_t len;
        uint64_t until = w->idle_ns + (uint64_t)KVC_WATCH_IDLE_MS * NS_PER_MS;
        uint64_t now = kv_now_ns();
        int rc = kvc_conn_wait_frame(&w->k, until > now ? until : now, &type, &p, &len);
        if (rc == KV_ETIMEOUT) {
            if ((rc = watch_idle(w)) != 0)
                return rc;
            continue;
        }
        if (rc == KV_ENOMEM)
            return rc;
        if (rc != 1 || type != KV_FRAME_RESPONSE)
            return KVC_WATCH_AGAIN;
        Kv__Response *r = kv__response__unpack(NULL, len, p);
        kvc_conn_consume(&w->k, len);
        if (r == NULL)
            return KVC_WATCH_AGAIN;
        rc = r->id == req_id ? watch_response(w, r) : 0;
        kv__response__free_unpacked(r, NULL);
        if (rc != 0)
            return rc;
    }
}

int kv_watch(kv_client *c, const void *prefix, size_t prefix_len, uint64_t from_rev, kv_watch_fn fn,
             void *arg) {
    kvc_errstr_clear();
    if (c == NULL || fn == NULL || (prefix == NULL && prefix_len > 0))
        return kvc_errstr_set(KV_EINVAL, "kv_watch: client, callback and prefix are required");
    if (kvc_in_callback(c))
        return kvc_errstr_set(KV_EINVAL, "kv_watch: not from a callback of the same client");
    if (prefix_len > KV_KEY_BYTES_MAX)
        return kvc_errstr_set(KV_ETOOBIG, "kv_watch: the prefix is over %u bytes",
                              KV_KEY_BYTES_MAX);
    assert(c->eps_count > 0);
    kvc_watch w = {.c = c, .prefix = prefix, .plen = prefix_len, .fn = fn, .arg = arg};
    w.through = from_rev > 0 ? from_rev - 1 : 0;
    w.started = from_rev > 0;
    w.idle_ns = kv_now_ns();
    w.pause_ms = KVC_WATCH_PAUSE_MS_MIN;
    kvc_conn_init(&w.k);
    int rc;
    for (;;) {
        uint64_t req_id = 0;
        rc = watch_open(&w, &req_id);
        if (rc == KV_EAUTH || rc == KV_ECONFIG || rc == KV_EVERSION || rc == KV_ENOMEM)
            break;
        if (rc == 0 && (rc = watch_read(&w, req_id)) != KVC_WATCH_AGAIN)
            break;
        if ((rc = watch_pause(&w)) != 0)
            break;
    }
    kvc_conn_free(&w.k);
    assert(rc != 0 && rc != KVC_WATCH_AGAIN);
    return rc == KVC_WATCH_STOP ? w.user_rc : rc;
}
