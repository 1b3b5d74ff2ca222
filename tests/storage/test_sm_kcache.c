/* The key cache (sm_keys.c) changes nothing: random PUT (with and
 * without leases), DELETE, CAS, CAS_ABSENT, TXN (compares, put/del/get,
 * leases), DELETE_PREFIX, LEASE_GRANT and LEASE_REVOKE, in random batches,
 * some of which fail part way (a corrupt record under a fresh key), applied
 * to three state machines whose key caches are off, 2 slots (one set: every
 * key evicts the others) and 4 slots: every reply and, after every call,
 * the hash (records with their headers, the lease index, the leases) must
 * agree. Seeded: KV_SEED=<seed> replays. */
#include "storage/sm_internal.h"

#include "kv/errors.h"
#include "kv/limits.h"
#include "proto/kv.pb-c.h"
#include "test_sm_util.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NSM 3
#define STEPS 3000
#define BATCH_MAX 8
#define NKEYS 9

static const char *KEYS[NKEYS] = {
    "a0", "a1", "a2", "a3", "b0", "b1", "b2", "b3",
    /* longer than SM_KEY_CACHE_KEY_BYTES: never cached */
    "a-long-key-0123456789012345678901234567890123456789012345678901234567890"};
static const char *PREFIXES[] = {"a", "b", "a1", "", "b3", "a-"};
static const char *VALS[] = {"v0", "v1", "v2", ""};

static uint64_t leases[4096];
static size_t nleases;

static uint64_t rnd(uint64_t *seed, uint64_t n) {
    return tu_rand(seed) % n;
}

static ProtobufCBinaryData bytes(const char *s) {
    return (ProtobufCBinaryData){strlen(s), (uint8_t *)s};
}

static uint64_t some_lease(uint64_t *seed) {
    if (nleases == 0 || rnd(seed, 3) == 0)
        return 0;
    if (rnd(seed, 20) == 0)
        return 999999; /* not a lease */
    return leases[nleases - 1 - rnd(seed, nleases < 6 ? nleases : 6)];
}

/* One random command at index; its payload malloc'd. */
static uint8_t *gen(uint64_t *seed, uint64_t index, size_t *len) {
    Kv__Command c;
    kv__command__init(&c);
    Kv__Txn t;
    Kv__Compare cmp[3], *cmpp[3];
    Kv__TxnOp ops[2][4], *opsp[2][4];
    uint64_t x = rnd(seed, 100);
    const char *key = KEYS[rnd(seed, NKEYS)];
    c.key = bytes(key);
    c.value = bytes(VALS[rnd(seed, 4)]);
    if (x < 25) {
        c.op = KV__COMMAND__OP__PUT;
        c.lease = some_lease(seed);
    } else if (x < 40) {
        c.op = KV__COMMAND__OP__DELETE;
    } else if (x < 48) {
        c.op = KV__COMMAND__OP__CAS;
        c.expected = bytes(VALS[rnd(seed, 4)]);
        c.lease = some_lease(seed);
    } else if (x < 54) {
        c.op = KV__COMMAND__OP__CAS_ABSENT;
        c.lease = some_lease(seed);
    } else if (x < 76) {
        c.op = KV__COMMAND__OP__TXN;
        kv__txn__init(&t);
        t.n_compares = rnd(seed, 3);
        for (size_t i = 0; i < t.n_compares; i++) {
            kv__compare__init(&cmp[i]);
            cmp[i].target = (Kv__Compare__Target)rnd(seed, 5);
            cmp[i].result = (Kv__Compare__Result)rnd(seed, 4);
            cmp[i].key = bytes(KEYS[rnd(seed, NKEYS)]);
            cmp[i].value = bytes(VALS[rnd(seed, 4)]);
            cmp[i].number = rnd(seed, 3) == 0 ? 0 : rnd(seed, index + 1);
            cmpp[i] = &cmp[i];
        }
        t.compares = cmpp;
        for (int b = 0; b < 2; b++) {
            size_t n = rnd(seed, 5);
            for (size_t i = 0; i < n; i++) {
                kv__txn_op__init(&ops[b][i]);
                ops[b][i].type = (Kv__TxnOp__Type)rnd(seed, 3);
                ops[b][i].key = bytes(KEYS[rnd(seed, NKEYS)]);
                ops[b][i].value = bytes(VALS[rnd(seed, 4)]);
                if (ops[b][i].type == KV__TXN_OP__TYPE__PUT)
                    ops[b][i].lease = some_lease(seed);
                opsp[b][i] = &ops[b][i];
            }
            if (b == 0) {
                t.n_success = n;
                t.success = opsp[0];
            } else {
                t.n_failure = n;
                t.failure = opsp[1];
            }
        }
        c.txn = &t;
    } else if (x < 84) {
        c.op = KV__COMMAND__OP__DELETE_PREFIX;
        c.key = bytes(PREFIXES[rnd(seed, sizeof PREFIXES / sizeof *PREFIXES)]);
    } else if (x < 92) {
        c.op = KV__COMMAND__OP__LEASE_GRANT;
        c.ttl = 10;
        ck_assert_uint_lt(nleases, sizeof leases / sizeof *leases);
        leases[nleases++] = index; /* its id when granted */
    } else {
        c.op = KV__COMMAND__OP__LEASE_REVOKE;
        c.lease = nleases ? leases[rnd(seed, nleases)] : 1;
    }
    *len = kv__command__get_packed_size(&c);
    uint8_t *buf = malloc(*len + 1);
    ck_assert_ptr_nonnull(buf);
    kv__command__pack(&c, buf);
    return buf;
}

static uint8_t *bad_put(const char *key, size_t *len) {
    Kv__Command c;
    kv__command__init(&c);
    c.op = KV__COMMAND__OP__PUT;
    c.key = bytes(key);
    c.value = bytes("x");
    *len = kv__command__get_packed_size(&c);
    uint8_t *buf = malloc(*len + 1);
    ck_assert_ptr_nonnull(buf);
    kv__command__pack(&c, buf);
    return buf;
}

/* Writes (value non-NULL) or deletes the record of key under each state
 * machine, where no sm_* call would. */
static void raw_record(sm *const *s, const char *key, const char *value) {
    char dk[40];
    size_t kl = strlen(key);
    ck_assert_uint_lt(kl, sizeof dk);
    dk[0] = SM_PREFIX_DATA;
    memcpy(dk + 1, key, kl);
    for (int i = 0; i < NSM; i++) {
        char *err = NULL;
        if (value != NULL)
            rocksdb_put(s[i]->db, s[i]->wo, dk, kl + 1, value, strlen(value), &err);
        else
            rocksdb_delete(s[i]->db, s[i]->wo, dk, kl + 1, &err);
        ck_assert_ptr_null(err);
    }
}

static void same_reply(const sm_reply *a, const sm_reply *b, uint64_t index, int which) {
    if (a->code != b->code || a->deleted != b->deleted || a->more != b->more ||
        a->succeeded != b->succeeded || a->lease != b->lease ||
        a->current_present != b->current_present || a->current_len != b->current_len ||
        a->n_results != b->n_results)
        ck_abort_msg("entry %llu: sm %d replies code %d deleted %llu succeeded %d results %zu, "
                     "the uncached one code %d deleted %llu succeeded %d results %zu",
                     (unsigned long long)index, which, b->code, (unsigned long long)b->deleted,
                     b->succeeded, b->n_results, a->code, (unsigned long long)a->deleted,
                     a->succeeded, a->n_results);
    if (a->current_len > 0)
        ck_assert_mem_eq(a->current, b->current, a->current_len);
    for (size_t i = 0; i < a->n_results; i++) {
        const Kv__TxnResult *x = a->results[i], *y = b->results[i];
        ck_assert_int_eq(x->code, y->code);
        ck_assert_int_eq(x->kv != NULL, y->kv != NULL);
        if (x->kv == NULL)
            continue;
        ck_assert_uint_eq(x->kv->create_rev, y->kv->create_rev);
        ck_assert_uint_eq(x->kv->mod_rev, y->kv->mod_rev);
        ck_assert_uint_eq(x->kv->version, y->kv->version);
        ck_assert_uint_eq(x->kv->lease, y->kv->lease);
    }
}

START_TEST(test_key_cache_changes_nothing) {
    uint64_t seed = tu_seed("test_key_cache_changes_nothing");
    static const uint32_t slots[NSM] = {0, 2, 4};
    char dir[1024], d[NSM][2048];
    tu_tmpdir(dir);
    sm *s[NSM];
    for (int i = 0; i < NSM; i++) {
        snprintf(d[i], sizeof d[i], "%s/%d", dir, i);
        s[i] = tu_open_cache(d[i], slots[i]);
    }
    nleases = 0;
    uint64_t next = 1;
    int bads = 0, failed = 0, partial = 0; /* partial: a failed call wrote its first entries */
    sm_entry e[BATCH_MAX + 1];
    uint8_t *bufs[BATCH_MAX + 1];
    sm_reply r[NSM][BATCH_MAX + 1];
    for (int step = 0; step < STEPS;) {
        size_t n = 1 + rnd(&seed, BATCH_MAX);
        for (size_t j = 0; j < n; j++) {
            e[j] = (sm_entry){.index = next + j, .term = 1, .type = SM_ENTRY_COMMAND};
            bufs[j] = gen(&seed, next + j, &e[j].len);
            e[j].payload = bufs[j];
        }
        /* now and then the call fails at its last entry: a PUT of a fresh
         * key whose record, written under the state machines, does not
         * decode */
        char badkey[32] = "";
        if (rnd(&seed, 12) == 0) {
            snprintf(badkey, sizeof badkey, "zbad%d", bads++);
            e[n] = (sm_entry){.index = next + n, .term = 1, .type = SM_ENTRY_COMMAND};
            bufs[n] = bad_put(badkey, &e[n].len);
            e[n].payload = bufs[n];
            n++;
            raw_record(s, badkey, "not a record");
        }
        int rv[NSM];
        for (int i = 0; i < NSM; i++)
            rv[i] = sm_apply(s[i], e, n, r[i]);
        for (int i = 1; i < NSM; i++) {
            ck_assert_int_eq(rv[i], rv[0]);
            ck_assert_uint_eq(sm_applied_index(s[i]), sm_applied_index(s[0]));
        }
        if (rv[0] != 0) {
            ck_assert(badkey[0] != '\0');
            ck_assert_int_eq(rv[0], KV_ECORRUPT);
            failed++;
            /* the record goes; the entries not applied are applied again */
            raw_record(s, badkey, NULL);
            size_t from = (size_t)(sm_applied_index(s[0]) + 1 - next);
            partial += from > 0;
            for (int i = 0; i < NSM; i++)
                ck_assert_int_eq(sm_apply(s[i], e + from, n - from, r[i] + from), 0);
            for (size_t j = from; j < n; j++)
                for (int i = 1; i < NSM; i++)
                    same_reply(&r[0][j], &r[i][j], e[j].index, i);
            for (int i = 0; i < NSM; i++)
                sm_replies_free(r[i] + from, n - from);
        } else {
            ck_assert(badkey[0] == '\0');
            for (size_t j = 0; j < n; j++)
                for (int i = 1; i < NSM; i++)
                    same_reply(&r[0][j], &r[i][j], e[j].index, i);
            for (int i = 0; i < NSM; i++)
                sm_replies_free(r[i], n);
        }
        uint64_t h0 = 0, h = 0;
        ck_assert_int_eq(sm_hash(s[0], &h0), 0);
        for (int i = 1; i < NSM; i++) {
            ck_assert_int_eq(sm_hash(s[i], &h), 0);
            if (h != h0)
                ck_abort_msg("after entries %llu..%llu: the state machine with %u cache slots "
                             "differs from the one without a cache",
                             (unsigned long long)next, (unsigned long long)(next + n - 1),
                             slots[i]);
            ck_assert_uint_eq(sm_leases_count(s[i]), sm_leases_count(s[0]));
        }
        for (size_t j = 0; j < n; j++)
            free(bufs[j]);
        next += n;
        step += (int)n;
    }
    ck_assert_int_gt(failed, 0);
    ck_assert_int_gt(partial, 0);
    for (int i = 0; i < NSM; i++)
        sm_close(s[i]);
    tu_rmrf(dir);
}
END_TEST

static Suite *suite(void) {
    Suite *su = suite_create("kcache");
    TCase *t = tcase_create("diff");
    tcase_set_timeout(t, 300);
    tcase_add_test(t, test_key_cache_changes_nothing);
    suite_add_tcase(su, t);
    return su;
}

int main(void) {
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
