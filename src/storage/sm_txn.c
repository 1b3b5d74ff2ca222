/* sm_txn: the TXN and DELETE_PREFIX commands (sm.h, proto/kv.proto Txn).
 *
 * A transaction is one entry: its compares are evaluated against the keys
 * as they are at this entry (through the batch, so earlier entries of the
 * same apply call count), then the success or the failure ops run in order
 * through the batch (a get sees a put made earlier in the same txn). It is
 * checked whole before anything runs, so a refused txn changes nothing.
 */
#include "storage/sm_internal.h"

#include "kv/errors.h"
#include "kv/limits.h"
#include "proto/kv.pb-c.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- checks --------------------------------------------------------------- */

static const char *op_name(Kv__TxnOp__Type t) {
    switch (t) {
    case KV__TXN_OP__TYPE__GET:
        return "get";
    case KV__TXN_OP__TYPE__PUT:
        return "put";
    case KV__TXN_OP__TYPE__DELETE:
        return "del";
    default:
        return "unknown";
    }
}

static int check_key(size_t klen, const char *what, size_t i, char *why, size_t cap) {
    if (klen == 0) {
        snprintf(why, cap, "txn %s %zu: an empty key (a key is 1 to %u bytes)", what, i + 1,
                 KV_KEY_BYTES_MAX);
        return KV_EINVAL;
    }
    if (klen > KV_KEY_BYTES_MAX) {
        snprintf(why, cap, "txn %s %zu: key of %zu bytes is over KV_KEY_BYTES_MAX (%u)", what,
                 i + 1, klen, KV_KEY_BYTES_MAX);
        return KV_ETOOBIG;
    }
    return 0;
}

/* The ops of one branch ("success" or "failure"). */
static int check_ops(Kv__TxnOp *const *ops, size_t n, const char *branch, char *why, size_t cap) {
    char what[32];
    for (size_t i = 0; i < n; i++) {
        const Kv__TxnOp *o = ops[i];
        snprintf(what, sizeof what, "%s op", branch);
        if ((unsigned)o->type > KV__TXN_OP__TYPE__DELETE) {
            snprintf(why, cap, "txn %s %zu: unknown op type %d", what, i + 1, (int)o->type);
            return KV_EINVAL;
        }
        snprintf(what, sizeof what, "%s op (%s)", branch, op_name(o->type));
        int rc = check_key(o->key.len, what, i, why, cap);
        if (rc != 0)
            return rc;
        if (o->value.len > KV_VALUE_BYTES_MAX) {
            snprintf(why, cap, "txn %s %zu: value of %zu bytes is over KV_VALUE_BYTES_MAX (%u)",
                     what, i + 1, o->value.len, KV_VALUE_BYTES_MAX);
            return KV_ETOOBIG;
        }
    }
    return 0;
}

int sm_txn_check(const Kv__Txn *t, char *why, size_t cap) {
    assert(t != NULL && why != NULL && cap > 0);
    size_t n = t->n_compares + t->n_success + t->n_failure;
    if (n > KV_TXN_OPS_MAX) {
        snprintf(why, cap, "txn of %zu compares and ops is over KV_TXN_OPS_MAX (%u)", n,
                 KV_TXN_OPS_MAX);
        return KV_ETOOBIG;
    }
    for (size_t i = 0; i < t->n_compares; i++) {
        const Kv__Compare *c = t->compares[i];
        if ((unsigned)c->target > KV__COMPARE__TARGET__LEASE ||
            (unsigned)c->result > KV__COMPARE__RESULT__GREATER) {
            snprintf(why, cap, "txn compare %zu: unknown target %d or result %d", i + 1,
                     (int)c->target, (int)c->result);
            return KV_EINVAL;
        }
        int rc = check_key(c->key.len, "compare", i, why, cap);
        if (rc != 0)
            return rc;
        if (c->value.len > KV_VALUE_BYTES_MAX) {
            snprintf(why, cap,
                     "txn compare %zu: value of %zu bytes is over "
                     "KV_VALUE_BYTES_MAX (%u)",
                     i + 1, c->value.len, KV_VALUE_BYTES_MAX);
            return KV_ETOOBIG;
        }
    }
    int rc = check_ops(t->success, t->n_success, "success", why, cap);
    if (rc == 0)
        rc = check_ops(t->failure, t->n_failure, "failure", why, cap);
    return rc;
}

/* ---- results ---------------------------------------------------------------- */

/* One result as one block: the TxnResult, its KeyValue (GET) and the key
 * and value bytes, so that a reply frees each with one free(). rec NULL:
 * no KeyValue (a put, a del, a get of an absent key). NULL: out of memory. */
static Kv__TxnResult *result_new(int code, const void *key, size_t klen, const sm__rec *rec) {
    size_t vlen = rec != NULL ? rec->len : 0;
    size_t bytes = sizeof(Kv__TxnResult) + (rec ? sizeof(Kv__KeyValue) + klen + vlen : 0);
    uint8_t *b = malloc(bytes);
    if (b == NULL)
        return NULL;
    Kv__TxnResult *x = (Kv__TxnResult *)b;
    kv__txn_result__init(x);
    x->code = code;
    if (rec == NULL)
        return x;
    Kv__KeyValue *kv = (Kv__KeyValue *)(b + sizeof *x);
    uint8_t *kb = b + sizeof *x + sizeof *kv;
    kv__key_value__init(kv);
    memcpy(kb, key, klen);
    if (vlen > 0)
        memcpy(kb + klen, rec->value, vlen);
    kv->key = (ProtobufCBinaryData){klen, kb};
    kv->value = (ProtobufCBinaryData){vlen, vlen ? kb + klen : NULL};
    kv->create_rev = rec->create_rev;
    kv->mod_rev = rec->mod_rev;
    kv->version = rec->version;
    kv->lease = rec->lease;
    x->kv = kv;
    return x;
}

Kv__TxnResult *sm__txn_result_dup(const Kv__TxnResult *r) {
    if (r->kv == NULL)
        return result_new(r->code, NULL, 0, NULL);
    const Kv__KeyValue *kv = r->kv;
    sm__rec rec = {.create_rev = kv->create_rev,
                   .mod_rev = kv->mod_rev,
                   .version = kv->version,
                   .lease = kv->lease,
                   .value = kv->value.data,
                   .len = kv->value.len};
    return result_new(r->code, kv->key.data, kv->key.len, &rec);
}

/* ---- compares --------------------------------------------------------------- */

static int cmp_bytes(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    return c != 0 ? c : alen < blen ? -1 : alen > blen ? 1 : 0;
}

/* Whether compare m holds for the key's record (NULL: absent). */
static bool compare_holds(const Kv__Compare *m, const sm__rec *rec) {
    int c; /* the key's against the given one: <0, 0, >0 */
    if (m->target == KV__COMPARE__TARGET__VALUE) {
        if (rec == NULL) /* no value: it equals nothing, and orders with nothing */
            return m->result == KV__COMPARE__RESULT__NOT_EQUAL;
        c = cmp_bytes(rec->value, rec->len, m->value.data, m->value.len);
    } else {
        uint64_t v = 0; /* an absent key's numbers are 0 */
        if (rec != NULL)
            v = m->target == KV__COMPARE__TARGET__VERSION  ? rec->version
                : m->target == KV__COMPARE__TARGET__CREATE ? rec->create_rev
                : m->target == KV__COMPARE__TARGET__MOD    ? rec->mod_rev
                                                           : rec->lease;
        c = v < m->number ? -1 : v > m->number ? 1 : 0;
    }
    switch (m->result) {
    case KV__COMPARE__RESULT__EQUAL:
        return c == 0;
    case KV__COMPARE__RESULT__NOT_EQUAL:
        return c != 0;
    case KV__COMPARE__RESULT__LESS:
        return c < 0;
    default:
        assert(m->result == KV__COMPARE__RESULT__GREATER); /* sm_txn_check */
        return c > 0;
    }
}

/* Reads key through the batch: 0 with *present and *rec (pointing into
 * *raw, rocksdb_free), or a read error. */
static int key_get(sm__batch *b, const ProtobufCBinaryData *key, sm__rec *rec, char **raw,
                   bool *present) {
    *raw = NULL;
    int rv = sm__key_read(b, key->data, key->len, rec, raw);
    *present = rv == 0;
    return rv == KV_ENOTFOUND ? 0 : rv;
}

static int compares_hold(sm__batch *b, const Kv__Txn *t, bool *ok) {
    *ok = true;
    for (size_t i = 0; i < t->n_compares && *ok; i++) {
        sm__rec rec;
        char *raw;
        bool present;
        int rv = key_get(b, &t->compares[i]->key, &rec, &raw, &present);
        if (rv != 0)
            return rv;
        *ok = compare_holds(t->compares[i], present ? &rec : NULL);
        rocksdb_free(raw);
    }
    return 0;
}

/* ---- ops -------------------------------------------------------------------- */

/* The bytes the gets of ops[0..n) will return, as they will run: a get
 * after a put or del of its key in the same txn sees that op. */
static int get_bytes(sm__batch *b, Kv__TxnOp *const *ops, size_t n, uint64_t *total) {
    *total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ops[i]->type != KV__TXN_OP__TYPE__GET)
            continue;
        const ProtobufCBinaryData *k = &ops[i]->key;
        size_t j = i;
        while (j > 0 &&
               !(ops[j - 1]->type != KV__TXN_OP__TYPE__GET &&
                 cmp_bytes(ops[j - 1]->key.data, ops[j - 1]->key.len, k->data, k->len) == 0))
            j--;
        if (j > 0) { /* the last write of this key before the get */
            *total +=
                ops[j - 1]->type == KV__TXN_OP__TYPE__PUT ? k->len + ops[j - 1]->value.len : 0;
            continue;
        }
        sm__rec rec;
        char *raw;
        bool present;
        int rv = key_get(b, k, &rec, &raw, &present);
        if (rv != 0)
            return rv;
        *total += present ? k->len + rec.len : 0;
        rocksdb_free(raw);
    }
    return 0;
}

/* One op; its result in *out (malloc'd). */
static int op_run(sm__batch *b, const Kv__TxnOp *o, Kv__TxnResult **out) {
    sm__rec rec;
    char *raw;
    bool present;
    int rv = key_get(b, &o->key, &rec, &raw, &present);
    if (rv != 0)
        return rv;
    int code = present ? 0 : KV_ENOTFOUND;
    if (o->type == KV__TXN_OP__TYPE__PUT) {
        code = 0;
        rv = sm__key_put(b, o->key.data, o->key.len, o->value.data, o->value.len, o->lease,
                         present ? &rec : NULL);
    } else if (o->type == KV__TXN_OP__TYPE__DELETE && present) {
        rv = sm__key_delete(b, o->key.data, o->key.len, &rec);
    }
    bool with_kv = o->type == KV__TXN_OP__TYPE__GET && present;
    if (rv == 0 &&
        (*out = result_new(code, o->key.data, o->key.len, with_kv ? &rec : NULL)) == NULL)
        rv = KV_ENOMEM;
    rocksdb_free(raw);
    return rv;
}

static int ops_run(sm__batch *b, Kv__TxnOp *const *ops, size_t n, sm_reply *r) {
    if (n == 0)
        return 0;
    r->results = calloc(n, sizeof *r->results);
    if (r->results == NULL)
        return KV_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        int rv = op_run(b, ops[i], &r->results[i]);
        if (rv != 0)
            return rv; /* the whole apply fails: sm_apply frees the reply */
        r->n_results = i + 1;
    }
    return 0;
}

/* r's detail, made here (a refusal naming the op or the limit). */
__attribute__((format(printf, 2, 3))) static void reply_why(sm_reply *r, const char *fmt, ...) {
    assert(r->why == NULL);
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    r->why = strdup(buf);
    r->detail = r->why ? r->why : "txn refused"; /* out of memory: the code says it */
}

int sm__txn(sm__batch *b, const Kv__Command *c, sm_reply *r) {
    assert(r->code == 0 && r->results == NULL);
    if (c->txn == NULL) {
        r->code = KV_EINVAL;
        r->detail = "a TXN command without a txn";
        return 0;
    }
    char why[192];
    int code = sm_txn_check(c->txn, why, sizeof why);
    if (code != 0) { /* refused whole: nothing ran */
        r->code = code;
        reply_why(r, "%s", why);
        return 0;
    }
    bool ok;
    int rv = compares_hold(b, c->txn, &ok);
    Kv__TxnOp *const *ops = ok ? c->txn->success : c->txn->failure;
    size_t n = ok ? c->txn->n_success : c->txn->n_failure;
    uint64_t bytes = 0;
    if (rv == 0)
        rv = get_bytes(b, ops, n, &bytes);
    if (rv != 0)
        return rv;
    if (bytes > KV_TXN_GET_BYTES_MAX) {
        r->code = KV_ETOOBIG;
        reply_why(r, "txn: its gets would return %llu bytes, over KV_TXN_GET_BYTES_MAX (%u)",
                  (unsigned long long)bytes, KV_TXN_GET_BYTES_MAX);
        return 0;
    }
    /* the leases its puts attach to must take them (sm_lease.c), or nothing runs */
    rv = sm__lease_txn_check(b, ops, n, r);
    if (rv != 0 || r->code != 0)
        return rv;
    r->succeeded = ok;
    return ops_run(b, ops, n, r);
}

/* ---- delete by prefix ---------------------------------------------------- */

/* The user keys (without 'd') starting with prefix, at most max + 1 (one
 * more tells that more remain), as the db holds them once the call's
 * earlier entries are written (sm__biter). *keys
 * malloc'd, each key malloc'd. */
static int prefix_keys(sm__batch *b, const ProtobufCBinaryData *prefix, size_t max,
                       ProtobufCBinaryData **keys, size_t *n) {
    uint8_t dp[1 + KV_KEY_BYTES_MAX];
    dp[0] = SM_PREFIX_DATA;
    if (prefix->len > 0) /* the empty prefix may come as NULL */
        memcpy(dp + 1, prefix->data, prefix->len);
    size_t dplen = prefix->len + 1;
    *n = 0;
    *keys = calloc(max + 1, sizeof **keys);
    if (*keys == NULL)
        return KV_ENOMEM;
    rocksdb_iterator_t *it = NULL;
    int rv = sm__biter(b, &it);
    if (rv != 0)
        return rv; /* *keys freed by the caller */
    for (rocksdb_iter_seek(it, (const char *)dp, dplen); rocksdb_iter_valid(it) && *n <= max;
         rocksdb_iter_next(it)) {
        size_t klen;
        const char *k = rocksdb_iter_key(it, &klen);
        if (klen < dplen || memcmp(k, dp, dplen) != 0)
            break;
        uint8_t *copy = malloc(klen - 1);
        if (copy == NULL) {
            rv = KV_ENOMEM;
            break;
        }
        memcpy(copy, k + 1, klen - 1);
        (*keys)[(*n)++] = (ProtobufCBinaryData){klen - 1, copy};
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    if (err != NULL) {
        rv = sm__fail(b->s, err);
        rocksdb_free(err);
    }
    rocksdb_iter_destroy(it); /* the base with it */
    return rv;
}

int sm__delete_prefix(sm__batch *b, const Kv__Command *c, sm_reply *r) {
    assert(r->code == 0 && r->deleted == 0);
    if (c->key.len > KV_KEY_BYTES_MAX) {
        r->code = KV_ETOOBIG; /* defence in depth: the server checks first */
        r->detail = "prefix over KV_KEY_BYTES_MAX";
        return 0;
    }
    ProtobufCBinaryData *keys = NULL;
    size_t n = 0;
    int rv = prefix_keys(b, &c->key, KV_DELETE_PREFIX_KEYS_MAX, &keys, &n);
    r->more = n > KV_DELETE_PREFIX_KEYS_MAX;
    size_t todo = r->more ? KV_DELETE_PREFIX_KEYS_MAX : n;
    for (size_t i = 0; i < todo && rv == 0; i++) {
        sm__rec rec;
        char *raw;
        bool present;
        rv = key_get(b, &keys[i], &rec, &raw, &present);
        assert(rv != 0 || present); /* the iterator just saw it */
        if (rv == 0)
            rv = sm__key_delete(b, keys[i].data, keys[i].len, &rec);
        rocksdb_free(raw);
        r->deleted += rv == 0;
    }
    for (size_t i = 0; i < n; i++)
        free(keys[i].data);
    free(keys);
    return rv;
}
