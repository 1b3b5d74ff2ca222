/* Transactions and delete by prefix in the state machine (src/storage/
 * sm_txn.c): compares, branches, results, atomicity, limits, exactly once,
 * revisions, and deleting ranges past KV_DELETE_PREFIX_KEYS_MAX. */
#include "storage/sm.h"

#include "kv/errors.h"
#include "kv/limits.h"
#include "proto/kv.pb-c.h"
#include "test_sm_util.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OP_PUT KV__COMMAND__OP__PUT
#define OP_REG KV__COMMAND__OP__REGISTER
#define T_VALUE KV__COMPARE__TARGET__VALUE
#define T_VERSION KV__COMPARE__TARGET__VERSION
#define T_CREATE KV__COMPARE__TARGET__CREATE
#define T_MOD KV__COMPARE__TARGET__MOD
#define T_LEASE KV__COMPARE__TARGET__LEASE
#define R_EQ KV__COMPARE__RESULT__EQUAL
#define R_NE KV__COMPARE__RESULT__NOT_EQUAL
#define R_LT KV__COMPARE__RESULT__LESS
#define R_GT KV__COMPARE__RESULT__GREATER
#define X_GET KV__TXN_OP__TYPE__GET
#define X_PUT KV__TXN_OP__TYPE__PUT
#define X_DEL KV__TXN_OP__TYPE__DELETE

static char dir[1024], db[4096];
static sm *S;

static void setup(void) {
    tu_tmpdir(dir);
    snprintf(db, sizeof db, "%s/db", dir);
    S = tu_open(db, 0);
}

static void teardown(void) {
    sm_close(S);
    S = NULL;
    tu_rmrf(dir);
}

/* ---- a txn being built (one at a time) -------------------------------------- */

#define TX_MAX (KV_TXN_OPS_MAX + 2u)
static Kv__Txn T;
static Kv__Compare Cmp[TX_MAX], *CmpP[TX_MAX];
static Kv__TxnOp Ops[2][TX_MAX], *OpsP[2][TX_MAX];

static void tx_reset(void) {
    kv__txn__init(&T);
    T.compares = CmpP;
    T.failure = OpsP[0];
    T.success = OpsP[1];
}

static ProtobufCBinaryData bytes(const char *s) {
    return (ProtobufCBinaryData){s ? strlen(s) : 0, (uint8_t *)s};
}

static void tx_cmp(int target, int result, const char *key, const char *val, uint64_t num) {
    ck_assert_uint_lt(T.n_compares, TX_MAX);
    Kv__Compare *m = &Cmp[T.n_compares];
    kv__compare__init(m);
    m->target = target;
    m->result = result;
    m->key = bytes(key);
    m->value = bytes(val);
    m->number = num;
    CmpP[T.n_compares++] = m;
}

static void tx_op(bool success, int type, const char *key, const char *val) {
    size_t *n = success ? &T.n_success : &T.n_failure;
    ck_assert_uint_lt(*n, TX_MAX);
    Kv__TxnOp *o = &Ops[success][*n];
    kv__txn_op__init(o);
    o->type = type;
    o->key = bytes(key);
    o->value = bytes(val);
    OpsP[success][(*n)++] = o;
}

/* Applies T as entry index in session client (0: none) at seq; the reply's
 * code, the reply in *r (sm_replies_free) when not NULL. */
static int tx_apply(uint64_t index, uint64_t client, uint64_t seq, sm_reply *r) {
    Kv__Command c = KV__COMMAND__INIT;
    c.op = KV__COMMAND__OP__TXN;
    c.client_id = client;
    c.seq = seq;
    c.txn = &T;
    size_t len = kv__command__get_packed_size(&c);
    uint8_t *buf = malloc(len);
    ck_assert_ptr_nonnull(buf);
    kv__command__pack(&c, buf);
    sm_entry e = {.index = index, .term = 1, .type = SM_ENTRY_COMMAND, .payload = buf, .len = len};
    sm_reply rr;
    ck_assert_int_eq(sm_apply(S, &e, 1, &rr), 0);
    free(buf);
    int code = rr.code;
    if (r != NULL)
        *r = rr;
    else
        sm_replies_free(&rr, 1);
    return code;
}

static bool tx_succeeds(uint64_t index) {
    sm_reply r;
    ck_assert_int_eq(tx_apply(index, 0, 0, &r), 0);
    bool ok = r.succeeded;
    sm_replies_free(&r, 1);
    return ok;
}

static sm_key_info info_of(const char *key) {
    sm_key_info i = {0};
    void *v = NULL;
    size_t n = 0;
    ck_assert_int_eq(sm_get_ex(S, key, strlen(key), &v, &n, &i), 0);
    free(v);
    return i;
}

static void expect(const char *key, const char *val) {
    char *v = tu_get(S, key);
    if (val == NULL) {
        ck_assert_ptr_null(v);
    } else {
        ck_assert_ptr_nonnull(v);
        ck_assert_str_eq(v, val);
    }
    free(v);
}

/* ---- tests ------------------------------------------------------------------ */

START_TEST(test_txn_compares) {
    ck_assert_int_eq(tu_apply(S, 1, OP_PUT, 0, 0, "k", "m", NULL, NULL), 0);
    ck_assert_int_eq(tu_apply(S, 2, OP_PUT, 0, 0, "k", "m", NULL, NULL), 0);
    /* k: value "m", create 1, mod 2, version 2, lease 0; "none" absent */
    static const struct {
        int target, result;
        const char *key, *val;
        uint64_t num;
        bool holds;
    } cases[] = {
        {T_VALUE, R_EQ, "k", "m", 0, true},       {T_VALUE, R_NE, "k", "m", 0, false},
        {T_VALUE, R_LT, "k", "n", 0, true},       {T_VALUE, R_LT, "k", "m", 0, false},
        {T_VALUE, R_GT, "k", "l", 0, true},       {T_VALUE, R_GT, "k", "mm", 0, false},
        {T_VALUE, R_LT, "k", "mm", 0, true},      {T_VALUE, R_EQ, "none", "", 0, false},
        {T_VALUE, R_NE, "none", "", 0, true},     {T_VALUE, R_LT, "none", "z", 0, false},
        {T_VALUE, R_GT, "none", "", 0, false},    {T_VERSION, R_EQ, "k", NULL, 2, true},
        {T_VERSION, R_GT, "k", NULL, 1, true},    {T_VERSION, R_LT, "k", NULL, 2, false},
        {T_VERSION, R_EQ, "none", NULL, 0, true}, {T_CREATE, R_EQ, "k", NULL, 1, true},
        {T_CREATE, R_NE, "k", NULL, 1, false},    {T_CREATE, R_EQ, "none", NULL, 0, true},
        {T_MOD, R_EQ, "k", NULL, 2, true},        {T_MOD, R_LT, "k", NULL, 3, true},
        {T_MOD, R_GT, "k", NULL, 2, false},       {T_MOD, R_LT, "none", NULL, 1, true},
        {T_LEASE, R_EQ, "k", NULL, 0, true},      {T_LEASE, R_GT, "k", NULL, 0, false},
        {T_LEASE, R_EQ, "none", NULL, 0, true},
    };
    uint64_t index = 3;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tx_reset();
        tx_cmp(cases[i].target, cases[i].result, cases[i].key, cases[i].val, cases[i].num);
        ck_assert_msg(tx_succeeds(index++) == cases[i].holds, "case %zu", i);
    }
    /* every compare must hold: one false among true ones fails the txn */
    tx_reset();
    tx_cmp(T_VALUE, R_EQ, "k", "m", 0);
    tx_cmp(T_VERSION, R_EQ, "none", NULL, 1);
    tx_cmp(T_MOD, R_EQ, "k", NULL, 2);
    ck_assert(!tx_succeeds(index++));
    /* a txn of compares alone changes nothing: k's revisions stay */
    sm_key_info i = info_of("k");
    ck_assert(i.create_rev == 1 && i.mod_rev == 2 && i.version == 2);
}
END_TEST

START_TEST(test_txn_branches) {
    ck_assert_int_eq(tu_apply(S, 1, OP_PUT, 0, 0, "a", "1", NULL, NULL), 0);
    tx_reset();
    tx_cmp(T_VALUE, R_EQ, "a", "1", 0);
    tx_op(true, X_PUT, "b", "2");
    tx_op(true, X_GET, "b", NULL);    /* sees the put above, in this same txn */
    tx_op(true, X_DEL, "none", NULL); /* absent: NOTFOUND, not a failed txn */
    tx_op(true, X_GET, "none", NULL);
    tx_op(false, X_PUT, "f", "x");
    sm_reply r;
    ck_assert_int_eq(tx_apply(2, 0, 0, &r), 0);
    ck_assert(r.succeeded);
    ck_assert_uint_eq(r.n_results, 4);
    ck_assert_int_eq(r.results[0]->code, 0);
    ck_assert_int_eq(r.results[1]->code, 0);
    const Kv__KeyValue *kv = r.results[1]->kv;
    ck_assert_ptr_nonnull(kv);
    ck_assert_mem_eq(kv->key.data, "b", 1);
    ck_assert_uint_eq(kv->value.len, 1);
    ck_assert_mem_eq(kv->value.data, "2", 1);
    ck_assert(kv->create_rev == 2 && kv->mod_rev == 2 && kv->version == 1);
    ck_assert_int_eq(r.results[2]->code, KV_ENOTFOUND);
    ck_assert_int_eq(r.results[3]->code, KV_ENOTFOUND);
    ck_assert_ptr_null(r.results[3]->kv);
    sm_replies_free(&r, 1);
    expect("b", "2");
    expect("f", NULL);
    /* the same txn once a changed: the failure op runs */
    ck_assert_int_eq(tu_apply(S, 3, OP_PUT, 0, 0, "a", "9", NULL, NULL), 0);
    ck_assert_int_eq(tx_apply(4, 0, 0, &r), 0);
    ck_assert(!r.succeeded);
    ck_assert_uint_eq(r.n_results, 1);
    ck_assert_int_eq(r.results[0]->code, 0);
    sm_replies_free(&r, 1);
    expect("f", "x");
    ck_assert_uint_eq(info_of("b").mod_rev, 2); /* success ops did not run */
}
END_TEST

/* Revisions through txn ops: two puts of one key in one entry count twice,
 * a delete and a put make it new again. */
START_TEST(test_txn_revisions) {
    tx_reset();
    tx_op(true, X_PUT, "k", "1");
    tx_op(true, X_PUT, "k", "2");
    ck_assert(tx_succeeds(5));
    sm_key_info i = info_of("k");
    ck_assert(i.create_rev == 5 && i.mod_rev == 5 && i.version == 2);
    tx_reset();
    tx_op(true, X_PUT, "k", "3");
    ck_assert(tx_succeeds(6));
    i = info_of("k");
    ck_assert(i.create_rev == 5 && i.mod_rev == 6 && i.version == 3);
    tx_reset();
    tx_op(true, X_DEL, "k", NULL);
    ck_assert(tx_succeeds(7));
    expect("k", NULL);
    tx_reset();
    tx_cmp(T_VERSION, R_EQ, "k", NULL, 0); /* absent again */
    tx_op(true, X_PUT, "k", "4");
    ck_assert(tx_succeeds(8));
    i = info_of("k");
    ck_assert(i.create_rev == 8 && i.mod_rev == 8 && i.version == 1);
    expect("k", "4");
}
END_TEST

/* A refused txn changes nothing and names the op. */
START_TEST(test_txn_refused_whole) {
    tx_reset();
    tx_op(true, X_PUT, "x", "1");
    tx_op(true, X_PUT, "", "2");
    sm_reply r;
    ck_assert_int_eq(tx_apply(1, 0, 0, &r), KV_EINVAL);
    ck_assert_ptr_nonnull(r.detail);
    ck_assert_msg(strstr(r.detail, "success op (put) 2") != NULL, "detail: %s", r.detail);
    ck_assert_uint_eq(r.n_results, 0);
    sm_replies_free(&r, 1);
    expect("x", NULL);

    tx_reset();
    tx_op(false, X_PUT, "x", "1");
    for (unsigned i = 0; i < KV_TXN_OPS_MAX; i++)
        tx_cmp(T_VERSION, R_EQ, "y", NULL, 0);
    ck_assert_int_eq(tx_apply(2, 0, 0, NULL), KV_ETOOBIG); /* one past the limit */
    T.n_compares--;
    ck_assert(tx_succeeds(3)); /* at the limit: applied, every compare held */
    expect("x", NULL);         /* so the failure op did not run */

    static char big[KV_VALUE_BYTES_MAX + 2];
    memset(big, 'v', sizeof big - 1);
    tx_reset();
    tx_op(true, X_PUT, "x", "1");
    tx_op(true, X_PUT, "y", big);
    ck_assert_int_eq(tx_apply(4, 0, 0, &r), KV_ETOOBIG);
    ck_assert_msg(strstr(r.detail, "success op (put) 2") != NULL, "detail: %s", r.detail);
    sm_replies_free(&r, 1);
    expect("x", NULL);
}
END_TEST

/* Gets that would return more than KV_TXN_GET_BYTES_MAX: refused before
 * anything runs, counting a value put earlier in the same txn. */
START_TEST(test_txn_get_bytes) {
    static char big[KV_VALUE_BYTES_MAX + 1];
    memset(big, 'v', sizeof big - 1);
    ck_assert_int_eq(tu_apply(S, 1, OP_PUT, 0, 0, "a", big, NULL, NULL), 0);
    tx_reset();
    tx_op(true, X_GET, "a", NULL);
    tx_op(true, X_PUT, "b", big);
    tx_op(true, X_GET, "b", NULL); /* two values: under the limit */
    ck_assert(tx_succeeds(2));
    tx_reset();
    tx_op(true, X_PUT, "c", "1");
    tx_op(true, X_GET, "a", NULL);
    tx_op(true, X_GET, "b", NULL);
    tx_op(true, X_GET, "a", NULL); /* three: over */
    sm_reply r;
    ck_assert_int_eq(tx_apply(3, 0, 0, &r), KV_ETOOBIG);
    ck_assert_ptr_nonnull(strstr(r.detail, "KV_TXN_GET_BYTES_MAX"));
    sm_replies_free(&r, 1);
    expect("c", NULL);
    tx_reset();
    tx_op(true, X_DEL, "a", NULL);
    tx_op(true, X_GET, "a", NULL); /* deleted first: nothing to return */
    tx_op(true, X_GET, "b", NULL);
    tx_op(true, X_GET, "b", NULL);
    ck_assert(tx_succeeds(4));
}
END_TEST

static void check_dup_reply(const sm_reply *r) {
    ck_assert_int_eq(r->code, 0);
    ck_assert(r->succeeded);
    ck_assert_uint_eq(r->n_results, 2);
    ck_assert_int_eq(r->results[0]->code, 0);
    const Kv__KeyValue *kv = r->results[1]->kv;
    ck_assert_ptr_nonnull(kv);
    ck_assert_uint_eq(kv->value.len, 1);
    ck_assert_mem_eq(kv->value.data, "1", 1);
    ck_assert_uint_eq(kv->mod_rev, 3);
    ck_assert_uint_eq(kv->version, 2);
}

/* A txn retried in its session: the same results, applied once; also after
 * a restart (the results come from the session's record). */
START_TEST(test_txn_exactly_once) {
    ck_assert_int_eq(tu_apply(S, 1, OP_REG, 0, 0, NULL, NULL, NULL, NULL), 0);
    ck_assert_int_eq(tu_apply(S, 2, OP_PUT, 0, 0, "c", "0", NULL, NULL), 0);
    tx_reset();
    tx_cmp(T_VALUE, R_EQ, "c", "0", 0);
    tx_op(true, X_PUT, "c", "1");
    tx_op(true, X_GET, "c", NULL);
    tx_op(false, X_PUT, "c", "wrong");
    sm_reply r;
    ck_assert_int_eq(tx_apply(3, 1, 1, &r), 0);
    check_dup_reply(&r);
    sm_replies_free(&r, 1);
    ck_assert_int_eq(tx_apply(4, 1, 1, &r), 0); /* the retry: compare would fail now */
    check_dup_reply(&r);
    ck_assert_str_eq(r.detail, "duplicate");
    sm_replies_free(&r, 1);
    expect("c", "1");
    sm_close(S);
    S = tu_open(db, 0);
    ck_assert_int_eq(tx_apply(5, 1, 1, &r), 0);
    check_dup_reply(&r);
    sm_replies_free(&r, 1);
    expect("c", "1");
    sm_key_info i = info_of("c");
    ck_assert(i.mod_rev == 3 && i.version == 2);
    /* the next seq runs: its compare fails now */
    ck_assert_int_eq(tx_apply(6, 1, 2, &r), 0);
    ck_assert(!r.succeeded);
    sm_replies_free(&r, 1);
    expect("c", "wrong");
}
END_TEST

static void apply_delete_prefix(uint64_t index, const char *prefix, uint64_t client, uint64_t seq,
                                sm_reply *r) {
    size_t len;
    uint8_t *buf = tu_cmd(KV__COMMAND__OP__DELETE_PREFIX, client, seq, prefix, strlen(prefix), NULL,
                          0, NULL, 0, &len);
    sm_entry e = {.index = index, .term = 1, .type = SM_ENTRY_COMMAND, .payload = buf, .len = len};
    ck_assert_int_eq(sm_apply(S, &e, 1, r), 0);
    free(buf);
}

/* n puts of prefix%05u from index first, in one apply call. */
static void put_many(uint64_t first, const char *prefix, unsigned n) {
    sm_entry *e = calloc(n, sizeof *e);
    uint8_t **bufs = calloc(n, sizeof *bufs);
    sm_reply *r = calloc(n, sizeof *r);
    ck_assert(e && bufs && r);
    for (unsigned i = 0; i < n; i++) {
        char k[64];
        snprintf(k, sizeof k, "%s%05u", prefix, i);
        size_t len;
        bufs[i] = tu_cmd(OP_PUT, 0, 0, k, strlen(k), "v", 1, NULL, 0, &len);
        e[i] = (sm_entry){.index = first + i,
                          .term = 1,
                          .type = SM_ENTRY_COMMAND,
                          .payload = bufs[i],
                          .len = len};
    }
    ck_assert_int_eq(sm_apply(S, e, n, r), 0);
    for (unsigned i = 0; i < n; i++)
        free(bufs[i]);
    sm_replies_free(r, n);
    free(e);
    free(bufs);
    free(r);
}

START_TEST(test_delete_prefix) {
    put_many(1, "p/", KV_DELETE_PREFIX_KEYS_MAX + 5);
    uint64_t idx = KV_DELETE_PREFIX_KEYS_MAX + 6;
    ck_assert_int_eq(tu_apply(S, idx++, OP_PUT, 0, 0, "p", "outside", NULL, NULL), 0);
    ck_assert_int_eq(tu_apply(S, idx++, OP_PUT, 0, 0, "q/1", "x", NULL, NULL), 0);
    ck_assert_int_eq(tu_apply(S, idx++, OP_REG, 0, 0, NULL, NULL, NULL, NULL), 0);
    uint64_t client = idx - 1;
    sm_reply r;
    apply_delete_prefix(idx++, "p/", client, 1, &r);
    ck_assert_int_eq(r.code, 0);
    ck_assert_uint_eq(r.deleted, KV_DELETE_PREFIX_KEYS_MAX);
    ck_assert(r.more);
    sm_replies_free(&r, 1);
    expect("p/00000", NULL);
    expect("p/10004", "v");
    /* a retry of that entry: the same count, nothing more deleted */
    apply_delete_prefix(idx++, "p/", client, 1, &r);
    ck_assert_uint_eq(r.deleted, KV_DELETE_PREFIX_KEYS_MAX);
    ck_assert(r.more);
    sm_replies_free(&r, 1);
    expect("p/10004", "v");
    apply_delete_prefix(idx++, "p/", client, 2, &r);
    ck_assert_uint_eq(r.deleted, 5);
    ck_assert(!r.more);
    sm_replies_free(&r, 1);
    expect("p/10004", NULL);
    expect("p", "outside");
    expect("q/1", "x");
    apply_delete_prefix(idx++, "p/", 0, 0, &r);
    ck_assert(r.code == 0 && r.deleted == 0 && !r.more);
    sm_replies_free(&r, 1);
    /* the empty prefix: everything */
    apply_delete_prefix(idx++, "", 0, 0, &r);
    ck_assert(r.code == 0 && r.deleted == 2 && !r.more);
    sm_replies_free(&r, 1);
    expect("p", NULL);
    expect("q/1", NULL);
}
END_TEST

/* Earlier entries of the same apply call count: puts and the delete in one
 * batch. */
START_TEST(test_delete_prefix_same_batch) {
    ck_assert_int_eq(tu_apply(S, 1, OP_PUT, 0, 0, "r/old", "1", NULL, NULL), 0);
    size_t l1, l2, l3;
    uint8_t *b1 = tu_cmd(OP_PUT, 0, 0, "r/new", 5, "2", 1, NULL, 0, &l1);
    uint8_t *b2 = tu_cmd(KV__COMMAND__OP__DELETE, 0, 0, "r/old", 5, NULL, 0, NULL, 0, &l2);
    uint8_t *b3 = tu_cmd(KV__COMMAND__OP__DELETE_PREFIX, 0, 0, "r/", 2, NULL, 0, NULL, 0, &l3);
    sm_entry e[3] = {
        {.index = 2, .term = 1, .type = SM_ENTRY_COMMAND, .payload = b1, .len = l1},
        {.index = 3, .term = 1, .type = SM_ENTRY_COMMAND, .payload = b2, .len = l2},
        {.index = 4, .term = 1, .type = SM_ENTRY_COMMAND, .payload = b3, .len = l3},
    };
    sm_reply r[3];
    ck_assert_int_eq(sm_apply(S, e, 3, r), 0);
    ck_assert_uint_eq(r[2].deleted, 1); /* r/new, put in this batch; r/old deleted in it */
    sm_replies_free(r, 3);
    free(b1);
    free(b2);
    free(b3);
    expect("r/new", NULL);
    expect("r/old", NULL);
}
END_TEST

static Suite *txn_suite(void) {
    Suite *s = suite_create("sm_txn");
    TCase *t = tcase_create("txn");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_txn_compares);
    tcase_add_test(t, test_txn_branches);
    tcase_add_test(t, test_txn_revisions);
    tcase_add_test(t, test_txn_refused_whole);
    tcase_add_test(t, test_txn_get_bytes);
    tcase_add_test(t, test_txn_exactly_once);
    tcase_add_test(t, test_delete_prefix);
    tcase_add_test(t, test_delete_prefix_same_batch);
    suite_add_tcase(s, t);
    return s;
}

int main(void) {
    SRunner *r = srunner_create(txn_suite());
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
