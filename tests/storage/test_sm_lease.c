/* Leases in the state machine (src/storage/sm_lease.c): grant, attach with
 * puts, moving and detaching a key, revoke deleting exactly the attached
 * keys (with DELETE events for watchers), unknown leases, the limits at
 * and past them, duplicates in a session, and the table rebuilt at reopen
 * equal to the one applying kept. */
#include "storage/sm_internal.h"

#include "kv/errors.h"
#include "kv/limits.h"
#include "proto/kv.pb-c.h"
#include "test_sm_util.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char dir[1024];
static uint64_t next_index;

static void setup(void) {
    tu_tmpdir(dir);
    next_index = 1;
}

static void teardown(void) {
    tu_rmrf(dir);
}

/* A command with the lease fields (tu_cmd has none). */
typedef struct lcmd {
    int op;
    uint64_t client, seq;
    const char *key, *val;
    uint64_t lease;
    int64_t ttl;
} lcmd;

static uint8_t *lcmd_pack(const lcmd *x, size_t *len) {
    Kv__Command c;
    kv__command__init(&c);
    c.op = x->op;
    c.client_id = x->client;
    c.seq = x->seq;
    c.key.data = (uint8_t *)x->key;
    c.key.len = x->key ? strlen(x->key) : 0;
    c.value.data = (uint8_t *)x->val;
    c.value.len = x->val ? strlen(x->val) : 0;
    c.lease = x->lease;
    c.ttl = x->ttl;
    *len = kv__command__get_packed_size(&c);
    uint8_t *buf = malloc(*len + 1);
    ck_assert_ptr_nonnull(buf);
    kv__command__pack(&c, buf);
    return buf;
}

/* Applies x at the next index; its reply in *r (may be NULL); the code. */
static int apply(sm *s, lcmd x, sm_reply *r) {
    size_t len;
    uint8_t *buf = lcmd_pack(&x, &len);
    sm_entry e = {
        .index = next_index++, .term = 1, .type = SM_ENTRY_COMMAND, .payload = buf, .len = len};
    sm_reply rr;
    ck_assert_int_eq(sm_apply(s, &e, 1, &rr), 0);
    free(buf);
    sm_replies_free(&rr, 1);
    if (r != NULL)
        *r = rr; /* without its current value (none of these tests reads it) */
    return rr.code;
}

static uint64_t grant(sm *s, int64_t ttl) {
    sm_reply r;
    ck_assert_int_eq(apply(s, (lcmd){.op = KV__COMMAND__OP__LEASE_GRANT, .ttl = ttl}, &r), 0);
    ck_assert_uint_eq(r.lease, r.index); /* the id is the grant's index */
    return r.lease;
}

static int put(sm *s, const char *key, const char *val, uint64_t lease) {
    return apply(s, (lcmd){.op = KV__COMMAND__OP__PUT, .key = key, .val = val, .lease = lease},
                 NULL);
}

static int revoke(sm *s, uint64_t lease, uint64_t *deleted) {
    sm_reply r;
    int code = apply(s, (lcmd){.op = KV__COMMAND__OP__LEASE_REVOKE, .lease = lease}, &r);
    if (deleted != NULL)
        *deleted = r.deleted;
    return code;
}

/* The keys attached to lease as the table counts them (-1: no lease). */
static int64_t keys_of(sm *s, uint64_t lease) {
    sm_lease_info l;
    return sm_lease_get(s, lease, &l) == 0 ? (int64_t)l.keys : -1;
}

static uint64_t lease_of(sm *s, const char *key) {
    void *v = NULL;
    size_t n = 0;
    sm_key_info info;
    ck_assert_int_eq(sm_get_ex(s, key, strlen(key), &v, &n, &info), 0);
    free(v);
    return info.lease;
}

START_TEST(test_lease_grant) {
    sm *s = tu_open(dir, 0);
    uint64_t a = grant(s, 5);
    sm_lease_info l;
    ck_assert_int_eq(sm_lease_get(s, a, &l), 0);
    ck_assert_int_eq(l.ttl, 5);
    ck_assert_uint_eq(l.keys, 0);
    /* the ttl at its limits and one past */
    sm_reply r;
    ck_assert_int_eq(apply(s, (lcmd){.op = KV__COMMAND__OP__LEASE_GRANT, .ttl = 0}, &r), KV_EINVAL);
    ck_assert_uint_eq(r.lease, 0);
    ck_assert_int_eq(apply(s, (lcmd){.op = KV__COMMAND__OP__LEASE_GRANT, .ttl = -1}, NULL),
                     KV_EINVAL);
    ck_assert_int_eq(
        apply(s, (lcmd){.op = KV__COMMAND__OP__LEASE_GRANT, .ttl = KV_LEASE_TTL_MAX + 1}, NULL),
        KV_EINVAL);
    uint64_t b = grant(s, KV_LEASE_TTL_MAX);
    uint64_t c = grant(s, 1);
    ck_assert_uint_eq(sm_leases_count(s), 3);
    ck_assert(a < b && b < c);
    sm_close(s);
}
END_TEST

START_TEST(test_lease_attach_move_detach) {
    sm *s = tu_open(dir, 0);
    uint64_t a = grant(s, 10), b = grant(s, 10);
    ck_assert_int_eq(put(s, "k", "1", a), 0);
    ck_assert_uint_eq(lease_of(s, "k"), a);
    ck_assert_int_eq(keys_of(s, a), 1);
    /* the same lease again: still one key */
    ck_assert_int_eq(put(s, "k", "2", a), 0);
    ck_assert_int_eq(keys_of(s, a), 1);
    /* moved to b */
    ck_assert_int_eq(put(s, "k", "3", b), 0);
    ck_assert_int_eq(keys_of(s, a), 0);
    ck_assert_int_eq(keys_of(s, b), 1);
    ck_assert_uint_eq(lease_of(s, "k"), b);
    /* a put without a lease detaches */
    ck_assert_int_eq(put(s, "k", "4", 0), 0);
    ck_assert_int_eq(keys_of(s, b), 0);
    ck_assert_uint_eq(lease_of(s, "k"), 0);
    /* a delete counts down */
    ck_assert_int_eq(put(s, "d", "x", a), 0);
    ck_assert_int_eq(keys_of(s, a), 1);
    ck_assert_int_eq(apply(s, (lcmd){.op = KV__COMMAND__OP__DELETE, .key = "d"}, NULL), 0);
    ck_assert_int_eq(keys_of(s, a), 0);
    /* CAS_ABSENT with a lease: created attached; when present, nothing moves */
    ck_assert_int_eq(
        apply(s, (lcmd){.op = KV__COMMAND__OP__CAS_ABSENT, .key = "lock", .val = "me", .lease = a},
              NULL),
        0);
    ck_assert_uint_eq(lease_of(s, "lock"), a);
    ck_assert_int_eq(
        apply(s,
              (lcmd){.op = KV__COMMAND__OP__CAS_ABSENT, .key = "lock", .val = "other", .lease = b},
              NULL),
        KV_ECOMPARE);
    ck_assert_uint_eq(lease_of(s, "lock"), a);
    ck_assert_int_eq(keys_of(s, a), 1);
    ck_assert_int_eq(keys_of(s, b), 0);
    sm_close(s);
}
END_TEST

START_TEST(test_lease_unknown) {
    sm *s = tu_open(dir, 0);
    ck_assert_int_eq(put(s, "k", "old", 0), 0);
    sm_reply r;
    ck_assert_int_eq(
        apply(s, (lcmd){.op = KV__COMMAND__OP__PUT, .key = "k", .val = "new", .lease = 77}, &r),
        KV_ENOTFOUND);
    ck_assert_str_eq(r.detail, "lease not found");
    char *v = tu_get(s, "k");
    ck_assert_str_eq(v, "old"); /* nothing changed */
    free(v);
    ck_assert_int_eq(put(s, "fresh", "x", 77), KV_ENOTFOUND);
    ck_assert_ptr_null(tu_get(s, "fresh"));
    ck_assert_int_eq(revoke(s, 77, NULL), KV_ENOTFOUND);
    ck_assert_int_eq(revoke(s, 0, NULL), KV_ENOTFOUND);
    sm_close(s);
}
END_TEST

/* The DELETE events of the entry at rev, from its history record. */
static size_t deletes_at(sm *s, uint64_t rev, const char *want_key) {
    uint8_t hk[9];
    sm__history_key(hk, rev);
    char *err = NULL;
    size_t len = 0;
    char *v = rocksdb_get_cf(s->db, s->ro, s->cf_history, (char *)hk, sizeof hk, &len, &err);
    ck_assert_ptr_null(err);
    ck_assert_ptr_nonnull(v);
    Kv__HistoryRecord *h = kv__history_record__unpack(NULL, len, (uint8_t *)v);
    ck_assert_ptr_nonnull(h);
    size_t n = 0;
    bool seen = false;
    for (size_t i = 0; i < h->n_events; i++) {
        ck_assert_int_eq(h->events[i]->type, KV__WATCH_EVENT__TYPE__DELETE);
        n++;
        seen |= h->events[i]->kv->key.len == strlen(want_key) &&
                memcmp(h->events[i]->kv->key.data, want_key, strlen(want_key)) == 0;
    }
    ck_assert(seen);
    kv__history_record__free_unpacked(h, NULL);
    rocksdb_free(v);
    return n;
}

START_TEST(test_lease_revoke_exact) {
    sm *s = tu_open(dir, 0);
    uint64_t a = grant(s, 10), b = grant(s, 10);
    ck_assert_int_eq(put(s, "a1", "v", a), 0);
    ck_assert_int_eq(put(s, "a2", "v", a), 0);
    ck_assert_int_eq(put(s, "moved", "v", a), 0);
    ck_assert_int_eq(put(s, "moved", "v", b), 0);
    ck_assert_int_eq(put(s, "detached", "v", a), 0);
    ck_assert_int_eq(put(s, "detached", "v", 0), 0);
    ck_assert_int_eq(put(s, "plain", "v", 0), 0);
    uint64_t deleted = 0, at = next_index;
    ck_assert_int_eq(revoke(s, a, &deleted), 0);
    ck_assert_uint_eq(deleted, 2);
    ck_assert_uint_eq(deletes_at(s, at, "a1"), 2); /* watchers see both deletes */
    ck_assert_ptr_null(tu_get(s, "a1"));
    ck_assert_ptr_null(tu_get(s, "a2"));
    const char *stay[] = {"moved", "detached", "plain"};
    for (size_t i = 0; i < 3; i++) {
        char *v = tu_get(s, stay[i]);
        ck_assert_ptr_nonnull(v);
        free(v);
    }
    ck_assert_int_eq(keys_of(s, a), -1);
    ck_assert_int_eq(keys_of(s, b), 1);
    ck_assert_int_eq(revoke(s, a, NULL), KV_ENOTFOUND);
    /* a revoke of a lease without keys */
    uint64_t c = grant(s, 3);
    ck_assert_int_eq(revoke(s, c, &deleted), 0);
    ck_assert_uint_eq(deleted, 0);
    ck_assert_uint_eq(sm_leases_count(s), 1);
    sm_close(s);
}
END_TEST

/* A grant retried in its session gets the stored reply: its index is the
 * lease id (what the client reads when Reply.lease is not stored). */
START_TEST(test_lease_grant_duplicate) {
    sm *s = tu_open(dir, 0);
    sm_reply r;
    ck_assert_int_eq(apply(s, (lcmd){.op = KV__COMMAND__OP__REGISTER}, &r), 0);
    uint64_t client = r.client_id;
    lcmd g = {.op = KV__COMMAND__OP__LEASE_GRANT, .client = client, .seq = 1, .ttl = 9};
    ck_assert_int_eq(apply(s, g, &r), 0);
    uint64_t id = r.lease;
    ck_assert_uint_eq(id, r.index);
    ck_assert_int_eq(apply(s, g, &r), 0);
    ck_assert_str_eq(r.detail, "duplicate");
    ck_assert_uint_eq(r.index, id);
    ck_assert_uint_eq(sm_leases_count(s), 1); /* granted once */
    sm_close(s);
}
END_TEST

/* Applies n commands made by make(i) in one sm_apply. */
static void apply_many(sm *s, size_t n, lcmd (*make)(size_t i, void *arg), void *arg) {
    sm_entry *e = calloc(n, sizeof *e);
    sm_reply *r = calloc(n, sizeof *r);
    ck_assert(e != NULL && r != NULL);
    for (size_t i = 0; i < n; i++) {
        lcmd x = make(i, arg);
        size_t len;
        e[i] = (sm_entry){.index = next_index++, .term = 1, .type = SM_ENTRY_COMMAND};
        e[i].payload = lcmd_pack(&x, &len);
        e[i].len = len;
    }
    ck_assert_int_eq(sm_apply(s, e, n, r), 0);
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(r[i].code, 0);
        free((void *)e[i].payload);
    }
    sm_replies_free(r, n);
    free(e);
    free(r);
}

static lcmd make_grant(size_t i, void *arg) {
    (void)i, (void)arg;
    return (lcmd){.op = KV__COMMAND__OP__LEASE_GRANT, .ttl = 60};
}

START_TEST(test_lease_limit_leases) {
    sm *s = tu_open(dir, 0);
    uint64_t first = next_index;
    for (size_t done = 0; done < KV_LEASES_MAX; done += 4096)
        apply_many(s, 4096, make_grant, NULL);
    ck_assert_uint_eq(sm_leases_count(s), KV_LEASES_MAX);
    sm_reply r;
    ck_assert_int_eq(apply(s, (lcmd){.op = KV__COMMAND__OP__LEASE_GRANT, .ttl = 5}, &r),
                     KV_ETOOBIG);
    ck_assert_uint_eq(sm_leases_count(s), KV_LEASES_MAX);
    ck_assert_int_eq(revoke(s, first, NULL), 0);
    grant(s, 5); /* room again */
    ck_assert_uint_eq(sm_leases_count(s), KV_LEASES_MAX);
    sm_close(s);
    s = tu_open(dir, 0);
    ck_assert_uint_eq(sm_leases_count(s), KV_LEASES_MAX);
    sm_close(s);
}
END_TEST

static lcmd make_put(size_t i, void *arg) {
    static char keys[KV_LEASE_KEYS_MAX][16];
    snprintf(keys[i], sizeof keys[i], "k%06zu", i);
    return (lcmd){
        .op = KV__COMMAND__OP__PUT, .key = keys[i], .val = "v", .lease = *(uint64_t *)arg};
}

START_TEST(test_lease_limit_keys) {
    sm *s = tu_open(dir, 0);
    uint64_t a = grant(s, 60);
    apply_many(s, KV_LEASE_KEYS_MAX, make_put, &a);
    ck_assert_int_eq(keys_of(s, a), KV_LEASE_KEYS_MAX);
    sm_reply r;
    ck_assert_int_eq(
        apply(s, (lcmd){.op = KV__COMMAND__OP__PUT, .key = "one-more", .val = "v", .lease = a}, &r),
        KV_ETOOBIG);
    ck_assert_ptr_null(tu_get(s, "one-more"));
    ck_assert_int_eq(put(s, "k000007", "again", a), 0); /* attached already: fine */
    ck_assert_int_eq(keys_of(s, a), KV_LEASE_KEYS_MAX);
    uint64_t deleted = 0;
    ck_assert_int_eq(revoke(s, a, &deleted), 0);
    ck_assert_uint_eq(deleted, KV_LEASE_KEYS_MAX);
    ck_assert_ptr_null(tu_get(s, "k000007"));
    sm_close(s);
}
END_TEST

/* A txn of no compares whose success ops put k1 and k2 on lease. */
static int txn_put2(sm *s, uint64_t lease) {
    Kv__TxnOp a, b, *ops[2] = {&a, &b};
    kv__txn_op__init(&a);
    kv__txn_op__init(&b);
    a.type = b.type = KV__TXN_OP__TYPE__PUT;
    a.key = (ProtobufCBinaryData){2, (uint8_t *)"k1"};
    b.key = (ProtobufCBinaryData){2, (uint8_t *)"k2"};
    a.value = b.value = (ProtobufCBinaryData){1, (uint8_t *)"v"};
    a.lease = b.lease = lease;
    Kv__Txn t;
    kv__txn__init(&t);
    t.success = ops;
    t.n_success = 2;
    Kv__Command c;
    kv__command__init(&c);
    c.op = KV__COMMAND__OP__TXN;
    c.txn = &t;
    size_t len = kv__command__get_packed_size(&c);
    uint8_t *buf = malloc(len);
    ck_assert_ptr_nonnull(buf);
    kv__command__pack(&c, buf);
    sm_entry e = {
        .index = next_index++, .term = 1, .type = SM_ENTRY_COMMAND, .payload = buf, .len = len};
    sm_reply r;
    ck_assert_int_eq(sm_apply(s, &e, 1, &r), 0);
    free(buf);
    int code = r.code;
    sm_replies_free(&r, 1);
    return code;
}

/* A transaction's puts attach like a put's: an unknown lease refuses the
 * whole txn (nothing written), a known one counts its keys, and revoke
 * deletes them. */
START_TEST(test_lease_txn) {
    sm *s = tu_open(dir, 0);
    ck_assert_int_eq(txn_put2(s, 42), KV_ENOTFOUND);
    ck_assert_ptr_null(tu_get(s, "k1"));
    ck_assert_ptr_null(tu_get(s, "k2"));
    uint64_t a = grant(s, 10);
    ck_assert_int_eq(txn_put2(s, a), 0);
    ck_assert_int_eq(keys_of(s, a), 2);
    uint64_t deleted = 0;
    ck_assert_int_eq(revoke(s, a, &deleted), 0);
    ck_assert_uint_eq(deleted, 2);
    ck_assert_ptr_null(tu_get(s, "k1"));
    sm_close(s);
}
END_TEST

typedef struct snap_tbl {
    sm_lease_info v[16];
    size_t n;
} snap_tbl;

static int tbl_add(void *arg, const sm_lease_info *l) {
    snap_tbl *t = arg;
    ck_assert_uint_lt(t->n, 16);
    t->v[t->n++] = *l;
    return 0;
}

START_TEST(test_lease_reopen) {
    sm *s = tu_open(dir, 0);
    uint64_t a = grant(s, 10), b = grant(s, 20), c = grant(s, 30);
    ck_assert_int_eq(put(s, "x", "1", a), 0);
    ck_assert_int_eq(put(s, "y", "1", a), 0);
    ck_assert_int_eq(put(s, "z", "1", c), 0);
    ck_assert_int_eq(revoke(s, b, NULL), 0);
    snap_tbl before = {0}, after = {0};
    ck_assert_int_eq(sm_leases_each(s, tbl_add, &before), 0);
    sm_close(s);
    s = tu_open(dir, 0);
    ck_assert_int_eq(sm_leases_each(s, tbl_add, &after), 0);
    ck_assert_uint_eq(before.n, 2);
    ck_assert_uint_eq(after.n, before.n);
    ck_assert_mem_eq(after.v, before.v, before.n * sizeof before.v[0]);
    ck_assert_int_eq(keys_of(s, a), 2);
    ck_assert_int_eq(keys_of(s, c), 1);
    /* and it goes on applying from there */
    uint64_t deleted = 0;
    ck_assert_int_eq(revoke(s, a, &deleted), 0);
    ck_assert_uint_eq(deleted, 2);
    sm_close(s);
}
END_TEST

/* One apply call that grants, attaches, revokes and writes again: the
 * revoke must find the keys attached earlier in the same call (they are in
 * its batch, not yet in the db), and what the call leaves must survive a
 * reopen with the call's last index applied. */
START_TEST(test_lease_revoke_same_call) {
    sm *s = tu_open(dir, 0);
    lcmd x[] = {
        {.op = KV__COMMAND__OP__LEASE_GRANT, .ttl = 10},                      /* 1 */
        {.op = KV__COMMAND__OP__PUT, .key = "a1", .val = "v", .lease = 1},    /* 2 */
        {.op = KV__COMMAND__OP__PUT, .key = "a2", .val = "v", .lease = 1},    /* 3 */
        {.op = KV__COMMAND__OP__PUT, .key = "a1", .val = "w", .lease = 1},    /* 4 */
        {.op = KV__COMMAND__OP__LEASE_REVOKE, .lease = 1},                    /* 5 */
        {.op = KV__COMMAND__OP__PUT, .key = "a2", .val = "again", .lease = 0}, /* 6 */
        {.op = KV__COMMAND__OP__CAS_ABSENT, .key = "a1", .val = "new"},       /* 7 */
    };
    enum { N = sizeof x / sizeof x[0] };
    sm_entry e[N];
    uint8_t *buf[N];
    for (size_t i = 0; i < N; i++) {
        size_t len;
        buf[i] = lcmd_pack(&x[i], &len);
        e[i] = (sm_entry){.index = i + 1, .term = 1, .type = SM_ENTRY_COMMAND, .payload = buf[i],
                          .len = len};
    }
    sm_reply r[N];
    ck_assert_int_eq(sm_apply(s, e, N, r), 0);
    for (size_t i = 0; i < N; i++)
        ck_assert_int_eq(r[i].code, 0);
    ck_assert_uint_eq(r[4].deleted, 2);
    sm_replies_free(r, N);
    for (size_t i = 0; i < N; i++)
        free(buf[i]);
    ck_assert_uint_eq(deletes_at(s, 5, "a1"), 2); /* watchers see both deletes */
    for (int round = 0; round < 2; round++) {
        ck_assert_uint_eq(sm_applied_index(s), N);
        ck_assert_int_eq(keys_of(s, 1), -1);
        char *v = tu_get(s, "a1");
        ck_assert_str_eq(v, "new");
        free(v);
        v = tu_get(s, "a2");
        ck_assert_str_eq(v, "again");
        free(v);
        ck_assert_uint_eq(lease_of(s, "a2"), 0);
        sm_close(s);
        s = tu_open(dir, 0);
    }
    sm_close(s);
}
END_TEST

/* kvcli check compares sm_hash between nodes: two state machines whose
 * keys are alike but whose leases differ must not hash alike. */
START_TEST(test_lease_in_hash) {
    char da[1100], db[1100];
    snprintf(da, sizeof da, "%s/a", dir);
    snprintf(db, sizeof db, "%s/b", dir);
    sm *a = tu_open(da, 0), *b = tu_open(db, 0);
    ck_assert_int_eq(put(a, "k", "v", 0), 0); /* index 1 */
    next_index = 1;
    ck_assert_int_eq(put(b, "k", "v", 0), 0);
    ck_assert_int_eq(apply(a, (lcmd){.op = KV__COMMAND__OP__NOOP}, NULL), 0); /* index 2 */
    next_index = 2;
    (void)grant(b, 10); /* index 2: a lease and no key */
    uint64_t ha = 0, hb = 0;
    ck_assert_int_eq(sm_hash(a, &ha), 0);
    ck_assert_int_eq(sm_hash(b, &hb), 0);
    ck_assert_uint_ne(ha, hb);
    sm_close(a);
    sm_close(b);
}
END_TEST

int main(void) {
    Suite *s = suite_create("sm_lease");
    TCase *t = tcase_create("lease");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 120);
    tcase_add_test(t, test_lease_grant);
    tcase_add_test(t, test_lease_in_hash);
    tcase_add_test(t, test_lease_attach_move_detach);
    tcase_add_test(t, test_lease_unknown);
    tcase_add_test(t, test_lease_revoke_exact);
    tcase_add_test(t, test_lease_revoke_same_call);
    tcase_add_test(t, test_lease_grant_duplicate);
    tcase_add_test(t, test_lease_limit_leases);
    tcase_add_test(t, test_lease_limit_keys);
    tcase_add_test(t, test_lease_reopen);
    tcase_add_test(t, test_lease_txn);
    suite_add_tcase(s, t);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed == 0 ? 0 : 1;
}
