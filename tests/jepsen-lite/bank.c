/*
 * kv-jepsen: the bank workload (--workload bank; see jepsen.h).
 *
 * BANK_ACCOUNTS accounts "jb<i>" start with BANK_TOTAL / BANK_ACCOUNTS
 * each, written by one transaction before the clients start. Clients then
 * either transfer or read, every operation one transaction:
 *
 *   transfer  read both balances with their mod revisions (a txn of gets),
 *             then a txn: if both mod revisions are unchanged, put both new
 *             balances (amount 1..the source's balance). A compare that
 *             fails means another transfer came between: nothing changed.
 *   read      one txn of gets of every account: every account present,
 *             none negative, and the sum equal to BANK_TOTAL.
 *
 * A read that breaks that is a violation (logged, and the run fails),
 * whatever the nemesis did: a transaction is one log entry, so no read can
 * see half of a transfer, and a retried transfer is applied once (a second
 * application would change the sum). After healing, a final read must sum
 * to the total and every node's state machine must agree (kv_check).
 *
 * --control bank-skew: every transfer credits one more than it debits; the
 * run must fail with BANK VIOLATION (test jepsen_lite_control_bank).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "jepsen.h"
#include "kv/client.h"

atomic_uint_fast64_t bank_bad;

static void account_name(int i, char *out, size_t n) {
    snprintf(out, n, "jb%d", i);
}

static bool definitely_failed(int rc) {
    return rc == KV_EUNAVAILABLE || rc == KV_EBUSY;
}

/* A balance written by this test: a decimal number. */
static bool parse_balance(const kv_txn_result *r, int64_t *out) {
    char buf[32];
    if (r->code != 0 || r->value_len == 0 || r->value_len >= sizeof buf)
        return false;
    memcpy(buf, r->value, r->value_len);
    buf[r->value_len] = 0;
    char *end;
    long long x = strtoll(buf, &end, 10);
    if (*end != 0)
        return false;
    *out = x;
    return true;
}

/* Reads every account in one txn: 0 with bal[] and mod[], or the error. */
static int read_all(kv_client *c, int64_t *bal, uint64_t *mod, bool *valid) {
    kv_txn *t = kv_txn_new();
    if (t == NULL)
        abort();
    for (int i = 0; i < BANK_ACCOUNTS; i++) {
        char k[16];
        account_name(i, k, sizeof k);
        if (kv_txn_get(t, true, k, strlen(k)) != 0)
            abort();
    }
    bool ok = false;
    kv_txn_result *res = NULL;
    size_t n = 0;
    int rc = kv_txn_commit(c, t, &ok, &res, &n);
    kv_txn_free(t);
    if (rc != 0)
        return rc;
    *valid = ok && n == BANK_ACCOUNTS;
    for (size_t i = 0; *valid && i < n; i++) {
        *valid = parse_balance(&res[i], &bal[i]) && bal[i] >= 0;
        mod[i] = res[i].info.mod_rev;
    }
    kv_txn_results_free(res, n);
    return 0;
}

/* Checks one read of all accounts; logs and counts a violation. */
static bool read_ok(const char *who, const int64_t *bal, bool valid) {
    int64_t sum = 0;
    for (int i = 0; valid && i < BANK_ACCOUNTS; i++)
        sum += bal[i];
    if (valid && sum == BANK_TOTAL)
        return true;
    char line[256];
    size_t len = 0;
    for (int i = 0; valid && i < BANK_ACCOUNTS; i++)
        len += (size_t)snprintf(line + len, sizeof line - len, " %" PRId64, bal[i]);
    if (atomic_fetch_add(&bank_bad, 1) < 20)
        logf_("BANK VIOLATION (%s): %s%s, sum %" PRId64 " want %d", who,
              valid ? "balances" : "an account absent, negative or not ours", valid ? line : "",
              sum, BANK_TOTAL);
    return false;
}

static void do_read(client_ctx *cx, kv_client *c) {
    int64_t bal[BANK_ACCOUNTS];
    uint64_t mod[BANK_ACCOUNTS];
    bool valid = false;
    int rc = read_all(c, bal, mod, &valid);
    if (rc != 0) {
        cx->c[K_READ].failed += definitely_failed(rc);
        cx->c[K_READ].unknown += !definitely_failed(rc);
        return;
    }
    char who[32];
    snprintf(who, sizeof who, "client %d read", cx->id);
    if (read_ok(who, bal, valid))
        cx->c[K_READ].ok++;
    else
        cx->fatal = 1;
}

/* The txn of a transfer of amt from a to b, both as read at mod[]. */
static kv_txn *transfer_txn(int a, int b, const int64_t *bal, const uint64_t *mod, int64_t amt) {
    kv_txn *t = kv_txn_new();
    if (t == NULL)
        abort();
    int acc[2] = {a, b};
    /* --control bank-skew: money from nowhere, which the reads must catch */
    int64_t skew = opt.control == CONTROL_BANK_SKEW ? 1 : 0;
    int64_t to[2] = {bal[a] - amt, bal[b] + amt + skew};
    for (int j = 0; j < 2; j++) {
        char k[16], v[32];
        account_name(acc[j], k, sizeof k);
        int vlen = snprintf(v, sizeof v, "%" PRId64, to[j]);
        if (kv_txn_compare(t, KV_CMP_MOD, KV_CMP_EQUAL, k, strlen(k), NULL, 0, mod[acc[j]]) != 0 ||
            kv_txn_put(t, true, k, strlen(k), v, (size_t)vlen, 0) != 0)
            abort();
    }
    return t;
}

static void do_transfer(client_ctx *cx, kv_client *c) {
    int a = (int)rng_range(&cx->r, 0, BANK_ACCOUNTS - 1);
    int b = (int)rng_range(&cx->r, 0, BANK_ACCOUNTS - 2);
    b += b >= a; /* another account */
    int64_t bal[BANK_ACCOUNTS];
    uint64_t mod[BANK_ACCOUNTS];
    bool valid = false;
    int rc = read_all(c, bal, mod, &valid);
    if (rc != 0 || !valid || bal[a] == 0) {
        if (rc == 0 && !read_ok("transfer's read", bal, valid))
            cx->fatal = 1;
        return; /* nothing to move, or no balances to move it by */
    }
    int64_t amt = (int64_t)rng_range(&cx->r, 1, (uint64_t)bal[a]);
    kv_txn *t = transfer_txn(a, b, bal, mod, amt);
    bool ok = false;
    rc = kv_txn_commit(c, t, &ok, NULL, NULL);
    kv_txn_free(t);
    if (rc == 0 && ok)
        cx->c[K_TRANSFER].ok++;
    else if (rc == 0)
        cx->c[K_TRANSFER].cmp++; /* another transfer came between */
    else if (definitely_failed(rc))
        cx->c[K_TRANSFER].failed++;
    else
        cx->c[K_TRANSFER].unknown++;
    if (rc != 0 && -rc < 32)
        cx->errs[-rc]++;
}

void bank_op(client_ctx *cx, kv_client *c) {
    if (rng_range(&cx->r, 0, 99) < 40)
        do_read(cx, c);
    else
        do_transfer(cx, c);
}

/* The accounts at their opening balances, unless they exist already. */
int bank_init(void) {
    struct kv_client_options o;
    kv_client_options_init(&o);
    o.timeout_ms = 5000;
    kv_client *c = NULL;
    int rc = kv_client_open(&c, endpoints, &o);
    kv_txn *t = kv_txn_new();
    if (t == NULL)
        abort();
    for (int i = 0; rc == 0 && i < BANK_ACCOUNTS; i++) {
        char k[16], v[32];
        account_name(i, k, sizeof k);
        int vlen = snprintf(v, sizeof v, "%d", BANK_TOTAL / BANK_ACCOUNTS);
        if (kv_txn_compare(t, KV_CMP_VERSION, KV_CMP_EQUAL, k, strlen(k), NULL, 0, 0) != 0 ||
            kv_txn_put(t, true, k, strlen(k), v, (size_t)vlen, 0) != 0)
            abort();
    }
    bool ok = false;
    if (rc == 0)
        rc = kv_txn_commit(c, t, &ok, NULL, NULL);
    kv_txn_free(t);
    if (c != NULL)
        kv_client_close(c);
    if (rc != 0 || !ok)
        logf_("bank: opening the accounts failed: %s", rc ? kv_errword(rc) : "they exist");
    return rc == 0 && ok ? 0 : -1;
}

int bank_final_check(bool *diverged) {
    *diverged = false;
    struct kv_client_options o;
    kv_client_options_init(&o);
    o.timeout_ms = 3000;
    kv_client *c = NULL;
    int rc = kv_client_open(&c, endpoints, &o);
    int64_t bal[BANK_ACCOUNTS];
    uint64_t mod[BANK_ACCOUNTS];
    bool valid = false;
    for (int tries = 0; rc == 0 && tries < 10; tries++) {
        rc = read_all(c, bal, mod, &valid);
        if (rc == 0)
            break;
        sleep_ms(1000);
    }
    if (rc == 0) {
        if (read_ok("final read", bal, valid))
            logf_("bank: final read sums to %d", BANK_TOTAL);
        int crc = final_compare_nodes(c);
        *diverged = crc == KV_ECORRUPT;
        if (crc != 0)
            logf_("bank final check: the nodes' state machines %s",
                  crc == KV_ECORRUPT ? "DIFFER" : "could not be compared");
        rc = crc == 0 || crc == KV_ECORRUPT ? 0 : crc;
    }
    if (c != NULL)
        kv_client_close(c);
    if (rc != 0)
        logf_("bank: final read failed: %s", kv_errword(rc));
    return rc == 0 ? 0 : -1;
}
