/*
 * libkvclient's engine: requests in flight on one connection, and what
 * every answer means (docs/protocol.md).
 *
 * A request ("slot") is queued, packed into the connection's output when
 * its turn comes (writes get their session number then, in queue order),
 * and stays "on the wire" until its answer. When the connection goes (the
 * node closed it, a redirect, a node without a leader), everything on the
 * wire goes back to the queue in the order first numbered (so in each
 * session's order) and is sent again, with the same (client id, seq), to
 * the next node: exactly once (docs/rules.md, "A retried write applied
 * twice"). Sessions: session.c; several threads at once: share.c.
 *
 * Outcomes. A write whose frame the kernel took and whose answer never came
 * may have been applied: it is marked unknown, and if nothing better is
 * learned before its deadline it completes with TIMEOUT, never with a
 * "failed" code. A write never delivered, or answered only "not applied"
 * (BUSY, plain NOTLEADER, UNAVAILABLE), completes with BUSY or UNAVAILABLE.
 */
#include "client/client_int.h"

#include "common/clock.h"
#include "net/frame.h"

#include <assert.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_PER_MS 1000000ull
#define MIN(a, b) ((a) < (b) ? (a) : (b))

/* A slot's index rides in the low bits of its request id. */
#define ID_INDEX_BITS 11u
_Static_assert(KVC_SLOTS_MAX <= (1u << ID_INDEX_BITS), "slot index must fit the id's low bits");
_Static_assert(KVC_SLOTS_MAX < KVC_NONE, "slot index must not collide with KVC_NONE");

/* With requests on the wire and nothing received for this long, the node
 * is taken for gone (stopped, or cut off without a reset) and the next one
 * is tried: 2 x connect_timeout_ms, at least this. */
#define ATTEMPT_MS_MIN 1000u

/* Reads per pass of the loop before it looks at deadlines again. */
#define READS_PER_PASS 16

bool kvc_is_write(Kv__Request__Type t) {
    return t == KV__REQUEST__TYPE__PUT || t == KV__REQUEST__TYPE__DELETE ||
           t == KV__REQUEST__TYPE__CAS || t == KV__REQUEST__TYPE__CAS_ABSENT ||
           t == KV__REQUEST__TYPE__TXN || t == KV__REQUEST__TYPE__DELETE_PREFIX;
}

bool kvc_is_change(Kv__Request__Type t) {
    return kvc_is_write(t) || t == KV__REQUEST__TYPE__MEMBER_ADD ||
           t == KV__REQUEST__TYPE__MEMBER_REMOVE || t == KV__REQUEST__TYPE__TRANSFER_LEADER;
}

/* ---- slots and the send queue --------------------------------------------- */

kvc_slot *kvc_slot_at(const kv_client *c, uint16_t i) {
    assert(i < c->slots_hw);
    return &c->pages[i / KVC_SLOTS_PAGE][i % KVC_SLOTS_PAGE];
}

kvc_slot *kvc_slot_alloc(kv_client *c) {
    uint16_t i;
    if (c->free_count > 0) {
        i = c->free_list[--c->free_count];
    } else if (c->slots_hw < KVC_SLOTS_MAX) {
        i = c->slots_hw;
        if (c->pages[i / KVC_SLOTS_PAGE] == NULL) {
            c->pages[i / KVC_SLOTS_PAGE] = calloc(KVC_SLOTS_PAGE, sizeof(kvc_slot));
            if (c->pages[i / KVC_SLOTS_PAGE] == NULL)
                return NULL;
        }
        c->slots_hw++;
    } else {
        return NULL;
    }
    kvc_slot *s = kvc_slot_at(c, i);
    assert(s->id == 0);
    *s = (kvc_slot){
        .index = i, .qprev = KVC_NONE, .qnext = KVC_NONE, .own = s->own, .own_cap = s->own_cap};
    s->id = (++c->next_id << ID_INDEX_BITS) | i;
    c->used++;
    return s;
}

static void slot_free(kv_client *c, kvc_slot *s) {
    assert(s->id != 0 && !s->queued && s->frame_end == 0);
    s->id = 0;
    c->free_list[c->free_count++] = s->index;
    assert(c->used > 0 && c->free_count <= KVC_SLOTS_MAX);
    c->used--;
}

void kvc_slot_release(kv_client *c, kvc_slot *s) {
    slot_free(c, s);
}

void kvc_slots_free(kv_client *c) {
    for (size_t p = 0; p < KVC_SLOT_PAGES; p++) {
        if (c->pages[p] == NULL)
            continue;
        for (size_t i = 0; i < KVC_SLOTS_PAGE; i++)
            free(c->pages[p][i].own);
        free(c->pages[p]);
        c->pages[p] = NULL;
    }
}

void kvc_queue_push(kv_client *c, kvc_slot *s) {
    assert(!s->queued && s->frame_end == 0);
    s->queued = true;
    s->qnext = KVC_NONE;
    s->qprev = c->qtail;
    if (c->qtail != KVC_NONE)
        kvc_slot_at(c, c->qtail)->qnext = s->index;
    else
        c->qhead = s->index;
    c->qtail = s->index;
}

static void queue_push_front(kv_client *c, kvc_slot *s) {
    assert(!s->queued);
    s->queued = true;
    s->qprev = KVC_NONE;
    s->qnext = c->qhead;
    if (c->qhead != KVC_NONE)
        kvc_slot_at(c, c->qhead)->qprev = s->index;
    else
        c->qtail = s->index;
    c->qhead = s->index;
}

static void queue_remove(kv_client *c, kvc_slot *s) {
    if (!s->queued)
        return;
    if (s->qprev != KVC_NONE)
        kvc_slot_at(c, s->qprev)->qnext = s->qnext;
    else
        c->qhead = s->qnext;
    if (s->qnext != KVC_NONE)
        kvc_slot_at(c, s->qnext)->qprev = s->qprev;
    else
        c->qtail = s->qprev;
    s->queued = false;
    s->qprev = s->qnext = KVC_NONE;
}

/* Takes s off the wire (answered, or its connection went). */
static void unwire(kv_client *c, kvc_slot *s) {
    if (s->frame_end == 0)
        return;
    assert(c->wire_count > 0);
    c->wire_count--;
    s->frame_end = 0;
}

/* Back to the queue after an answer that asks to try again: at the end, but
 * a REGISTER goes first (the writes wait for it). */
static void requeue(kv_client *c, kvc_slot *s) {
    if (s->type == KV__REQUEST__TYPE__REGISTER)
        queue_push_front(c, s);
    else
        kvc_queue_push(c, s);
}

/* ---- completion ------------------------------------------------------------ */

static void finish(kv_client *c, kvc_slot *s, int status, const Kv__Response *r) {
    if (s->user && status < 0 && r != NULL && r->detail != NULL && r->detail[0] != '\0')
        (void)kvc_errstr_set(status, "%s", r->detail); /* the node's words (a synchronous
                                                        * call's go to its own thread) */
    queue_remove(c, s);
    unwire(c, s);
    kvc_session_release(c, s);
    if (!s->user) {
        s->done(c, s, status, r);
        slot_free(c, s);
        return;
    }
    kv_done_fn cb = s->user_cb;
    void *arg = s->arg;
    const void *v = NULL;
    size_t vlen = 0;
    if (status == 0 && r != NULL && s->type == KV__REQUEST__TYPE__GET && r->value.len > 0) {
        v = r->value.data; /* borrowed from the arena for the callback */
        vlen = r->value.len;
    }
    slot_free(c, s);
    assert(c->user_inflight > 0);
    c->user_inflight--;
    c->completed_user++;
    cb(arg, status, v, vlen); /* may queue more: the slot is free already */
}

/* What a request that ran out of time reports (client.h). */
static int final_status(const kv_client *c, const kvc_slot *s) {
    if (kvc_is_change(s->type)) {
        bool delivered = s->frame_end != 0 && s->frame_end <= c->conn.sent_total;
        if (s->unknown || delivered)
            return KV_ETIMEOUT;
    }
    return s->busy ? KV_EBUSY : KV_EUNAVAILABLE;
}

/* Completes every request past its deadline; recomputes the earliest one. */
static void expire(kv_client *c, uint64_t now) {
    if (now < c->min_deadline_ns)
        return;
    uint64_t min = UINT64_MAX;
    c->min_deadline_ns = UINT64_MAX; /* callbacks may start requests: they lower it */
    for (uint16_t i = 0; i < c->slots_hw; i++) {
        kvc_slot *s = kvc_slot_at(c, i);
        if (s->id == 0)
            continue;
        if (s->deadline_ns <= now)
            finish(c, s, final_status(c, s), NULL);
        else
            min = MIN(min, s->deadline_ns);
    }
    c->min_deadline_ns = MIN(c->min_deadline_ns, min);
}

/* Fails everything: the handshake was refused (AUTH, CONFIG, VERSION). A
 * write that may have been applied elsewhere still says TIMEOUT. */
static void fail_all(kv_client *c, int rc) {
    for (uint16_t i = 0; i < c->slots_hw; i++) {
        kvc_slot *s = kvc_slot_at(c, i);
        if (s->id != 0)
            finish(c, s, kvc_is_change(s->type) && s->unknown ? KV_ETIMEOUT : rc, NULL);
    }
}

/* ---- the connection comes and goes ----------------------------------------- */

static int cmp_resend(const void *a, const void *b) {
    const kvc_slot *x = *(kvc_slot *const *)a, *y = *(kvc_slot *const *)b;
    bool rx = x->type == KV__REQUEST__TYPE__REGISTER, ry = y->type == KV__REQUEST__TYPE__REGISTER;
    if (rx != ry)
        return rx ? -1 : 1; /* the writes behind it wait for their session */
    uint64_t sx = x->order ? x->order : UINT64_MAX, sy = y->order ? y->order : UINT64_MAX;
    if (sx != sy)
        return sx < sy ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Everything on the wire or queued goes back to the queue, in session order
 * (a later seq applied first would make the earlier one "superseded"). */
static void requeue_all(kv_client *c) {
    kvc_slot *list[KVC_SLOTS_MAX];
    size_t n = 0;
    for (uint16_t i = 0; i < c->slots_hw; i++) {
        kvc_slot *s = kvc_slot_at(c, i);
        if (s->id == 0)
            continue;
        if (s->frame_end != 0) {
            if (s->frame_end <= c->conn.sent_total && kvc_is_change(s->type))
                s->unknown = true; /* the node may have applied it */
            unwire(c, s);
        }
        queue_remove(c, s);
        list[n++] = s;
    }
    assert(c->qhead == KVC_NONE && c->qtail == KVC_NONE);
    qsort(list, n, sizeof list[0], cmp_resend);
    for (size_t i = 0; i < n; i++)
        kvc_queue_push(c, list[i]);
}

void kvc_drop(kv_client *c) {
    requeue_all(c);
    kvc_conn_close(&c->conn);
    c->conn_gen++;
    c->drop_pending = false;
    c->is_leader = false;
    c->cur_text[0] = '\0';
    if (c->cur_ep >= 0)
        c->next_ep = ((size_t)c->cur_ep + 1) % c->eps_count;
    c->cur_ep = -1;
}

static bool is_refusal(int rc) {
    return rc == KV_EAUTH || rc == KV_ECONFIG || rc == KV_EVERSION;
}

static int try_endpoint(kv_client *c, const kvc_endpoint *ep, long idx, uint64_t deadline_ns) {
    uint64_t now = kv_now_ns();
    uint64_t d = MIN(deadline_ns, now + (uint64_t)c->connect_timeout_ms * NS_PER_MS);
    int rc = kvc_conn_open(c, &c->conn, ep, d);
    if (rc != 0)
        return rc;
    c->cur_ep = idx;
    if (idx >= 0)
        c->next_ep = (size_t)idx;
    snprintf(c->cur_text, sizeof c->cur_text, "%s", ep->text);
    c->is_leader = false;
    c->last_rx_ns = kv_now_ns();
    return 0;
}

int kvc_connect_any(kv_client *c, uint64_t deadline_ns) {
    assert(c->conn.fd < 0 && c->eps_count > 0);
    int refusal = 0;
    if (c->has_redirect) {
        c->has_redirect = false;
        long idx = -1;
        for (size_t i = 0; i < c->eps_count && idx < 0; i++)
            if (strcmp(c->eps[i].text, c->redirect.text) == 0)
                idx = (long)i;
        if (idx >= 0) {
            c->next_ep = (size_t)idx; /* one of ours: the round starts there */
        } else {
            int rc = try_endpoint(c, &c->redirect, -1, deadline_ns);
            if (rc == 0)
                return 0;
            refusal = is_refusal(rc) ? rc : refusal;
        }
    }
    for (size_t i = 0; i < c->eps_count && kv_now_ns() < deadline_ns; i++) {
        size_t idx = (c->next_ep + i) % c->eps_count;
        int rc = try_endpoint(c, &c->eps[idx], (long)idx, deadline_ns);
        if (rc == 0)
            return 0;
        if (rc == KV_ENOMEM)
            return rc;
        refusal = is_refusal(rc) ? rc : refusal;
    }
    return refusal ? refusal : KV_EUNAVAILABLE;
}

static void pause_grow(uint32_t *ms, uint32_t max) {
    *ms = *ms * 2 > max ? max : *ms * 2;
}

/* The pause before the next node, when no node leads: short while the
 * search is young (an election in progress), growing to KVC_PAUSE_MS_MAX
 * once it has lasted KVC_SEARCH_FAST_MS (no quorum: do not hammer). */
static uint64_t search_pause(kv_client *c, uint64_t now) {
    if (c->search_ns == 0)
        c->search_ns = now;
    uint64_t until = now + (uint64_t)c->pause_ms * NS_PER_MS;
    bool young = now - c->search_ns < (uint64_t)KVC_SEARCH_FAST_MS * NS_PER_MS;
    pause_grow(&c->pause_ms, young ? KVC_PAUSE_MS_SEARCH : KVC_PAUSE_MS_MAX);
    return until;
}

/* The node does not lead: go to the one it names, or after a pause to the
 * next endpoint. The connection is dropped once what it already sent is
 * read, so those answers are not taken for lost. */
static void leader_lost(kv_client *c, const char *address, uint64_t now) {
    if (c->drop_pending)
        return; /* the first answer decided where to go */
    c->is_leader = false;
    c->drop_pending = true;
    if (address != NULL && address[0] != '\0' &&
        kvc_endpoint_parse(address, strlen(address), &c->redirect) == 0) {
        c->has_redirect = true;
        if (++c->redirects_in_row <= KVC_REDIRECTS_FREE) {
            c->reconnect_ns = now;
            return;
        }
    } else {
        /* No leader known: an election. The next redirect names its winner
         * and is followed at once (a ping-pong of stale redirects never
         * passes here, so it still pauses). */
        c->redirects_in_row = 0;
    }
    c->reconnect_ns = search_pause(c, now);
}

void kvc_move(kv_client *c, const char *address) {
    assert(!c->in_loop);
    c->drop_pending = false;
    leader_lost(c, address, kv_now_ns());
    if (c->conn.fd >= 0)
        kvc_drop(c); /* and the round goes on from the next endpoint */
    c->drop_pending = false;
}

/* ---- answers ------------------------------------------------------------- */

/* A NOTLEADER or UNAVAILABLE answer to a write says whether the write was
 * proposed before the node lost its leadership or stopped
 * (Response.outcome_unknown): then it may still be applied. A plain refusal
 * means it was never proposed. */
static bool maybe_applied(const Kv__Response *r) {
    return r->outcome_unknown;
}

static void on_response(kv_client *c, const Kv__Response *r) {
    uint16_t i = (uint16_t)(r->id & ((1u << ID_INDEX_BITS) - 1));
    if (i >= c->slots_hw)
        return;
    kvc_slot *s = kvc_slot_at(c, i);
    if (s->id != r->id || s->frame_end == 0)
        return; /* a late answer to an attempt given up on */
    unwire(c, s);
    uint64_t now = kv_now_ns();
    bool write = kvc_is_write(s->type);
    switch (r->code) {
    case KV_EBUSY:
        s->busy = true;
        if (write && !s->unknown)
            kvc_session_release(c, s); /* nothing was stored: it may take a new number */
        requeue(c, s);
        c->send_pause_ns = now + (uint64_t)c->busy_ms * NS_PER_MS;
        pause_grow(&c->busy_ms, KVC_BUSY_MS_MAX);
        return;
    case KV_ENOTLEADER:
    case KV_EUNAVAILABLE:
        if (kvc_is_change(s->type) && maybe_applied(r))
            s->unknown = true;
        s->busy = false;
        requeue(c, s);
        leader_lost(c, r->code == KV_ENOTLEADER ? r->leader_address : NULL, now);
        return;
    case KV_ESTALE:
        if (write && !s->unknown && r->detail != NULL && strstr(r->detail, "expired") != NULL) {
            /* The session was evicted and this write never applied in it:
             * a new session, a new number. */
            kvc_session_drop(c, s->session);
            kvc_session_release(c, s);
            requeue(c, s);
            return;
        }
        finish(c, s, write ? KV_ETIMEOUT : r->code, r); /* superseded: unknown */
        return;
    case 0:
        c->busy_ms = KVC_BUSY_MS_MIN;
        c->pause_ms = KVC_PAUSE_MS_MIN;
        c->search_ns = 0;
        c->redirects_in_row = 0;
        if (!s->stale && s->type != KV__REQUEST__TYPE__STATUS)
            c->is_leader = true;
        break;
    default:
        break;
    }
    finish(c, s, r->code, r);
}

/* Decodes and handles the whole frames received; stops when the connection
 * is dropped under it. */
static int parse(kv_client *c, uint64_t gen) {
    for (;;) {
        uint8_t type;
        const uint8_t *p;
        uint32_t len;
        int rc = kvc_conn_frame(&c->conn, &type, &p, &len);
        if (rc <= 0)
            return rc;
        if (type != KV_FRAME_RESPONSE)
            return KV_EPROTO;
        Kv__Response *r = kv__response__unpack(&c->arena.alloc, len, p);
        kvc_conn_consume(&c->conn, len);
        if (r == NULL) {
            kvc_arena_reset(&c->arena);
            return KV_EPROTO;
        }
        on_response(c, r);
        kvc_arena_reset(&c->arena);
        if (c->conn_gen != gen)
            return 0;
    }
}

/* Reads until the socket has no more (a read that took less than it had
 * room for says so: no read that only returns EAGAIN after a whole
 * answer). */
static int read_all(kv_client *c) {
    uint64_t gen = c->conn_gen;
    for (int round = 0; round < READS_PER_PASS; round++) {
        int rc = kvc_conn_fill(&c->conn);
        if (rc == 0)
            return 0;
        if (rc > 0)
            c->last_rx_ns = kv_now_ns();
        int prc = parse(c, gen); /* what came before a close counts too */
        if (prc < 0)
            return prc;
        if (rc < 0)
            return rc;
        if (c->conn_gen != gen || c->conn.drained)
            return 0;
    }
    return 0;
}

/* Waits for the connection (and the eventfd other threads wake the runner
 * with), without the mutex (share.c). */
static int poll_io(kv_client *c, int wait_ms) {
    struct pollfd p[2] = {{.fd = c->conn.fd, .events = POLLIN | (c->conn.wlen ? POLLOUT : 0)},
                          {.fd = c->wake_fd, .events = POLLIN}};
    kvc_io_release(c, true);
    int n = poll(p, c->wake_fd >= 0 ? 2 : 1, wait_ms);
    kvc_io_reacquire(c);
    if (n <= 0)
        return 0; /* timeout, or EINTR: the loop looks again */
    if (p[1].revents & POLLIN)
        kvc_wake_drain(c);
    if (p[0].revents & POLLNVAL)
        return KV_ECLOSED;
    if ((p[0].revents & POLLOUT) || c->conn.wlen > 0) {
        int rc = kvc_conn_flush(&c->conn); /* other threads may have queued more */
        if (rc != 0)
            return rc;
    }
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR))
        return read_all(c);
    return 0;
}

/* ---- sending ------------------------------------------------------------- */

static void register_done(kv_client *c, kvc_slot *s, int status, const Kv__Response *r) {
    (void)s;
    assert(c->registering > 0);
    c->registering--;
    if (status == 0 && r != NULL && r->client_id != 0)
        kvc_session_add(c, r->client_id); /* a new session numbers from 1 */
}

/* REGISTER goes first: a write behind it may wait for its session. False
 * when no slot was free (the writes wait, then time out). */
static bool start_register(kv_client *c) {
    kvc_slot *s = kvc_slot_alloc(c);
    if (s == NULL)
        return false;
    s->type = KV__REQUEST__TYPE__REGISTER;
    s->done = register_done;
    s->deadline_ns = kv_now_ns() + (uint64_t)c->timeout_ms * NS_PER_MS;
    c->min_deadline_ns = MIN(c->min_deadline_ns, s->deadline_ns);
    c->registering++;
    queue_push_front(c, s);
    return true;
}

static int pack(kv_client *c, const kvc_slot *s) {
    Kv__Request q = KV__REQUEST__INIT;
    q.id = s->id;
    q.type = s->type;
    q.client_id = s->session;
    q.seq = s->seq;
    q.key = (ProtobufCBinaryData){s->key_len, (uint8_t *)s->key};
    q.value = (ProtobufCBinaryData){s->value_len, (uint8_t *)s->value};
    q.expected = (ProtobufCBinaryData){s->expected_len, (uint8_t *)s->expected};
    q.start_after = (ProtobufCBinaryData){s->start_after_len, (uint8_t *)s->start_after};
    q.stale = s->stale;
    q.limit = s->limit;
    q.name = (char *)(s->name ? s->name : "");
    q.address = (char *)(s->address ? s->address : "");
    q.txn = (Kv__Txn *)s->txn; /* packed, never changed */
    return kvc_conn_queue(&c->conn, KV_FRAME_REQUEST, &q.base);
}

/* Packs queued requests into the output, in order, numbering writes in
 * sessions (session.c: registering more as writes in flight grow; the
 * first write waits for the first session). */
static void fill(kv_client *c, uint64_t now) {
    if (c->drop_pending || now < c->send_pause_ns)
        return;
    while (c->qhead != KVC_NONE && c->conn.wlen < KVC_WBUF_BYTES_SOFT) {
        kvc_slot *s = kvc_slot_at(c, c->qhead);
        if (kvc_is_write(s->type) && s->seq == 0) {
            bool reg;
            kvc_session *x = kvc_session_pick(c, &reg);
            reg = reg && start_register(c); /* at the head of the queue now */
            if (x != NULL)
                kvc_session_number(c, x, s);
            if (reg)
                continue; /* the REGISTER goes first, s after it */
            if (x == NULL)
                break; /* writes wait for the first session */
        }
        int rc = pack(c, s);
        if (rc != 0) {
            finish(c, s, rc, NULL);
            continue;
        }
        queue_remove(c, s);
        if (c->wire_count == 0)
            c->last_rx_ns = now; /* the wire was idle: the wait starts now */
        s->frame_end = c->conn.out_total;
        c->wire_count++;
    }
}

int kvc_send_queued(kv_client *c) {
    fill(c, kv_now_ns());
    return kvc_conn_flush(&c->conn);
}

/* The earliest deadline of all requests, freshly computed. */
static uint64_t earliest_deadline(const kv_client *c) {
    uint64_t min = UINT64_MAX;
    for (uint16_t i = 0; i < c->slots_hw; i++) {
        const kvc_slot *s = kvc_slot_at(c, i);
        if (s->id != 0)
            min = MIN(min, s->deadline_ns);
    }
    return min;
}

/* ---- the loop -------------------------------------------------------------- */

/* A pause, without the mutex (share.c). */
static void sleep_until(kv_client *c, uint64_t until_ns, uint64_t now) {
    kvc_io_release(c, false);
    (void)poll(NULL, 0, kvc_wait_ms(until_ns, now));
    kvc_io_reacquire(c);
}

int kvc_loop(kv_client *c, uint64_t until_ns, const kvc_result *wait) {
    assert(!c->in_loop);
    c->in_loop = true;
    uint64_t done0 = c->completed_user;
    uint64_t attempt_ns =
        (uint64_t)(2u * c->connect_timeout_ms > ATTEMPT_MS_MIN ? 2u * c->connect_timeout_ms
                                                               : ATTEMPT_MS_MIN) *
        NS_PER_MS;
    for (bool first = true;; first = false) {
        uint64_t now = kv_now_ns();
        expire(c, now);
        if (wait != NULL ? wait->done : c->completed_user != done0)
            break;
        if (c->used == 0 || (!first && now >= until_ns))
            break;
        uint64_t wake = MIN(until_ns, c->min_deadline_ns);
        if (c->conn.fd < 0) {
            if (now < c->reconnect_ns) {
                sleep_until(c, MIN(wake, c->reconnect_ns), now);
                continue;
            }
            uint64_t deadline = earliest_deadline(c);
            c->connecting = true; /* without the mutex: nobody else touches conn */
            kvc_io_release(c, false);
            int rc = kvc_connect_any(c, deadline);
            kvc_io_reacquire(c);
            c->connecting = false;
            if (is_refusal(rc) || rc == KV_ENOMEM) {
                fail_all(c, rc);
            } else if (rc != 0) {
                c->reconnect_ns = search_pause(c, kv_now_ns());
            }
            continue;
        }
        if (c->wire_count == 0 && c->qhead != KVC_NONE && !kvc_conn_alive_at(&c->conn, now)) {
            kvc_drop(c);
            c->reconnect_ns = now;
            continue;
        }
        fill(c, now);
        int rc = kvc_conn_flush(&c->conn);
        if (rc == 0) {
            if (c->qhead != KVC_NONE && c->send_pause_ns > now)
                wake = MIN(wake, c->send_pause_ns);
            if (c->wire_count > 0)
                wake = MIN(wake, c->last_rx_ns + attempt_ns);
            rc = poll_io(c, first && until_ns <= now ? 0 : kvc_wait_ms(wake, now));
        }
        if (rc == 0 && c->wire_count > 0 && !c->drop_pending &&
            kv_now_ns() >= c->last_rx_ns + attempt_ns)
            rc = KV_ETIMEOUT; /* the node went silent: try another */
        if (rc < 0 || c->drop_pending) {
            if (rc < 0)
                c->reconnect_ns = now; /* the next endpoint, at once */
            kvc_drop(c);
        }
    }
    c->in_loop = false;
    return (int)(c->completed_user - done0);
}
