/* Client sessions across restarts (src/storage/sm_session.c): the table and
 * its eviction order live in memory and are rebuilt from the session
 * records at open, so a state machine that restarted (or was migrated from
 * format 1) evicts and answers duplicates exactly like one that never did.
 * Seeded: KV_SEED=<seed> replays. */
#include "storage/sm_internal.h"

#include "common/checksum.h"
#include "kv/errors.h"
#include "kv/limits.h"
#include "proto/kv.pb-c.h"
#include "storage/fs.h"
#include "storage/snapshot.h"
#include "test_sm_util.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OP_PUT KV__COMMAND__OP__PUT
#define OP_CAS KV__COMMAND__OP__CAS
#define OP_REG KV__COMMAND__OP__REGISTER

#define SESSIONS 16 /* sessions_max of these tests */
#define CLIENTS_MAX 400
#define STEPS 3000
#define BATCH_MAX 24

static char dir[1024], a_dir[2048], b_dir[2048];

static void setup(void) {
    tu_tmpdir(dir);
    snprintf(a_dir, sizeof a_dir, "%s/a", dir);
    snprintf(b_dir, sizeof b_dir, "%s/b", dir);
}

static void teardown(void) {
    tu_rmrf(dir);
}

/* What a user sees of sessions: which ones are alive, and the reply a
 * retry gets. Eviction: the smallest last index goes first. */
typedef struct smodel {
    uint64_t id[CLIENTS_MAX]; /* session id (its REGISTER's index) */
    bool alive[CLIENTS_MAX];
    uint64_t last_index[CLIENTS_MAX], last_seq[CLIENTS_MAX], reply_index[CLIENTS_MAX];
    int reply_code[CLIENTS_MAX];
    int clients, alive_count;
} smodel;

static void model_register(smodel *m, uint64_t index) {
    if (m->alive_count == SESSIONS) {
        int lru = -1;
        for (int c = 0; c < m->clients; c++)
            if (m->alive[c] && (lru < 0 || m->last_index[c] < m->last_index[lru]))
                lru = c;
        m->alive[lru] = false;
        m->alive_count--;
    }
    int c = m->clients++;
    m->id[c] = index;
    m->alive[c] = true;
    m->alive_count++;
    m->last_index[c] = index;
    m->reply_index[c] = index;
}

typedef struct sstep {
    uint8_t *buf;
    size_t len;
    int client; /* -1: REGISTER */
    uint64_t seq;
    bool want_expired; /* the model's reply */
    int want_code;
    uint64_t want_index;
} sstep;

/* The next command: a new client, or a known one (alive or evicted) with its
 * next seq or a retry of its last; CAS commands that fail keep a current
 * value in the stored reply, which only RocksDB holds. */
static void gen_step(sstep *s, smodel *m, uint64_t index, uint64_t *seed) {
    memset(s, 0, sizeof *s);
    uint64_t x = tu_rand(seed);
    if (m->clients == 0 || (m->clients < CLIENTS_MAX && x % 100 < 12)) {
        s->client = -1;
        s->buf = tu_cmd(OP_REG, 0, 0, NULL, 0, NULL, 0, NULL, 0, &s->len);
        model_register(m, index);
        s->want_index = index;
        return;
    }
    int c = (int)(tu_rand(seed) % (uint64_t)m->clients);
    if (tu_rand(seed) % 3 == 0) /* mostly the recent clients: some live long */
        c = m->clients - 1 - (int)(tu_rand(seed) % (m->clients < 8 ? (uint64_t)m->clients : 8));
    bool retry = m->last_seq[c] > 0 && tu_rand(seed) % 4 == 0;
    s->client = c;
    s->seq = retry ? m->last_seq[c] : m->last_seq[c] + 1;
    char key[16], val[16];
    snprintf(key, sizeof key, "k%d", (int)(tu_rand(seed) % 8));
    snprintf(val, sizeof val, "v%llu", (unsigned long long)index);
    bool cas = tu_rand(seed) % 3 == 0;
    s->buf = tu_cmd(cas ? OP_CAS : OP_PUT, m->id[c], s->seq, key, strlen(key), val, strlen(val),
                    "nope", cas ? 4 : 0, &s->len);
    s->want_expired = !m->alive[c];
    if (!m->alive[c])
        return; /* expired: nothing changes */
    m->last_index[c] = index;
    if (!retry) {
        m->last_seq[c] = s->seq;
        m->reply_index[c] = index;
        m->reply_code[c] = cas ? KV_ECOMPARE : 0; /* "nope" is never a value */
    }
    s->want_code = m->reply_code[c];
    s->want_index = m->reply_index[c];
}

static void same_reply(const sm_reply *x, const sm_reply *y, uint64_t index) {
    ck_assert_msg(x->code == y->code && x->index == y->index && x->client_id == y->client_id &&
                      x->current_present == y->current_present && x->current_len == y->current_len,
                  "entry %llu: replies differ (%d at %llu, %d at %llu)", (unsigned long long)index,
                  x->code, (unsigned long long)x->index, y->code, (unsigned long long)y->index);
    if (x->current_len > 0)
        ck_assert_mem_eq(x->current, y->current, x->current_len);
    ck_assert_str_eq(x->detail ? x->detail : "", y->detail ? y->detail : "");
}

/* The reply the model expects for step s at index. */
static void model_check(const sstep *s, const sm_reply *r, uint64_t index) {
    if (s->client < 0) {
        ck_assert_int_eq(r->code, 0);
        ck_assert_uint_eq(r->client_id, index);
    } else if (s->want_expired) {
        ck_assert_int_eq(r->code, KV_ESTALE);
        ck_assert_str_eq(r->detail, "session expired");
    } else {
        ck_assert_int_eq(r->code, s->want_code);
        ck_assert_uint_eq(r->index, s->want_index);
    }
}

/* Applies steps[from..to) to a one entry at a time and to b in random
 * batches; both must give the same replies, and the model's. */
static void feed(sm *a, sm *b, sstep *steps, uint64_t from, uint64_t to, uint64_t *seed) {
    sm_entry e[BATCH_MAX];
    sm_reply ra[BATCH_MAX], rb[BATCH_MAX];
    for (uint64_t i = from; i < to;) {
        uint64_t n = 1 + tu_rand(seed) % BATCH_MAX;
        n = n > to - i ? to - i : n;
        for (uint64_t j = 0; j < n; j++) {
            e[j] = (sm_entry){.index = i + j + 1,
                              .term = 1,
                              .type = SM_ENTRY_COMMAND,
                              .payload = steps[i + j].buf,
                              .len = steps[i + j].len};
            ck_assert_int_eq(sm_apply(a, &e[j], 1, &ra[j]), 0);
        }
        ck_assert_int_eq(sm_apply(b, e, n, rb), 0);
        for (uint64_t j = 0; j < n; j++) {
            same_reply(&ra[j], &rb[j], i + j + 1);
            model_check(&steps[i + j], &ra[j], i + j + 1);
        }
        sm_replies_free(ra, n);
        sm_replies_free(rb, n);
        i += n;
    }
}

static void same_state(sm *a, sm *b) {
    uint64_t ha = 0, hb = 0;
    ck_assert_int_eq(sm_hash(a, &ha), 0);
    ck_assert_int_eq(sm_hash(b, &hb), 0);
    ck_assert_uint_eq(ha, hb);
    ck_assert_uint_eq(sm__sessions_digest(a), sm__sessions_digest(b));
    ck_assert_uint_eq(a->sessions.count, b->sessions.count);
}

/* Two state machines fed the same entries, b restarted three times on the
 * way (mid-batch positions, not only at the end): same replies to every
 * entry, same data, same sessions in the same eviction order; after both
 * restart the retries of the surviving sessions get their stored replies
 * and the evicted ones are told so. a keeps every session record in its
 * session log (never folded: fewer records than the default), b folds its
 * log every few records, every write, or every 50 records, changing at each
 * restart. */
START_TEST(test_sessions_restart_same_order) {
    uint64_t seed = tu_seed("test_sessions_restart_same_order");
    smodel m = {0};
    sstep *steps = calloc(STEPS, sizeof *steps);
    for (uint64_t i = 0; i < STEPS; i++)
        gen_step(&steps[i], &m, i + 1, &seed);
    ck_assert_int_gt(m.clients, 2 * SESSIONS); /* well past the limit */
    ck_assert_int_lt(STEPS, SM_SESSION_LOG_RECORDS);
    const uint32_t fold[] = {7, 1, 50};
    sm *a = tu_open(a_dir, SESSIONS), *b = tu_open_log(b_dir, SESSIONS, fold[0]);
    uint64_t cut[] = {0, STEPS / 5 + 7, STEPS / 2 + 3, 4 * STEPS / 5 + 1, STEPS};
    for (int k = 0; k + 1 < (int)(sizeof cut / sizeof cut[0]); k++) {
        feed(a, b, steps, cut[k], cut[k + 1], &seed);
        same_state(a, b);
        uint64_t digest = sm__sessions_digest(b);
        sm_close(b);
        b = tu_open_log(b_dir, SESSIONS, fold[(k + 1) % 3]); /* rebuilt from the records */
        ck_assert_uint_eq(sm__sessions_digest(b), digest);
        same_state(a, b);
    }
    sm_close(a);
    a = tu_open(a_dir, SESSIONS);
    same_state(a, b);
    /* retries: alive sessions get their stored reply, evicted ones expire */
    uint64_t index = STEPS + 1;
    int alive = 0, evicted = 0;
    for (int c = 0; c < m.clients; c++, index++) {
        uint64_t seq = m.last_seq[c] > 0 ? m.last_seq[c] : 1;
        sm_reply r[2];
        char key[16];
        snprintf(key, sizeof key, "k%d", c % 8);
        ck_assert_int_eq(tu_apply(a, index, OP_CAS, m.id[c], seq, key, "x", "nope", &r[0]),
                         tu_apply(b, index, OP_CAS, m.id[c], seq, key, "x", "nope", &r[1]));
        same_reply(&r[0], &r[1], index);
        if (!m.alive[c]) {
            evicted++;
            ck_assert_str_eq(r[0].detail, "session expired");
        } else if (m.last_seq[c] > 0) {
            alive++;
            ck_assert_str_eq(r[0].detail, "duplicate");
            ck_assert_int_eq(r[0].code, m.reply_code[c]);
            ck_assert_uint_eq(r[0].index, m.reply_index[c]);
            ck_assert(r[0].code != KV_ECOMPARE || r[0].current_present);
        }
        sm_replies_free(r, 2);
    }
    printf("sessions: %d clients, %d evicted, %d retried alive\n", m.clients, evicted, alive);
    ck_assert_int_gt(evicted, 0);
    same_state(a, b);
    sm_close(a);
    sm_close(b);
    for (uint64_t i = 0; i < STEPS; i++)
        free(steps[i].buf);
    free(steps);
}
END_TEST

/* At the real limit: KV_SESSIONS_MAX + 100 clients, b restarted midway;
 * the first 100 are evicted, in order, on both. */
START_TEST(test_sessions_at_limit) {
    sm *a = tu_open(a_dir, 0), *b = tu_open(b_dir, 0);
    const uint64_t n = KV_SESSIONS_MAX + 100;
    size_t len = 0;
    uint8_t *reg = tu_cmd(OP_REG, 0, 0, NULL, 0, NULL, 0, NULL, 0, &len);
    enum { BATCH = 256 };
    sm_entry e[BATCH];
    sm_reply r[BATCH];
    for (uint64_t i = 1; i <= n;) {
        uint64_t k = n + 1 - i < BATCH ? n + 1 - i : BATCH;
        for (uint64_t j = 0; j < k; j++)
            e[j] = (sm_entry){
                .index = i + j, .term = 1, .type = SM_ENTRY_COMMAND, .payload = reg, .len = len};
        ck_assert_int_eq(sm_apply(a, e, k, r), 0);
        ck_assert_int_eq(sm_apply(b, e, k, r), 0);
        i += k;
        if (i > n / 2 && i <= n / 2 + BATCH) {
            sm_close(b);
            b = tu_open(b_dir, 0);
        }
    }
    free(reg);
    same_state(a, b);
    ck_assert_uint_eq(a->sessions.count, KV_SESSIONS_MAX);
    sm_reply x;
    for (uint64_t id = 99; id <= 102; id++) {
        int want = id <= 100 ? KV_ESTALE : 0;
        ck_assert_int_eq(tu_apply(a, n + id, OP_PUT, id, 1, "k", "v", NULL, &x), want);
        ck_assert_int_eq(tu_apply(b, n + id, OP_PUT, id, 1, "k", "v", NULL, &x), want);
    }
    same_state(a, b);
    sm_close(a);
    sm_close(b);
}
END_TEST

/* ---- format 1 -> 2 ------------------------------------------------------ */

/* The db's history family, while raw_open holds it. */
static rocksdb_column_family_handle_t *raw_hcf;

static rocksdb_t *raw_open(const char *path) {
    return tu_raw_open(path, &raw_hcf);
}

static void raw_close(rocksdb_t *db) {
    tu_raw_close(db, raw_hcf);
}

static void raw_put_u64(rocksdb_writebatch_t *wb, const char *k, uint64_t v) {
    uint8_t b[8];
    kv_put_u64(b, v);
    rocksdb_writebatch_put(wb, k, strlen(k), (char *)b, 8);
}

/* Rewrites a format 2 db as format 1 wrote it: a 't' key per session record
 * (be64(last index), be64(id)), the count (count_delta off), format 1. */
/* Turns the records of db into format 2's plain values (into wb) and drops
 * the history and lease index keys, which format 2 had not. */
static void make_v2_keys(rocksdb_t *db, rocksdb_readoptions_t *ro, rocksdb_writebatch_t *wb) {
    rocksdb_iterator_t *it = rocksdb_create_iterator(db, ro);
    char first = SM_PREFIX_DATA;
    for (rocksdb_iter_seek(it, &first, 1); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen = 0, vlen = 0;
        const char *k = rocksdb_iter_key(it, &klen);
        if (k[0] != SM_PREFIX_DATA && k[0] != SM_PREFIX_HISTORY && k[0] != SM_PREFIX_LEASE_KEYS)
            break;
        const char *v = rocksdb_iter_value(it, &vlen);
        if (k[0] != SM_PREFIX_DATA) {
            rocksdb_writebatch_delete(wb, k, klen);
            continue;
        }
        sm__rec r;
        ck_assert_int_eq(sm__rec_decode(v, vlen, &r), 0);
        rocksdb_writebatch_put(wb, k, klen, (const char *)r.value, r.len);
    }
    rocksdb_iter_destroy(it);
    rocksdb_writebatch_delete_range_cf(wb, raw_hcf, "\x00", 1, "\xff", 1);
}

/* Rewrites the db at path as format 2. */
static void make_v2(const char *path) {
    rocksdb_t *db = raw_open(path);
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    make_v2_keys(db, ro, wb);
    raw_put_u64(wb, SM_META_FORMAT, SM_FORMAT_V2);
    tu_raw_write(db, wb);
    rocksdb_readoptions_destroy(ro);
    raw_close(db);
}

static void make_v1(const char *path, int count_delta) {
    rocksdb_t *db = raw_open(path);
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_iterator_t *it = rocksdb_create_iterator(db, ro);
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    make_v2_keys(db, ro, wb);
    uint64_t count = 0;
    char first = SM_PREFIX_SESSION;
    for (rocksdb_iter_seek(it, &first, 1); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen = 0, vlen = 0;
        const char *k = rocksdb_iter_key(it, &klen);
        if (k[0] != SM_PREFIX_SESSION)
            break;
        const char *v = rocksdb_iter_value(it, &vlen);
        Kv__Session *ss = kv__session__unpack(NULL, vlen, (const uint8_t *)v);
        ck_assert_ptr_nonnull(ss);
        uint8_t t[17];
        t[0] = SM_PREFIX_LRU_V1;
        sm__put_be64(t + 1, ss->last_index);
        sm__put_be64(t + 9, ss->client_id);
        rocksdb_writebatch_put(wb, (char *)t, sizeof t, "", 0);
        kv__session__free_unpacked(ss, NULL);
        count++;
    }
    rocksdb_iter_destroy(it);
    raw_put_u64(wb, SM_META_SESSIONS_V1, count + (uint64_t)count_delta);
    raw_put_u64(wb, SM_META_FORMAT, SM_FORMAT_V1);
    tu_raw_write(db, wb);
    rocksdb_readoptions_destroy(ro);
    raw_close(db);
}

/* Keys of path starting with c. */
static int raw_count(const char *path, char c) {
    rocksdb_t *db = raw_open(path);
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_iterator_t *it = rocksdb_create_iterator(db, ro);
    int n = 0;
    for (rocksdb_iter_seek(it, &c, 1); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen = 0;
        if (rocksdb_iter_key(it, &klen)[0] != c)
            break;
        n++;
    }
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    raw_close(db);
    return n;
}

/* 4 sessions of 3 allowed were registered (1 evicted), used in the order
 * 4, 3, 2 (2 last); index 9 is next. */
static void sessions_used(sm *s) {
    for (uint64_t i = 1; i <= 4; i++)
        ck_assert_int_eq(tu_apply(s, i, OP_REG, 0, 0, NULL, NULL, NULL, NULL), 0);
    ck_assert_int_eq(tu_apply(s, 5, OP_PUT, 4, 1, "a", "1", NULL, NULL), 0);
    ck_assert_int_eq(tu_apply(s, 6, OP_CAS, 3, 1, "a", "2", "zz", NULL), KV_ECOMPARE);
    ck_assert_int_eq(tu_apply(s, 7, OP_PUT, 2, 1, "b", "1", NULL, NULL), 0);
    ck_assert_int_eq(tu_apply(s, 8, OP_PUT, 1, 1, "c", "1", NULL, NULL), KV_ESTALE);
}

/* A format 1 db (users have data) opens, is migrated in place, and keeps
 * its sessions, their replies and their eviction order. */
START_TEST(test_sessions_migrate_v1) {
    /* every write folds the session log: only 's' records, as format 2 had */
    sm *a = tu_open_log(a_dir, 3, 1), *b = tu_open_log(b_dir, 3, 1);
    sessions_used(a);
    sessions_used(b);
    sm_close(a); /* a goes through format 2, b through format 1 */
    make_v2(a_dir);
    a = tu_open(a_dir, 3);
    sm_close(b);
    make_v1(b_dir, 0);
    ck_assert_int_eq(raw_count(b_dir, SM_PREFIX_LRU_V1), 3);
    b = tu_open(b_dir, 3); /* migrates */
    same_state(a, b);
    /* a value from before revisions: revisions 0, version 1, value kept */
    void *v = NULL;
    size_t vlen = 0;
    sm_key_info info;
    ck_assert_int_eq(sm_get_ex(b, "a", 1, &v, &vlen, &info), 0);
    ck_assert(vlen == 1 && memcmp(v, "1", 1) == 0);
    ck_assert(info.create_rev == 0 && info.mod_rev == 0 && info.version == 1 && info.lease == 0);
    free(v);
    sm_close(b);
    ck_assert_int_eq(raw_count(b_dir, SM_PREFIX_LRU_V1), 0); /* and it lasts */
    b = tu_open(b_dir, 3);
    ck_assert_uint_eq(b->sessions.count, 3);
    sm *both[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        sm *s = both[k];
        sm_reply r;
        /* the failed CAS retried: its stored reply with the value then */
        ck_assert_int_eq(tu_apply(s, 9, OP_CAS, 3, 1, "a", "2", "zz", &r), KV_ECOMPARE);
        ck_assert_uint_eq(r.index, 6);
        ck_assert(r.current_present && r.current_len == 1 && r.current[0] == '1');
        sm_replies_free(&r, 1);
        /* a new session evicts the least recently used: 4 (used at 5) */
        ck_assert_int_eq(tu_apply(s, 10, OP_REG, 0, 0, NULL, NULL, NULL, NULL), 0);
        ck_assert_int_eq(tu_apply(s, 11, OP_PUT, 4, 2, "d", "1", NULL, &r), KV_ESTALE);
        ck_assert_str_eq(r.detail, "session expired");
        ck_assert_int_eq(tu_apply(s, 12, OP_PUT, 3, 2, "d", "1", NULL, NULL), 0);
    }
    same_state(a, b);
    sm_close(a);
    sm_close(b);
}
END_TEST

/* The three places a duplicate's stored reply is read from: the call's own
 * session log (the command it repeats is in the same call), a log in the db,
 * and the 's' record after the logs were folded (also after a reopen).
 * Each retry of a failed CAS gets the value the key had then. */
START_TEST(test_sessions_log_reads) {
    sm *s = tu_open_log(b_dir, 3, 4);
    ck_assert_int_eq(tu_apply(s, 1, OP_REG, 0, 0, NULL, NULL, NULL, NULL), 0);
    ck_assert_int_eq(tu_apply(s, 2, OP_PUT, 0, 0, "a", "1", NULL, NULL), 0);
    uint8_t *cmd[2];
    size_t len[2];
    for (int i = 0; i < 2; i++) /* the CAS, then its retry, in one call */
        cmd[i] = tu_cmd(OP_CAS, 1, 1, "a", 1, "2", 1, "zz", 2, &len[i]);
    sm_entry e[2];
    for (int i = 0; i < 2; i++)
        e[i] = (sm_entry){.index = 3 + (uint64_t)i,
                          .term = 1,
                          .type = SM_ENTRY_COMMAND,
                          .payload = cmd[i],
                          .len = len[i]};
    sm_reply r[2];
    ck_assert_int_eq(sm_apply(s, e, 2, r), 0);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(r[i].code, KV_ECOMPARE);
        ck_assert_uint_eq(r[i].index, 3);
        ck_assert(r[i].current_present && r[i].current_len == 1 && r[i].current[0] == '1');
        free(cmd[i]);
    }
    ck_assert_str_eq(r[1].detail, "duplicate");
    sm_replies_free(r, 2);
    ck_assert_uint_eq(s->slog_records, 3); /* REGISTER, CAS, retry: not folded yet */
    uint64_t digest = 0;
    for (uint64_t index = 5; index <= 7; index++) {
        if (index == 6) { /* 5 folded the log: reopen, and read the 's' record */
            ck_assert_uint_eq(s->slog_records, 0);
            digest = sm__sessions_digest(s);
            sm_close(s);
            s = tu_open_log(b_dir, 3, 4);
            ck_assert_uint_eq(sm__sessions_digest(s), digest);
        }
        ck_assert_int_eq(tu_apply(s, index, OP_CAS, 1, 1, "a", "2", "zz", &r[0]), KV_ECOMPARE);
        ck_assert_uint_eq(r[0].index, 3);
        ck_assert(r[0].current_present && r[0].current_len == 1 && r[0].current[0] == '1');
        ck_assert_str_eq(r[0].detail, "duplicate");
        sm_replies_free(r, 1);
    }
    sm_close(s);
}
END_TEST

/* A session log that does not decode (a record cut short) is refused at
 * open as CORRUPT, naming the log; the db is left as it was. */
START_TEST(test_sessions_log_corrupt) {
    sm *b = tu_open(b_dir, 3);
    sessions_used(b);
    sm_close(b);
    rocksdb_t *db = raw_open(b_dir);
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_iterator_t *it = rocksdb_create_iterator(db, ro);
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    char first = SM_PREFIX_SESSION_LOG;
    int logs = 0;
    for (rocksdb_iter_seek(it, &first, 1); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen = 0;
        const char *k = rocksdb_iter_key(it, &klen);
        if (k[0] != SM_PREFIX_SESSION_LOG)
            break;
        rocksdb_writebatch_put(wb, k, klen, "\x0a\x09short", 7); /* 9 bytes promised */
        logs++;
    }
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    ck_assert_int_gt(logs, 0);
    tu_raw_write(db, wb);
    raw_close(db);
    sm_options o;
    sm_options_default(&o);
    o.sessions_max = 3;
    ck_assert_int_eq(sm_open(b_dir, &o, &b), KV_ECORRUPT);
}
END_TEST

/* A format 1 db whose count disagrees with its records is refused as
 * CORRUPT, and a format this build does not know as VERSION. */
START_TEST(test_sessions_v1_refused) {
    sm *b = tu_open_log(b_dir, 3, 1);
    sessions_used(b);
    sm_close(b);
    make_v1(b_dir, 1);
    sm_options o;
    sm_options_default(&o);
    o.sessions_max = 3;
    ck_assert_int_eq(sm_open(b_dir, &o, &b), KV_ECORRUPT);
    rocksdb_t *db = raw_open(b_dir);
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    raw_put_u64(wb, SM_META_FORMAT, SM_FORMAT + 1);
    tu_raw_write(db, wb);
    raw_close(db);
    ck_assert_int_eq(sm_open(b_dir, &o, &b), KV_EVERSION);
}
END_TEST

/* A state machine restored from a snapshot (snap_restore closes and reopens
 * it) holds the source's sessions in the same order: the same next
 * eviction, the same stored replies. */
START_TEST(test_sessions_snapshot_restore) {
    sm *a = tu_open(a_dir, 3), *b = tu_open(b_dir, 3);
    sessions_used(a);
    ck_assert_int_eq(tu_apply(b, 1, OP_REG, 0, 0, NULL, NULL, NULL, NULL), 0); /* other state */
    char snaps[2048];
    snprintf(snaps, sizeof snaps, "%s/snap", dir);
    snap_meta m;
    ck_assert_int_eq(snap_create(a, kv_fs_posix(), snaps, &m), 0);
    ck_assert_int_eq(snap_restore(&b, b_dir, m.path), 0);
    ck_assert_uint_eq(sm_applied_index(b), 8);
    same_state(a, b);
    sm *both[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        sm_reply r;
        ck_assert_int_eq(tu_apply(both[k], 9, OP_CAS, 3, 1, "a", "2", "zz", &r), KV_ECOMPARE);
        ck_assert_uint_eq(r.index, 6);
        sm_replies_free(&r, 1);
        ck_assert_int_eq(tu_apply(both[k], 10, OP_REG, 0, 0, NULL, NULL, NULL, NULL), 0);
        ck_assert_int_eq(tu_apply(both[k], 11, OP_PUT, 4, 2, "d", "1", NULL, NULL), KV_ESTALE);
    }
    same_state(a, b);
    sm_close(a);
    sm_close(b);
}
END_TEST

/* Reopened with a smaller sessions_max than it holds: every session is
 * kept until the next REGISTER, which evicts the oldest down to the limit. */
START_TEST(test_sessions_fewer_after_reopen) {
    sm *a = tu_open(a_dir, 8);
    for (uint64_t i = 1; i <= 5; i++)
        ck_assert_int_eq(tu_apply(a, i, OP_REG, 0, 0, NULL, NULL, NULL, NULL), 0);
    ck_assert_int_eq(tu_apply(a, 6, OP_PUT, 1, 1, "k", "v", NULL, NULL), 0); /* 1 used last */
    sm_close(a);
    a = tu_open(a_dir, 3);
    ck_assert_uint_eq(a->sessions.count, 5);
    ck_assert_int_eq(tu_apply(a, 7, OP_PUT, 2, 1, "k", "v", NULL, NULL), 0); /* 2 too */
    ck_assert_int_eq(tu_apply(a, 8, OP_REG, 0, 0, NULL, NULL, NULL, NULL), 0);
    ck_assert_uint_eq(a->sessions.count, 3); /* 3, 4, 5 went */
    int want[] = {0, 0, 0, KV_ESTALE, KV_ESTALE, KV_ESTALE}; /* by id */
    for (uint64_t id = 1; id <= 5; id++)
        ck_assert_int_eq(tu_apply(a, 8 + id, OP_PUT, id, 2, "k", "w", NULL, NULL), want[id]);
    ck_assert_int_eq(tu_apply(a, 14, OP_PUT, 8, 1, "k", "w", NULL, NULL), 0);
    sm_close(a);
}
END_TEST

int main(void) {
    Suite *s = suite_create("sm_sessions");
    TCase *t = tcase_create("sessions");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 300);
    tcase_add_test(t, test_sessions_restart_same_order);
    tcase_add_test(t, test_sessions_at_limit);
    tcase_add_test(t, test_sessions_log_reads);
    tcase_add_test(t, test_sessions_log_corrupt);
    tcase_add_test(t, test_sessions_migrate_v1);
    tcase_add_test(t, test_sessions_v1_refused);
    tcase_add_test(t, test_sessions_snapshot_restore);
    tcase_add_test(t, test_sessions_fewer_after_reopen);
    suite_add_tcase(s, t);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
