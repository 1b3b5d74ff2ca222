/*
 * libkvclient: leases (client.h "leases") on the engine, as every other
 * call. LEASE_GRANT and LEASE_REVOKE are writes: numbered in a session and
 * retried with the same number (engine.c), so a grant retried after a lost
 * answer returns the lease it made the first time (its id is the index of
 * the grant's entry, which the session's stored reply keeps).
 * LEASE_KEEPALIVE and LEASE_LIST go to the leader and are retried as reads.
 */
#include "client/client_int.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

int kvc_lease_result(const kvc_slot *s, const Kv__Response *r, kvc_result *res) {
    assert(r != NULL);
    switch (s->type) {
    case KV__REQUEST__TYPE__LEASE_GRANT:
        /* a duplicate's stored reply carries the index only: the same id */
        res->lease = r->lease != 0 ? r->lease : r->index;
        return 0;
    case KV__REQUEST__TYPE__LEASE_REVOKE:
        res->deleted = r->deleted;
        return 0;
    default:
        break;
    }
    if (r->n_leases == 0)
        return 0;
    res->leases = calloc(r->n_leases, sizeof *res->leases);
    if (res->leases == NULL)
        return KV_ENOMEM;
    for (size_t i = 0; i < r->n_leases; i++) {
        const Kv__Lease *l = r->leases[i];
        res->leases[i] =
            (kv_lease){.id = l->id, .ttl = l->ttl, .remaining = l->remaining, .keys = l->keys};
    }
    res->leases_count = r->n_leases;
    return 0;
}

/* One request of type about lease (GRANT: ttl) to its end; res filled. */
static int lease_call(kv_client *c, Kv__Request__Type type, uint64_t lease, int64_t ttl,
                      kvc_result *res) {
    int rc;
    kvc_slot *s = kvc_sync_begin(c, type, res, &rc);
    if (s == NULL)
        return rc;
    s->lease = lease;
    s->ttl = ttl;
    return kvc_sync_run(c, s, res, 0);
}

static int lease_id_ok(uint64_t id) {
    kvc_errstr_clear();
    if (id == 0)
        return kvc_errstr_set(KV_EINVAL, "lease id 0: ids start at 1");
    return 0;
}

int kv_lease_grant(kv_client *c, int64_t ttl_seconds, uint64_t *id) {
    kvc_errstr_clear();
    if (id == NULL)
        return kvc_errstr_set(KV_EINVAL, "no place for the lease id");
    *id = 0;
    if (ttl_seconds < 1 || ttl_seconds > KV_LEASE_TTL_MAX)
        return kvc_errstr_set(KV_EINVAL, "lease ttl of %lld s: want 1 to %d (KV_LEASE_TTL_MAX)",
                              (long long)ttl_seconds, KV_LEASE_TTL_MAX);
    kvc_result res = {0};
    int rc = lease_call(c, KV__REQUEST__TYPE__LEASE_GRANT, 0, ttl_seconds, &res);
    if (rc == 0 && res.lease == 0)
        rc = KV_EPROTO; /* a node that answers a grant without a lease */
    if (rc == 0)
        *id = res.lease;
    return rc;
}

int kv_lease_revoke(kv_client *c, uint64_t id) {
    int rc = lease_id_ok(id);
    kvc_result res = {0};
    if (rc == 0)
        rc = lease_call(c, KV__REQUEST__TYPE__LEASE_REVOKE, id, 0, &res);
    return rc;
}

int kv_lease_keepalive(kv_client *c, uint64_t id, int64_t *remaining) {
    if (remaining != NULL)
        *remaining = -1;
    int rc = lease_id_ok(id);
    kvc_result res = {0};
    if (rc == 0)
        rc = lease_call(c, KV__REQUEST__TYPE__LEASE_KEEPALIVE, id, 0, &res);
    if (rc == 0 && (res.leases_count != 1 || res.leases[0].id != id))
        rc = KV_EPROTO; /* the answer is about another lease */
    if (rc == 0 && remaining != NULL)
        *remaining = res.leases[0].remaining;
    free(res.leases);
    return rc;
}

int kv_lease_list(kv_client *c, kv_lease **leases, size_t *count) {
    kvc_errstr_clear();
    if (leases == NULL || count == NULL)
        return kvc_errstr_set(KV_EINVAL, "no place for the leases");
    *leases = NULL;
    *count = 0;
    kvc_result res = {0};
    int rc = lease_call(c, KV__REQUEST__TYPE__LEASE_LIST, 0, 0, &res);
    if (rc != 0) {
        free(res.leases);
        return rc;
    }
    *leases = res.leases;
    *count = res.leases_count;
    return 0;
}

int kv_put_lease(kv_client *c, const void *key, size_t key_len, const void *value, size_t value_len,
                 uint64_t lease) {
    int rc = kvc_check_key(key, key_len);
    if (rc == 0)
        rc = kvc_check_value(value, value_len);
    kvc_result res = {0};
    kvc_slot *s = rc == 0 ? kvc_sync_begin(c, KV__REQUEST__TYPE__PUT, &res, &rc) : NULL;
    if (s == NULL)
        return rc;
    s->key = key;
    s->key_len = (uint32_t)key_len;
    s->value = value;
    s->value_len = (uint32_t)value_len;
    s->lease = lease;
    rc = kvc_sync_run(c, s, &res, 0);
    free(res.value);
    return rc;
}

int kv_create_lease(kv_client *c, const void *key, size_t key_len, const void *value,
                    size_t value_len, uint64_t lease) {
    return kvc_cas(c, key, key_len, NULL, 0, value, value_len, lease, NULL, NULL, NULL);
}
