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
static int check_ops(Kv__TxnOp *const *ops, size_t n, const char *branch, char *why,
                     size_t cap) {
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
            snprintf(why, cap, "txn compare %zu: value of %zu bytes is over "
                     "KV_VALUE_BYTES_MAX (%u)", i + 1, c->value.len, KV_VALUE_BYTES_MAX);
            return KV_ETOOBIG;
        }
    }
    int rc = check_ops(t->success, t->n_success, "success", why, cap);
    if (rc == 0)
        rc = check_ops(t->failure, t->n_failure, "failure", why, cap);
    return rc;
}
