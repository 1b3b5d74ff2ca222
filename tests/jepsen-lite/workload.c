/*
 * kv-jepsen: the client threads (see jepsen.h).
 *
 * Register workload: get / put / cas on a few keys "jl<k>" with unique
 * values (client id in the high bits), recorded for kvlinz under linz.h's
 * rules: KV_ETIMEOUT (and any error that does not say "not applied") ->
 * unknown outcome; KV_EUNAVAILABLE and KV_EBUSY -> definitely failed, not
 * given to the checker; KV_ECOMPARE -> cas completed with ok = false; get
 * KV_ENOTFOUND -> read of absent; a failed get is not given to the checker.
 *
 * Set workload: each add puts a new key "js<client>-<n>"; the element is
 * the key. After healing, set_final_check reads the whole set once
 * (linearizable scan) and has every node's state machine compared at one
 * log index (kv_check): every acknowledged add must be there, and nothing
 * that was never attempted or definitely failed.
 *
 * --control stale-read: gets use kv_get_stale through a client pinned to one
 * node (client i reads from node i % nodes), which may be behind.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "jepsen.h"
#include "kv/client.h"

/* Stop issuing operations on a key past this many (the checker searches at
 * most LINZ_KEY_OPS_MAX per key). */
#define KEY_OPS_CAP 3500u

client_ctx clients[CLIENTS_MAX];
atomic_bool stop_clients;
uint64_t think_ms_max;
static atomic_uint key_ops[KEYS_MAX];
static _Atomic int64_t last_written[KEYS_MAX]; /* 0: none yet */

void key_name(int k, char *out, size_t n) {
    snprintf(out, n, "jl%d", k);
}

static void note_err(client_ctx *cx, int rc) {
    int i = -rc;
    if (i > 0 && i < 32)
        cx->errs[i]++;
}

static bool definitely_failed(int rc) {
    return rc == KV_EUNAVAILABLE || rc == KV_EBUSY;
}

/* Parses a decimal value read back; false if it is not one of ours. */
static bool parse_value(const void *v, size_t n, int64_t *out) {
    char buf[32];
    if (n == 0 || n >= sizeof buf)
        return false;
    memcpy(buf, v, n);
    buf[n] = 0;
    char *end;
    errno = 0;
    long long x = strtoll(buf, &end, 10);
    if (errno != 0 || *end != 0 || x <= 0)
        return false;
    *out = (int64_t)x;
    return true;
}

static int open_client(kv_client **out, const char *eps) {
    struct kv_client_options o;
    kv_client_options_init(&o);
    o.timeout_ms = 1000;
    o.connect_timeout_ms = 300;
    while (!atomic_load(&stop_clients)) {
        if (kv_client_open(out, eps, &o) == 0)
            return 0;
        sleep_ms(50);
    }
    return -1;
}

static void do_get(client_ctx *cx, kv_client *c, kv_client *reader, int k, const char *key) {
    void *v = NULL;
    size_t vn = 0, idx;
    uint64_t t1 = now_ns();
    int rc = reader != NULL ? kv_get_stale(reader, key, strlen(key), &v, &vn, NULL)
                            : kv_get(c, key, strlen(key), &v, &vn);
    uint64_t t2 = now_ns();
    if (rc != 0 && rc != KV_ENOTFOUND) {
        /* A read that failed constrains nothing: not given to the checker. */
        note_err(cx, rc);
        if (definitely_failed(rc))
            cx->c[K_GET].failed++;
        else
            cx->c[K_GET].unknown++;
        kv_free(v);
        return;
    }
    linz_value obs = linz_absent();
    int64_t x;
    if (rc == 0 && !parse_value(v, vn, &x)) {
        logf_("client %d: get %s returned a value not written by this test (%zu bytes)", cx->id,
              key, vn);
        cx->fatal = 1;
    } else if (rc == 0) {
        obs = linz_val(x);
        cx->seen_present[k] = true;
        cx->seen[k] = x;
        cx->c[K_GET].ok++;
    } else {
        cx->seen_present[k] = false;
        cx->c[K_GET].absent++;
    }
    kv_free(v);
    if (linz_invoke_read(&cx->h, (uint32_t)cx->id, key, t1, &idx) != 0)
        abort();
    linz_complete_read(&cx->h, idx, t2, obs);
}

static void do_put(client_ctx *cx, kv_client *c, int k, const char *key, int64_t val) {
    char vbuf[32];
    int vlen = snprintf(vbuf, sizeof vbuf, "%" PRId64, val);
    size_t idx;
    atomic_store(&last_written[k], val);
    uint64_t t1 = now_ns();
    int rc = kv_put(c, key, strlen(key), vbuf, (size_t)vlen);
    uint64_t t2 = now_ns();
    if (definitely_failed(rc)) {
        note_err(cx, rc);
        cx->c[K_PUT].failed++;
        return;
    }
    if (linz_invoke_write(&cx->h, (uint32_t)cx->id, key, val, t1, &idx) != 0)
        abort();
    if (rc == 0) {
        linz_complete_write(&cx->h, idx, t2);
        cx->c[K_PUT].ok++;
        cx->seen_present[k] = true;
        cx->seen[k] = val;
    } else {
        note_err(cx, rc);
        cx->c[K_PUT].unknown++;
    }
}

/* Expected: what this client last saw (50%), the latest value any client
 * started writing (35%), or absent (15%). */
static linz_value cas_expect(client_ctx *cx, int k) {
    uint64_t e = rng_range(&cx->r, 0, 99);
    if (e < 50 && cx->seen_present[k])
        return linz_val(cx->seen[k]);
    if (e < 85 && atomic_load(&last_written[k]) != 0)
        return linz_val(atomic_load(&last_written[k]));
    return linz_absent();
}

static void do_cas(client_ctx *cx, kv_client *c, int k, const char *key, int64_t val) {
    linz_value expect = cas_expect(cx, k);
    char ebuf[32], vbuf[32];
    int elen = expect.present ? snprintf(ebuf, sizeof ebuf, "%" PRId64, expect.value) : 0;
    int vlen = snprintf(vbuf, sizeof vbuf, "%" PRId64, val);
    size_t idx;
    atomic_store(&last_written[k], val);
    uint64_t t1 = now_ns();
    int rc =
        kv_cas(c, key, strlen(key), expect.present ? ebuf : NULL, (size_t)elen, vbuf, (size_t)vlen);
    uint64_t t2 = now_ns();
    if (definitely_failed(rc)) {
        note_err(cx, rc);
        cx->c[K_CAS].failed++;
        return;
    }
    if (linz_invoke_cas(&cx->h, (uint32_t)cx->id, key, expect, val, t1, &idx) != 0)
        abort();
    if (rc == 0) {
        linz_complete_cas(&cx->h, idx, t2, true);
        cx->c[K_CAS].ok++;
        cx->seen_present[k] = true;
        cx->seen[k] = val;
    } else if (rc == KV_ECOMPARE) {
        linz_complete_cas(&cx->h, idx, t2, false);
        cx->c[K_CAS].cmp++;
    } else {
        note_err(cx, rc);
        cx->c[K_CAS].unknown++;
    }
}

static void register_op(client_ctx *cx, kv_client *c, kv_client *reader, uint64_t *counter) {
    int k = (int)rng_range(&cx->r, 0, (uint64_t)opt.keys - 1);
    if (atomic_fetch_add(&key_ops[k], 1) >= KEY_OPS_CAP) {
        sleep_ms(5);
        return;
    }
    char key[16];
    key_name(k, key, sizeof key);
    uint64_t pick = rng_range(&cx->r, 0, 99);
    /* Unique values: client id in the high bits, a counter below. */
    int64_t val = (int64_t)(((uint64_t)(cx->id + 1) << 40) | ++*counter);
    if (pick < 40)
        do_get(cx, c, reader, k, key);
    else if (pick < 70)
        do_put(cx, c, k, key, val);
    else
        do_cas(cx, c, k, key, val);
}

static void set_op(client_ctx *cx, kv_client *c) {
    if (cx->adds_count >= SET_ADDS_MAX) {
        sleep_ms(5);
        return;
    }
    set_add *a = &cx->adds[cx->adds_count];
    a->n = cx->adds_count++;
    char key[32];
    snprintf(key, sizeof key, "js%d-%" PRIu32, cx->id, a->n);
    a->invoke = now_ns();
    int rc = kv_put(c, key, strlen(key), "1", 1);
    a->complete = now_ns();
    if (rc == 0) {
        a->outcome = 1;
        cx->c[K_ADD].ok++;
        return;
    }
    note_err(cx, rc);
    a->outcome = definitely_failed(rc) ? -1 : 0;
    if (a->outcome == 0) {
        a->complete = LINZ_TIME_INF;
        cx->c[K_ADD].unknown++;
    } else {
        cx->c[K_ADD].failed++;
    }
}

void *client_main(void *arg) {
    client_ctx *cx = arg;
    kv_client *c = NULL, *reader = NULL;
    if (open_client(&c, endpoints) != 0)
        return NULL;
    if (opt.control == CONTROL_STALE_READ && !cx->set_client) {
        char ep[64];
        node_addr(cx->id % opt.nodes, ep, sizeof ep);
        if (open_client(&reader, ep) != 0) {
            kv_client_close(c);
            return NULL;
        }
    }
    uint64_t counter = 0;
    while (!atomic_load(&stop_clients) && !cx->fatal) {
        if (cx->set_client)
            set_op(cx, c);
        else if (cx->bank_client)
            bank_op(cx, c);
        else
            register_op(cx, c, reader, &counter);
        /* A little think time keeps the history within the checker's reach. */
        sleep_ms(rng_range(&cx->r, 0, think_ms_max));
    }
    kv_client_close(c);
    if (reader != NULL)
        kv_client_close(reader);
    return NULL;
}
