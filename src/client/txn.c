/*
 * libkvclient: revisions and transactions (client.h, "revisions and
 * transactions"). A kv_txn is a kv.Txn being built: each compare and op is
 * one malloc'd block holding its message and copies of its bytes. Commit
 * and delete-prefix are writes like kv_put: client.c's synchronous path
 * (kvc_sync_begin / kvc_sync_run), numbered in a session by the engine and
 * retried with the same (client id, seq), so the cluster applies each once.
 */
#include "client/client_int.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

struct kv_txn {
    Kv__Txn pb; /* its arrays below, in the order added */
    size_t cmp_cap, ops_cap[2];
};

void kvc_keyinfo_of(const Kv__KeyValue *kv, kv_keyinfo *info) {
    if (kv == NULL) {
        *info = (kv_keyinfo){0};
        return;
    }
    *info = (kv_keyinfo){.create_rev = kv->create_rev,
                         .mod_rev = kv->mod_rev,
                         .version = kv->version,
                         .lease = kv->lease};
}

kv_txn *kv_txn_new(void) {
    kv_txn *t = calloc(1, sizeof *t);
    if (t != NULL)
        kv__txn__init(&t->pb);
    return t;
}

void kv_txn_free(kv_txn *t) {
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->pb.n_compares; i++)
        free(t->pb.compares[i]); /* one block with its bytes */
    for (size_t i = 0; i < t->pb.n_success; i++)
        free(t->pb.success[i]);
    for (size_t i = 0; i < t->pb.n_failure; i++)
        free(t->pb.failure[i]);
    free(t->pb.compares);
    free(t->pb.success);
    free(t->pb.failure);
    free(t);
}

static size_t txn_items(const kv_txn *t) {
    return t->pb.n_compares + t->pb.n_success + t->pb.n_failure;
}

/* Room for one more pointer in *arr (n used, *cap allocated). */
static int grow(void ***arr, size_t n, size_t *cap) {
    if (n < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 8;
    void **p = realloc(*arr, ncap * sizeof *p);
    if (p == NULL)
        return KV_ENOMEM;
    *arr = p;
    *cap = ncap;
    return 0;
}

/* The checks every add makes: t, the key, the value, the count. */
static int add_check(kv_txn *t, const void *key, size_t klen, const void *val, size_t vlen) {
    int rc = kvc_check_key(key, klen); /* clears the detail */
    if (rc == 0)
        rc = kvc_check_value(val, vlen);
    if (rc == 0 && t == NULL)
        rc = KV_EINVAL;
    if (rc == 0 && txn_items(t) >= KV_TXN_OPS_MAX)
        rc = kvc_errstr_set(KV_ETOOBIG,
                            "a transaction has at most KV_TXN_OPS_MAX (%u) "
                            "compares and ops",
                            KV_TXN_OPS_MAX);
    return rc;
}

/* A block of size head + klen + vlen: the message first, then the bytes,
 * which *k and *v point to. NULL when out of memory. */
static void *block(size_t head, const void *key, size_t klen, const void *val, size_t vlen,
                   ProtobufCBinaryData *k, ProtobufCBinaryData *v) {
    uint8_t *b = malloc(head + klen + vlen);
    if (b == NULL)
        return NULL;
    memcpy(b + head, key, klen);
    if (vlen > 0)
        memcpy(b + head + klen, val, vlen);
    *k = (ProtobufCBinaryData){klen, b + head};
    *v = (ProtobufCBinaryData){vlen, vlen ? b + head + klen : NULL};
    return b;
}

int kv_txn_compare(kv_txn *t, enum kv_cmp_target target, enum kv_cmp_result result, const void *key,
                   size_t key_len, const void *value, size_t value_len, uint64_t number) {
    if (target != KV_CMP_VALUE)
        value_len = 0; /* a number compare carries no value */
    int rc = add_check(t, key, key_len, value, value_len);
    if (rc != 0)
        return rc;
    if ((unsigned)target > KV_CMP_LEASE || (unsigned)result > KV_CMP_GREATER)
        return kvc_errstr_set(KV_EINVAL, "compare target %d or result %d out of range", (int)target,
                              (int)result);
    if (grow((void ***)&t->pb.compares, t->pb.n_compares, &t->cmp_cap) != 0)
        return KV_ENOMEM;
    ProtobufCBinaryData k, v;
    Kv__Compare *m = block(sizeof *m, key, key_len, value, value_len, &k, &v);
    if (m == NULL)
        return KV_ENOMEM;
    kv__compare__init(m);
    /* the enums of client.h are the wire's, in the same order */
    m->target = (Kv__Compare__Target)target;
    m->result = (Kv__Compare__Result)result;
    m->key = k;
    m->value = v;
    m->number = number;
    t->pb.compares[t->pb.n_compares++] = m;
    return 0;
}

static int add_op(kv_txn *t, bool on_success, Kv__TxnOp__Type type, const void *key, size_t klen,
                  const void *val, size_t vlen, uint64_t lease) {
    int rc = add_check(t, key, klen, val, vlen);
    if (rc != 0)
        return rc;
    Kv__TxnOp ***arr = on_success ? &t->pb.success : &t->pb.failure;
    size_t *n = on_success ? &t->pb.n_success : &t->pb.n_failure;
    if (grow((void ***)arr, *n, &t->ops_cap[on_success]) != 0)
        return KV_ENOMEM;
    ProtobufCBinaryData k, v;
    Kv__TxnOp *m = block(sizeof *m, key, klen, val, vlen, &k, &v);
    if (m == NULL)
        return KV_ENOMEM;
    kv__txn_op__init(m);
    m->type = type;
    m->key = k;
    m->value = v;
    m->lease = lease;
    (*arr)[(*n)++] = m;
    return 0;
}

int kv_txn_put(kv_txn *t, bool on_success, const void *key, size_t key_len, const void *value,
               size_t value_len, uint64_t lease) {
    return add_op(t, on_success, KV__TXN_OP__TYPE__PUT, key, key_len, value, value_len, lease);
}

int kv_txn_del(kv_txn *t, bool on_success, const void *key, size_t key_len) {
    return add_op(t, on_success, KV__TXN_OP__TYPE__DELETE, key, key_len, NULL, 0, 0);
}

int kv_txn_get(kv_txn *t, bool on_success, const void *key, size_t key_len) {
    return add_op(t, on_success, KV__TXN_OP__TYPE__GET, key, key_len, NULL, 0, 0);
}

void kv_txn_results_free(kv_txn_result *r, size_t count) {
    if (r == NULL)
        return;
    for (size_t i = 0; i < count; i++)
        free(r[i].value);
    free(r);
}

/* On the loop's thread: the answer lives in the arena, so it is copied. */
int kvc_txn_copy(const Kv__Response *r, kvc_result *res) {
    assert(res->results == NULL);
    res->succeeded = r->succeeded;
    if (r->n_results == 0)
        return 0;
    res->results = calloc(r->n_results, sizeof *res->results);
    if (res->results == NULL)
        return KV_ENOMEM;
    res->results_count = r->n_results;
    for (size_t i = 0; i < r->n_results; i++) {
        const Kv__TxnResult *x = r->results[i];
        kv_txn_result *y = &res->results[i];
        y->code = x->code;
        kvc_keyinfo_of(x->kv, &y->info);
        if (x->kv == NULL || x->kv->value.len == 0)
            continue;
        if ((y->value = malloc(x->kv->value.len)) == NULL)
            return KV_ENOMEM; /* the caller frees what was made */
        memcpy(y->value, x->kv->value.data, x->kv->value.len);
        y->value_len = x->kv->value.len;
    }
    return 0;
}

int kv_txn_commit(kv_client *c, const kv_txn *t, bool *succeeded, kv_txn_result **results,
                  size_t *count) {
    kvc_errstr_clear();
    if (results != NULL)
        *results = NULL;
    if (count != NULL)
        *count = 0;
    if (succeeded != NULL)
        *succeeded = false;
    if (t == NULL || (results != NULL && count == NULL))
        return KV_EINVAL;
    /* The server's check, made first for a clear word before anything is
     * sent: the command (the txn and a few numbers) must fit one entry. */
    size_t bytes = kv__txn__get_packed_size(&t->pb);
    if (bytes > KV_COMMAND_BYTES_MAX - KV_COMMAND_OVERHEAD_BYTES)
        return kvc_errstr_set(KV_ETOOBIG,
                              "transaction of %zu bytes encoded is over "
                              "KV_COMMAND_BYTES_MAX (%u) less the command's overhead",
                              bytes, (unsigned)KV_COMMAND_BYTES_MAX);
    int rc;
    kvc_result res = {0};
    kvc_slot *s = kvc_sync_begin(c, KV__REQUEST__TYPE__TXN, &res, &rc);
    if (s == NULL)
        return rc;
    s->txn = &t->pb;
    rc = kvc_sync_run(c, s, &res, 0);
    if (rc != 0 || results == NULL) {
        kv_txn_results_free(res.results, res.results_count);
        res.results = NULL;
    }
    if (rc != 0)
        return rc;
    if (succeeded != NULL)
        *succeeded = res.succeeded;
    if (results != NULL) {
        *results = res.results;
        *count = res.results_count;
    }
    return 0;
}

int kv_del_prefix(kv_client *c, const void *prefix, size_t prefix_len, uint64_t *deleted) {
    kvc_errstr_clear();
    if (deleted != NULL)
        *deleted = 0;
    if (prefix == NULL && prefix_len > 0)
        return KV_EINVAL;
    if (prefix_len > KV_KEY_BYTES_MAX)
        return kvc_errstr_set(KV_ETOOBIG, "prefix of %zu bytes is over KV_KEY_BYTES_MAX (%u)",
                              prefix_len, KV_KEY_BYTES_MAX);
    /* One entry per round, each deleting at most KV_DELETE_PREFIX_KEYS_MAX:
     * bounded by the keys there are, and a round that deletes nothing
     * while saying more remain would be a node's bug, not a loop. */
    for (;;) {
        int rc;
        kvc_result res = {0};
        kvc_slot *s = kvc_sync_begin(c, KV__REQUEST__TYPE__DELETE_PREFIX, &res, &rc);
        if (s == NULL)
            return rc;
        s->key = prefix;
        s->key_len = (uint32_t)prefix_len;
        rc = kvc_sync_run(c, s, &res, 0);
        if (rc != 0)
            return rc;
        if (deleted != NULL)
            *deleted += res.deleted;
        if (!res.more_deleted)
            return 0;
        if (res.deleted == 0)
            return kvc_errstr_set(KV_EPROTO, "delete prefix: the node said more remain "
                                             "but deleted none");
    }
}
