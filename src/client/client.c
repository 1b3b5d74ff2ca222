/*
 * libkvclient: the public API (include/kv/client.h) on the engine
 * (engine.c). A synchronous call queues one request and runs the engine's
 * loop until it completes, or, when another thread runs the loop, waits for
 * it to (share.c); the asynchronous form queues many and lets
 * kv_client_poll run the loop.
 *
 * Only the functions of client.h and errors.h leave the shared library
 * (kvclient.map).
 */
#include "client/client_int.h"

#include "common/clock.h"
#include "net/frame.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_PER_MS 1000000ull
#define MIN(a, b) ((a) < (b) ? (a) : (b))

/* ---- options, open, close -------------------------------------------------- */

void kv_client_options_init(struct kv_client_options *o) {
    if (o == NULL)
        return;
    *o = (struct kv_client_options){.timeout_ms = KVC_TIMEOUT_MS_DEFAULT,
                                    .connect_timeout_ms = KVC_CONNECT_TIMEOUT_MS_DEFAULT};
}

/* The first line of path, without its end of line. *out is malloc'd. */
static int read_token_file(const char *path, char **out) {
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return kvc_errstr_set(errno == ENOENT   ? KV_EMISSING
                              : errno == EACCES ? KV_EPERM
                                                : KV_EIO,
                              "token file %s: %s", path, strerror(errno));
    char buf[KVC_TOKEN_BYTES_MAX + 2];
    size_t n = 0;
    if (fgets(buf, sizeof buf, f) != NULL)
        n = strcspn(buf, "\r\n");
    bool too_long = n > KVC_TOKEN_BYTES_MAX;
    fclose(f);
    if (too_long)
        return kvc_errstr_set(KV_EINVAL, "token file %s: the first line is over %u bytes", path,
                              KVC_TOKEN_BYTES_MAX);
    buf[n] = '\0';
    *out = strdup(buf);
    return *out ? 0 : KV_ENOMEM;
}

int kv_client_open(kv_client **out, const char *endpoints, const struct kv_client_options *opts) {
    kvc_errstr_clear();
    if (out == NULL)
        return KV_EINVAL;
    *out = NULL;
    kv_client *c = calloc(1, sizeof *c);
    if (c == NULL)
        return KV_ENOMEM;
    struct kv_client_options o;
    kv_client_options_init(&o);
    if (opts != NULL)
        o = *opts;
    c->timeout_ms = o.timeout_ms ? o.timeout_ms : KVC_TIMEOUT_MS_DEFAULT;
    c->connect_timeout_ms =
        o.connect_timeout_ms ? o.connect_timeout_ms : KVC_CONNECT_TIMEOUT_MS_DEFAULT;
    c->qhead = c->qtail = KVC_NONE;
    c->max_inflight = KV_CONN_INFLIGHT_REQUESTS_MAX;
    c->pause_ms = KVC_PAUSE_MS_MIN;
    c->busy_ms = KVC_BUSY_MS_MIN;
    c->cur_ep = -1;
    c->min_deadline_ns = UINT64_MAX;
    c->wake_fd = -1;
    kvc_conn_init(&c->conn);
    kvc_arena_init(&c->arena);
    int rc = kvc_share_init(c);
    if (rc == 0)
        rc = kvc_endpoints_parse(endpoints, c->eps, &c->eps_count);
    if (rc == 0 && o.token != NULL) {
        c->token = strdup(o.token);
        rc = c->token ? 0 : KV_ENOMEM;
    } else if (rc == 0 && o.token_file != NULL) {
        rc = read_token_file(o.token_file, &c->token);
    }
    uint64_t deadline = kv_now_ns() + (uint64_t)c->timeout_ms * NS_PER_MS;
    while (rc == 0) {
        rc = kvc_connect_any(c, deadline);
        if (rc != KV_EUNAVAILABLE)
            break;
        uint64_t now = kv_now_ns();
        if (now >= deadline)
            break;
        uint64_t until = MIN(deadline, now + (uint64_t)c->pause_ms * NS_PER_MS);
        (void)poll(NULL, 0, kvc_wait_ms(until, now));
        c->pause_ms = MIN(2 * c->pause_ms, KVC_PAUSE_MS_MAX);
        rc = 0;
    }
    if (rc != 0) {
        kv_client_close(c);
        return rc;
    }
    c->pause_ms = KVC_PAUSE_MS_MIN;
    *out = c;
    return 0;
}

/* Requests still queued or in flight are dropped without their callbacks. */
void kv_client_close(kv_client *c) {
    if (c == NULL)
        return;
    assert(!c->in_loop);
    kvc_conn_free(&c->conn);
    kvc_arena_free(&c->arena);
    kvc_slots_free(c);
    kvc_share_free(c);
    free(c->token);
    free(c->cluster_id);
    free(c);
}

/* A copy per thread: another thread's call may move the client meanwhile. */
static _Thread_local char kvc__endpoint[KVC_ADDR_BYTES];

const char *kv_client_endpoint(const kv_client *cc, bool *is_leader) {
    kv_client *c = (kv_client *)cc; /* the mutex */
    if (c == NULL) {
        if (is_leader != NULL)
            *is_leader = false;
        return NULL;
    }
    kvc_lock(c);
    bool connected = c->conn.fd >= 0 && !c->connecting;
    if (is_leader != NULL)
        *is_leader = connected && c->is_leader;
    if (connected)
        snprintf(kvc__endpoint, sizeof kvc__endpoint, "%s", c->cur_text);
    kvc_unlock(c);
    return connected ? kvc__endpoint : NULL;
}

void kv_free(void *p) {
    free(p);
}

void kv_pairs_free(kv_pair *pairs, size_t count) {
    if (pairs == NULL)
        return;
    for (size_t i = 0; i < count; i++)
        free(pairs[i].key); /* the value shares the key's block */
    free(pairs);
}

/* ---- argument checks ------------------------------------------------------- */

/* Every call with a key starts here: the error detail is cleared. */
int kvc_check_key(const void *key, size_t len) {
    kvc_errstr_clear();
    if (key == NULL)
        return kvc_errstr_set(KV_EINVAL, "the key is NULL");
    if (len == 0)
        return kvc_errstr_set(KV_EINVAL, "an empty key: a key is 1 to %u bytes", KV_KEY_BYTES_MAX);
    if (len > KV_KEY_BYTES_MAX)
        return kvc_errstr_set(KV_ETOOBIG, "key of %zu bytes is over KV_KEY_BYTES_MAX (%u)", len,
                              KV_KEY_BYTES_MAX);
    return 0;
}

int kvc_check_value(const void *v, size_t len) {
    if (v == NULL && len > 0)
        return kvc_errstr_set(KV_EINVAL, "the value is NULL with a length of %zu", len);
    if (len > KV_VALUE_BYTES_MAX)
        return kvc_errstr_set(KV_ETOOBIG, "value of %zu bytes is over KV_VALUE_BYTES_MAX (%u)",
                              len, KV_VALUE_BYTES_MAX);
    return 0;
}

/* ---- synchronous calls ----------------------------------------------------- */

static void *dup_bytes(const ProtobufCBinaryData *b) {
    if (b->len == 0)
        return NULL;
    void *p = malloc(b->len);
    if (p != NULL)
        memcpy(p, b->data, b->len);
    return p;
}

static int copy_pairs(const Kv__Response *r, kvc_result *res) {
    res->more = r->more;
    if (r->n_kvs == 0)
        return 0;
    res->pairs = calloc(r->n_kvs, sizeof *res->pairs);
    if (res->pairs == NULL)
        return KV_ENOMEM;
    if (res->want_infos && (res->infos = calloc(r->n_kvs, sizeof *res->infos)) == NULL)
        return KV_ENOMEM;
    for (size_t i = 0; res->infos != NULL && i < r->n_kvs; i++)
        kvc_keyinfo_of(r->kvs[i], &res->infos[i]);
    for (size_t i = 0; i < r->n_kvs; i++) {
        const Kv__KeyValue *kv = r->kvs[i];
        uint8_t *b = malloc(kv->key.len + kv->value.len + 1);
        if (b == NULL)
            return KV_ENOMEM; /* the caller frees the count made so far */
        if (kv->key.len > 0)
            memcpy(b, kv->key.data, kv->key.len);
        if (kv->value.len > 0)
            memcpy(b + kv->key.len, kv->value.data, kv->value.len);
        res->pairs[i] = (kv_pair){.key = b,
                                  .key_len = kv->key.len,
                                  .value = kv->value.len ? b + kv->key.len : NULL,
                                  .value_len = kv->value.len};
        res->count = i + 1;
    }
    return 0;
}

/* One line of key=value; the warning (free text) goes last. */
static int status_line(const Kv__NodeStatus *st, char **line) {
    const char *w = st->warning && st->warning[0] ? st->warning : NULL;
    int n = asprintf(line,
                     "name=%s address=%s role=%s term=%" PRIu64 " leader=%s commit=%" PRIu64
                     " applied=%" PRIu64 " last=%" PRIu64 " snapshot=%" PRIu64
                     " version=%s cluster=%s unsafe_no_fsync=%s%s%s",
                     st->name, st->address, st->role, st->term, st->leader_name, st->commit,
                     st->applied, st->last_index, st->snapshot_index, st->version, st->cluster_id,
                     st->unsafe_no_fsync ? "true" : "false", w ? " warning=" : "", w ? w : "");
    if (n < 0) {
        *line = NULL;
        return KV_ENOMEM;
    }
    for (char *p = *line; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    return 0;
}

/* Who answered a STATUS, its leader and its membership. */
static int copy_members(const Kv__NodeStatus *st, kvc_result *res) {
    snprintf(res->node_name, sizeof res->node_name, "%s", st->name ? st->name : "");
    snprintf(res->leader_name, sizeof res->leader_name, "%s",
             st->leader_name ? st->leader_name : "");
    res->transferring = st->transferring_to != NULL && st->transferring_to[0] != '\0';
    const Kv__Membership *m = st->membership;
    res->has_membership = m != NULL;
    if (m == NULL || m->n_members == 0)
        return 0;
    res->members = calloc(m->n_members, sizeof *res->members);
    if (res->members == NULL)
        return KV_ENOMEM;
    for (size_t i = 0; i < m->n_members; i++) {
        const Kv__Member *x = m->members[i];
        kv_member *y = &res->members[res->members_count++];
        snprintf(y->name, sizeof y->name, "%s", x->name ? x->name : "");
        snprintf(y->address, sizeof y->address, "%s", x->address ? x->address : "");
        y->id = x->id;
        y->learner = x->learner;
        y->joining = x->joining;
    }
    return 0;
}

static int copy_result(const kvc_slot *s, int status, const Kv__Response *r, kvc_result *res) {
    res->unknown = s->unknown;
    if (r == NULL)
        return status;
    res->index = r->index;
    res->hash = r->hash;
    switch (s->type) {
    case KV__REQUEST__TYPE__GET:
        if (status == 0 && r->value.len > 0 && (res->value = dup_bytes(&r->value)) == NULL)
            return KV_ENOMEM;
        res->value_len = status == 0 ? r->value.len : 0;
        kvc_keyinfo_of(status == 0 ? r->kv : NULL, &res->info);
        break;
    case KV__REQUEST__TYPE__CAS:
    case KV__REQUEST__TYPE__CAS_ABSENT:
        if (status != KV_ECOMPARE || !res->want_current)
            break;
        res->present = r->current_present;
        if (r->current.len > 0 && (res->value = dup_bytes(&r->current)) == NULL)
            return KV_ENOMEM;
        res->value_len = r->current.len;
        break;
    case KV__REQUEST__TYPE__SCAN:
        if (status == 0 && copy_pairs(r, res) != 0)
            return KV_ENOMEM;
        break;
    case KV__REQUEST__TYPE__TXN:
        if (status == 0 && kvc_txn_copy(r, res) != 0)
            return KV_ENOMEM;
        break;
    case KV__REQUEST__TYPE__DELETE_PREFIX:
        res->deleted = status == 0 ? r->deleted : 0;
        res->more_deleted = status == 0 && r->more_deleted;
        break;
    case KV__REQUEST__TYPE__STATUS:
        if (status == 0 && r->status == NULL)
            return KV_EPROTO;
        if (status == 0 && res->want_members)
            return copy_members(r->status, res);
        if (status == 0 && status_line(r->status, &res->line) != 0)
            return KV_ENOMEM;
        break;
    case KV__REQUEST__TYPE__LEASE_GRANT:
    case KV__REQUEST__TYPE__LEASE_REVOKE:
    case KV__REQUEST__TYPE__LEASE_KEEPALIVE:
    case KV__REQUEST__TYPE__LEASE_LIST:
        if (status == 0 && kvc_lease_result(s, r, res) != 0)
            return KV_ENOMEM;
        break;
    default:
        break;
    }
    return status;
}

/* Runs on the thread that runs the loop, maybe not the caller's. */
static void sync_done(kv_client *c, kvc_slot *s, int status, const Kv__Response *r) {
    kvc_result *res = s->arg;
    if (r != NULL)
        snprintf(res->endpoint, sizeof res->endpoint, "%s", c->cur_text);
    if (status < 0 && r != NULL && r->detail != NULL)
        snprintf(res->detail, sizeof res->detail, "%s", r->detail);
    res->status = copy_result(s, status, r, res);
    kvc_share_complete(c, res); /* the last access to res */
}

/* On 0 the client's mutex is held until kvc_sync_run. */
kvc_slot *kvc_sync_begin(kv_client *c, Kv__Request__Type type, kvc_result *res, int *rc) {
    if (c == NULL) {
        *rc = KV_EINVAL;
        return NULL;
    }
    *rc = kvc_share_begin(c);
    if (*rc != 0)
        return NULL;
    kvc_slot *s = kvc_slot_alloc(c);
    if (s == NULL) {
        kvc_share_abort(c);
        *rc = KV_ENOMEM;
        return NULL;
    }
    s->type = type;
    s->done = sync_done;
    s->arg = res;
    return s;
}

static void start_until(kv_client *c, kvc_slot *s, uint64_t deadline_ns) {
    s->deadline_ns = deadline_ns;
    c->min_deadline_ns = MIN(c->min_deadline_ns, s->deadline_ns);
    kvc_queue_push(c, s);
}

static void start(kv_client *c, kvc_slot *s) {
    start_until(c, s, kv_now_ns() + (uint64_t)c->timeout_ms * NS_PER_MS);
}

/* Runs s to its end; the caller's buffers stay borrowed until then. */
int kvc_sync_run(kv_client *c, kvc_slot *s, kvc_result *res, uint64_t deadline_ns) {
    if (deadline_ns == 0)
        deadline_ns = kv_now_ns() + (uint64_t)c->timeout_ms * NS_PER_MS;
    start_until(c, s, deadline_ns);
    kvc_share_run(c, res); /* returns without the mutex */
    assert(res->done);
    if (res->status < 0 && res->detail[0] != '\0')
        (void)kvc_errstr_set(res->status, "%s", res->detail); /* the node's words */
    return res->status;
}

static int sync_run(kv_client *c, kvc_slot *s, kvc_result *res) {
    return kvc_sync_run(c, s, res, 0);
}

int kv_put(kv_client *c, const void *key, size_t key_len, const void *value, size_t value_len) {
    return kv_put_lease(c, key, key_len, value, value_len, 0); /* lease.c */
}

static int get(kv_client *c, const void *key, size_t key_len, bool stale, void **value,
               size_t *value_len, uint64_t *applied_index, kv_keyinfo *info) {
    if (value == NULL || value_len == NULL)
        return KV_EINVAL;
    *value = NULL;
    *value_len = 0;
    int rc = kvc_check_key(key, key_len);
    kvc_result res = {0};
    kvc_slot *s = rc == 0 ? kvc_sync_begin(c, KV__REQUEST__TYPE__GET, &res, &rc) : NULL;
    if (s == NULL)
        return rc;
    s->key = key;
    s->key_len = (uint32_t)key_len;
    s->stale = stale;
    rc = sync_run(c, s, &res);
    if (rc == 0) {
        *value = res.value;
        *value_len = res.value_len;
        if (applied_index != NULL)
            *applied_index = res.index;
        if (info != NULL)
            *info = res.info;
    } else {
        free(res.value);
    }
    return rc;
}

int kv_get(kv_client *c, const void *key, size_t key_len, void **value, size_t *value_len) {
    return get(c, key, key_len, false, value, value_len, NULL, NULL);
}

int kv_get_ex(kv_client *c, const void *key, size_t key_len, void **value, size_t *value_len,
              kv_keyinfo *info) {
    if (info != NULL)
        *info = (kv_keyinfo){0};
    return get(c, key, key_len, false, value, value_len, NULL, info);
}

int kv_get_stale(kv_client *c, const void *key, size_t key_len, void **value, size_t *value_len,
                 uint64_t *applied_index) {
    return kv_get_stale_ex(c, key, key_len, value, value_len, applied_index, NULL);
}

int kv_get_stale_ex(kv_client *c, const void *key, size_t key_len, void **value,
                    size_t *value_len, uint64_t *applied_index, kv_keyinfo *info) {
    if (info != NULL)
        *info = (kv_keyinfo){0};
    return get(c, key, key_len, true, value, value_len, applied_index, info);
}

int kv_del(kv_client *c, const void *key, size_t key_len) {
    int rc = kvc_check_key(key, key_len);
    kvc_result res = {0};
    kvc_slot *s = rc == 0 ? kvc_sync_begin(c, KV__REQUEST__TYPE__DELETE, &res, &rc) : NULL;
    if (s == NULL)
        return rc;
    s->key = key;
    s->key_len = (uint32_t)key_len;
    return sync_run(c, s, &res);
}

int kvc_cas(kv_client *c, const void *key, size_t key_len, const void *expected,
            size_t expected_len, const void *value, size_t value_len, uint64_t lease,
            void **current, size_t *current_len, bool *present) {
    if (current != NULL)
        *current = NULL;
    if (current_len != NULL)
        *current_len = 0;
    if (present != NULL)
        *present = false;
    int rc = kvc_check_key(key, key_len);
    if (rc == 0)
        rc = kvc_check_value(value, value_len);
    if (rc == 0 && expected != NULL)
        rc = kvc_check_value(expected, expected_len);
    if (rc == 0 && expected == NULL && expected_len > 0)
        rc = KV_EINVAL;
    Kv__Request__Type t = expected ? KV__REQUEST__TYPE__CAS : KV__REQUEST__TYPE__CAS_ABSENT;
    kvc_result res = {.want_current = current != NULL || present != NULL};
    kvc_slot *s = rc == 0 ? kvc_sync_begin(c, t, &res, &rc) : NULL;
    if (s == NULL)
        return rc;
    s->key = key;
    s->key_len = (uint32_t)key_len;
    s->value = value;
    s->value_len = (uint32_t)value_len;
    s->expected = expected;
    s->expected_len = (uint32_t)expected_len;
    s->has_expected = expected != NULL;
    s->lease = lease;
    rc = sync_run(c, s, &res);
    if (rc == KV_ECOMPARE) {
        if (present != NULL)
            *present = res.present;
        if (current_len != NULL)
            *current_len = res.value_len;
        if (current != NULL) {
            *current = res.value;
            res.value = NULL;
        }
    }
    free(res.value);
    return rc;
}

int kv_cas_ex(kv_client *c, const void *key, size_t key_len, const void *expected,
              size_t expected_len, const void *value, size_t value_len, void **current,
              size_t *current_len, bool *present) {
    return kvc_cas(c, key, key_len, expected, expected_len, value, value_len, 0, current,
                   current_len, present);
}

int kv_cas(kv_client *c, const void *key, size_t key_len, const void *expected, size_t expected_len,
           const void *value, size_t value_len) {
    return kv_cas_ex(c, key, key_len, expected, expected_len, value, value_len, NULL, NULL, NULL);
}

int kv_scan(kv_client *c, const void *prefix, size_t prefix_len, const void *start_after,
            size_t start_after_len, uint32_t limit, kv_pair **pairs, size_t *count, bool *more) {
    return kv_scan_ex(c, prefix, prefix_len, start_after, start_after_len, limit, pairs, NULL,
                      count, more);
}

int kv_scan_ex(kv_client *c, const void *prefix, size_t prefix_len, const void *start_after,
               size_t start_after_len, uint32_t limit, kv_pair **pairs, kv_keyinfo **infos,
               size_t *count, bool *more) {
    kvc_errstr_clear();
    if (infos != NULL)
        *infos = NULL;
    if (pairs == NULL || count == NULL)
        return KV_EINVAL;
    *pairs = NULL;
    *count = 0;
    if (more != NULL)
        *more = false;
    int rc = 0;
    if ((prefix == NULL && prefix_len > 0) || (start_after == NULL && start_after_len > 0))
        rc = KV_EINVAL;
    else if (prefix_len > KV_KEY_BYTES_MAX || start_after_len > KV_KEY_BYTES_MAX)
        rc = kvc_errstr_set(KV_ETOOBIG, "scan %s of %zu bytes is over KV_KEY_BYTES_MAX (%u)",
                            prefix_len > KV_KEY_BYTES_MAX ? "prefix" : "start key",
                            prefix_len > KV_KEY_BYTES_MAX ? prefix_len : start_after_len,
                            KV_KEY_BYTES_MAX);
    kvc_result res = {.want_infos = infos != NULL};
    kvc_slot *s = rc == 0 ? kvc_sync_begin(c, KV__REQUEST__TYPE__SCAN, &res, &rc) : NULL;
    if (s == NULL)
        return rc;
    s->key = prefix;
    s->key_len = (uint32_t)prefix_len;
    s->start_after = start_after;
    s->start_after_len = (uint32_t)start_after_len;
    s->limit = limit;
    rc = sync_run(c, s, &res);
    if (rc != 0) {
        kv_pairs_free(res.pairs, res.count);
        free(res.infos);
        return rc;
    }
    *pairs = res.pairs;
    *count = res.count;
    if (infos != NULL)
        *infos = res.infos;
    if (more != NULL)
        *more = res.more;
    return 0;
}

/* ---- asynchronous form ------------------------------------------------------ */

/* Copies the data into the slot's own buffer (kept from one use to the
 * next: no allocation per request once warm). */
static int own_copy(kvc_slot *s, const void *a, size_t alen, const void *b, size_t blen) {
    size_t need = alen + blen;
    if (need > s->own_cap) {
        uint8_t *p = realloc(s->own, need);
        if (p == NULL)
            return KV_ENOMEM;
        s->own = p;
        s->own_cap = need;
    }
    if (alen > 0)
        memcpy(s->own, a, alen);
    if (blen > 0)
        memcpy(s->own + alen, b, blen);
    s->key = s->own;
    s->key_len = (uint32_t)alen;
    s->value = blen > 0 ? s->own + alen : NULL;
    s->value_len = (uint32_t)blen;
    return 0;
}

static int async_queue(kv_client *c, Kv__Request__Type type, const void *key, size_t key_len,
                       const void *value, size_t value_len, kv_done_fn cb, void *arg) {
    if (!kvc_in_callback(c) &&
        (c->calls > 0 || (c->exclusive && !pthread_equal(c->exclusive_tid, pthread_self()))))
        return KV_EBUSY; /* other threads' calls run: one form at a time */
    if (c->user_inflight >= c->max_inflight)
        return KV_EBUSY;
    kvc_slot *s = kvc_slot_alloc(c);
    if (s == NULL)
        return KV_ENOMEM;
    if (own_copy(s, key, key_len, value, value_len) != 0) {
        kvc_slot_release(c, s);
        return KV_ENOMEM;
    }
    s->type = type;
    s->user = true;
    s->user_cb = cb;
    s->arg = arg;
    c->user_inflight++;
    start(c, s);
    return 0;
}

static int async_start(kv_client *c, Kv__Request__Type type, const void *key, size_t key_len,
                       const void *value, size_t value_len, kv_done_fn cb, void *arg) {
    if (c == NULL || cb == NULL)
        return KV_EINVAL;
    kvc_lock(c);
    int rc = async_queue(c, type, key, key_len, value, value_len, cb, arg);
    kvc_unlock(c);
    return rc;
}

int kv_put_async(kv_client *c, const void *key, size_t key_len, const void *value, size_t value_len,
                 kv_done_fn cb, void *arg) {
    int rc = kvc_check_key(key, key_len);
    if (rc == 0)
        rc = kvc_check_value(value, value_len);
    if (rc != 0)
        return rc;
    return async_start(c, KV__REQUEST__TYPE__PUT, key, key_len, value, value_len, cb, arg);
}

int kv_get_async(kv_client *c, const void *key, size_t key_len, kv_done_fn cb, void *arg) {
    int rc = kvc_check_key(key, key_len);
    if (rc != 0)
        return rc;
    return async_start(c, KV__REQUEST__TYPE__GET, key, key_len, NULL, 0, cb, arg);
}

int kv_client_poll(kv_client *c, int timeout_ms) {
    if (c == NULL)
        return KV_EINVAL;
    uint64_t now = kv_now_ns();
    uint64_t until = now + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * NS_PER_MS;
    kvc_lock(c);
    int n = kvc_share_poll(c, until);
    kvc_unlock(c);
    return n;
}

size_t kv_client_inflight(const kv_client *cc) {
    kv_client *c = (kv_client *)cc; /* the mutex */
    if (c == NULL)
        return 0;
    kvc_lock(c);
    size_t n = c->user_inflight;
    kvc_unlock(c);
    return n;
}

void kv_client_set_max_inflight(kv_client *c, uint32_t n) {
    if (c == NULL)
        return;
    kvc_lock(c);
    c->max_inflight = n == 0                              ? 1
                      : n > KV_CONN_INFLIGHT_REQUESTS_MAX ? KV_CONN_INFLIGHT_REQUESTS_MAX
                                                          : n;
    kvc_unlock(c);
}

/* ---- operators ------------------------------------------------------------- */

/* STATUS on a connection of its own to ep, closed after. */
static int status_at(kv_client *c, const kvc_endpoint *ep, char **line) {
    uint64_t deadline = kv_now_ns() + (uint64_t)c->timeout_ms * NS_PER_MS;
    kvc_conn k;
    kvc_conn_init(&k);
    int rc = kvc_side_open(c, &k, ep, deadline);
    Kv__Request q = KV__REQUEST__INIT;
    q.type = KV__REQUEST__TYPE__STATUS;
    Kv__Response *r = NULL;
    if (rc == 0)
        rc = kvc_side_call(c, &k, &q, deadline, &r);
    if (rc == KV_ECLOSED || rc == KV_ETIMEOUT)
        rc = KV_EUNAVAILABLE;
    if (rc == 0 && r->code != 0)
        rc = r->code;
    else if (rc == 0)
        rc = r->status == NULL ? KV_EPROTO : status_line(r->status, line);
    kvc_arena_reset(&c->arena);
    kvc_conn_free(&k);
    return rc;
}

static int node_status(kv_client *c, const char *endpoint, char **line);

int kv_node_status(kv_client *c, const char *endpoint, char **line) {
    kvc_errstr_clear();
    if (c == NULL || line == NULL)
        return KV_EINVAL;
    int rc = kvc_exclusive_begin(c);
    if (rc != 0)
        return rc;
    rc = node_status(c, endpoint, line);
    kvc_exclusive_end(c);
    return rc;
}

static int node_status(kv_client *c, const char *endpoint, char **line) {
    *line = NULL;
    if (endpoint != NULL) {
        kvc_endpoint ep;
        if (kvc_endpoint_parse(endpoint, strlen(endpoint), &ep) != 0)
            return KV_EINVAL;
        return status_at(c, &ep, line);
    }
    if (c->user_inflight > 0) {
        kvc_endpoint ep;
        if (c->conn.fd < 0 || kvc_endpoint_parse(c->cur_text, strlen(c->cur_text), &ep) != 0)
            return KV_EBUSY;
        return status_at(c, &ep, line);
    }
    int rc;
    kvc_result res = {0};
    kvc_slot *s = kvc_sync_begin(c, KV__REQUEST__TYPE__STATUS, &res, &rc);
    if (s == NULL)
        return rc;
    rc = sync_run(c, s, &res);
    if (rc == 0)
        *line = res.line;
    else
        free(res.line);
    return rc;
}
