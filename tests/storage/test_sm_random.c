/* Random commands against a model: the state machine gives the model's
 * replies and keeps the model's revisions whatever the batching (one entry
 * per sm_apply, or random batches in which later entries must see earlier
 * ones) and whatever its key cache (off for one, 4 slots for 6 keys for the
 * other, so keys keep taking each other's slot), and two nodes that applied
 * the same entries have the same hash. Seeded: KV_SEED=<seed> replays. */
#include "storage/sm.h"

#include "kv/errors.h"
#include "proto/kv.pb-c.h"
#include "test_sm_util.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEYS 6
#define CLIENTS 3
#define STEPS 1500
#define BATCH_MAX 32

typedef struct model_reply {
    int code;
    uint64_t index;
    bool present;
    char cur[8];
} model_reply;

/* a key's revisions in the model (all 0 while absent) */
typedef struct model_rev {
    uint64_t create, mod, version;
} model_rev;

typedef struct model {
    bool present[KEYS];
    char val[KEYS][8];
    model_rev rev[KEYS];
    uint64_t client[CLIENTS]; /* session id, 0 before REGISTER */
    uint64_t last_seq[CLIENTS];
    model_reply last[CLIENTS];
} model;

typedef struct step {
    uint8_t *buf;
    size_t len;
    int op, key, client; /* client -1: no session */
    uint64_t seq;
    char val[8], exp[8];
} step;

static model_reply model_op(model *m, const step *s, uint64_t index) {
    model_reply r = {.code = 0, .index = index};
    int k = s->key;
    bool same = m->present[k] && strcmp(m->val[k], s->exp) == 0;
    bool write = s->op == KV__COMMAND__OP__PUT || (s->op == KV__COMMAND__OP__CAS && same) ||
                 (s->op == KV__COMMAND__OP__CAS_ABSENT && !m->present[k]);
    if (s->op == KV__COMMAND__OP__DELETE) {
        r.code = m->present[k] ? 0 : KV_ENOTFOUND;
        m->present[k] = false;
        m->rev[k] = (model_rev){0};
    } else if (!write) {
        r.code = KV_ECOMPARE;
        r.present = m->present[k];
        if (r.present)
            memcpy(r.cur, m->val[k], sizeof r.cur);
    } else {
        if (!m->present[k])
            m->rev[k] = (model_rev){.create = index};
        m->rev[k].mod = index;
        m->rev[k].version++;
        m->present[k] = true;
        memcpy(m->val[k], s->val, sizeof s->val);
    }
    return r;
}

static model_reply model_step(model *m, const step *s, uint64_t index) {
    if (s->op == KV__COMMAND__OP__REGISTER) {
        m->client[s->client] = index;
        m->last_seq[s->client] = 0;
        return (model_reply){.code = 0, .index = index};
    }
    if (s->client < 0)
        return model_op(m, s, index);
    int c = s->client;
    if (m->client[c] == 0 || s->seq < m->last_seq[c])
        return (model_reply){.code = KV_ESTALE, .index = index};
    if (s->seq == m->last_seq[c])
        return m->last[c];
    m->last_seq[c] = s->seq;
    m->last[c] = model_op(m, s, index);
    return m->last[c];
}

/* A random command; sessions get the next seq, a duplicate or a stale one. */
static void gen(step *s, const model *m, uint64_t *seed) {
    memset(s, 0, sizeof *s);
    uint64_t x = tu_rand(seed);
    s->client = (int)(x % (CLIENTS + 1)) - 1;
    if (s->client >= 0 && (m->client[s->client] == 0 || x % 97 == 0)) {
        s->op = KV__COMMAND__OP__REGISTER;
    } else {
        s->op = KV__COMMAND__OP__PUT + (int)(tu_rand(seed) % 4);
        s->key = (int)(tu_rand(seed) % KEYS);
        snprintf(s->val, sizeof s->val, "v%d", (int)(tu_rand(seed) % 4));
        snprintf(s->exp, sizeof s->exp, "v%d", (int)(tu_rand(seed) % 4));
    }
    uint64_t id = s->client >= 0 ? m->client[s->client] : 0;
    if (s->client >= 0 && s->op != KV__COMMAND__OP__REGISTER) {
        uint64_t last = m->last_seq[s->client], r = tu_rand(seed) % 10;
        s->seq = r < 7 ? last + 1 : r < 9 || last < 2 ? (last ? last : 1) : last - 1;
    }
    char key[8];
    snprintf(key, sizeof key, "k%d", s->key);
    s->buf = tu_cmd(s->op, id, s->seq, key, strlen(key), s->val, strlen(s->val), s->exp,
                    strlen(s->exp), &s->len);
}

static void check_reply(const sm_reply *r, const model_reply *w, uint64_t i) {
    if (r->code != w->code || r->index != w->index || r->current_present != w->present)
        ck_abort_msg("step %llu: reply %d at %llu, model %d at %llu", (unsigned long long)i,
                     r->code, (unsigned long long)r->index, w->code, (unsigned long long)w->index);
    if (w->present) {
        ck_assert_uint_eq(r->current_len, strlen(w->cur));
        ck_assert_mem_eq(r->current, w->cur, r->current_len);
    }
}

/* Every key's revisions in s are the model's after step i (revs). */
static void check_revs(sm *s, const model_rev *revs, uint64_t i) {
    for (int k = 0; k < KEYS; k++) {
        char key[8];
        snprintf(key, sizeof key, "k%d", k);
        void *v = NULL;
        size_t n = 0;
        sm_key_info info = {0};
        int rv = sm_get_ex(s, key, strlen(key), &v, &n, &info);
        free(v);
        ck_assert_int_eq(rv, revs[k].version > 0 ? 0 : KV_ENOTFOUND);
        if (info.create_rev != revs[k].create || info.mod_rev != revs[k].mod ||
            info.version != revs[k].version)
            ck_abort_msg("step %llu: %s has create %llu mod %llu version %llu, the model "
                         "%llu %llu %llu",
                         (unsigned long long)i, key, (unsigned long long)info.create_rev,
                         (unsigned long long)info.mod_rev, (unsigned long long)info.version,
                         (unsigned long long)revs[k].create, (unsigned long long)revs[k].mod,
                         (unsigned long long)revs[k].version);
    }
}

START_TEST(test_random_vs_model) {
    uint64_t seed = tu_seed("test_random_vs_model");
    char dir[1024], a_dir[2048], b_dir[2048];
    tu_tmpdir(dir);
    snprintf(a_dir, sizeof a_dir, "%s/a", dir);
    snprintf(b_dir, sizeof b_dir, "%s/b", dir);
    sm *a = tu_open_cache(a_dir, 0), *b = tu_open_cache(b_dir, 4);
    model m = {0};
    step *steps = calloc(STEPS, sizeof *steps);
    model_reply *want = calloc(STEPS, sizeof *want);
    model_rev(*revs)[KEYS] = calloc(STEPS, sizeof *revs); /* after each step */
    for (uint64_t i = 0; i < STEPS; i++) {
        gen(&steps[i], &m, &seed);
        want[i] = model_step(&m, &steps[i], i + 1);
        memcpy(revs[i], m.rev, sizeof m.rev);
    }
    sm_entry e[BATCH_MAX];
    sm_reply r[BATCH_MAX];
    for (uint64_t i = 0; i < STEPS;) { /* a: one by one; b: random batches */
        uint64_t n = 1 + tu_rand(&seed) % BATCH_MAX;
        n = n > STEPS - i ? STEPS - i : n;
        for (uint64_t j = 0; j < n; j++)
            e[j] = (sm_entry){.index = i + j + 1,
                              .term = 1,
                              .type = SM_ENTRY_COMMAND,
                              .payload = steps[i + j].buf,
                              .len = steps[i + j].len};
        ck_assert_int_eq(sm_apply(b, e, n, r), 0);
        for (uint64_t j = 0; j < n; j++)
            check_reply(&r[j], &want[i + j], i + j + 1);
        sm_replies_free(r, n);
        check_revs(b, revs[i + n - 1], i + n);
        for (uint64_t j = 0; j < n; j++) {
            ck_assert_int_eq(sm_apply(a, &e[j], 1, r), 0);
            check_reply(&r[0], &want[i + j], i + j + 1);
            sm_replies_free(r, 1);
            check_revs(a, revs[i + j], i + j + 1);
        }
        i += n;
    }
    for (int k = 0; k < KEYS; k++) { /* the data is the model's */
        char key[8];
        snprintf(key, sizeof key, "k%d", k);
        char *v = tu_get(b, key);
        ck_assert_int_eq(v != NULL, m.present[k]);
        if (v != NULL)
            ck_assert_str_eq(v, m.val[k]);
        free(v);
    }
    uint64_t ha = 0, hb = 0;
    ck_assert_int_eq(sm_hash(a, &ha), 0);
    ck_assert_int_eq(sm_hash(b, &hb), 0);
    ck_assert_uint_eq(ha, hb);
    for (uint64_t i = 0; i < STEPS; i++)
        free(steps[i].buf);
    free(steps);
    free(want);
    free(revs);
    sm_close(a);
    sm_close(b);
    tu_rmrf(dir);
}
END_TEST

int main(void) {
    Suite *s = suite_create("sm_random");
    TCase *t = tcase_create("model");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, test_random_vs_model);
    suite_add_tcase(s, t);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
