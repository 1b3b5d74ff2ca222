#include "test_sm_util.h"

#include "kv/errors.h"
#include "proto/kv.pb-c.h"

#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

uint64_t tu_term = 1;

void tu_tmpdir(char *buf) {
    const char *t = getenv("TMPDIR");
    snprintf(buf, 1024, "%s/kv-sm-XXXXXX", t && *t ? t : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(buf));
}

static int tu__rm(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

void tu_rmrf(const char *path) {
    nftw(path, tu__rm, 16, FTW_DEPTH | FTW_PHYS);
}

uint64_t tu_seed(const char *test) {
    const char *e = getenv("KV_SEED");
    uint64_t seed = e && *e ? strtoull(e, NULL, 0) : (uint64_t)time(NULL) ^ (uint64_t)getpid();
    printf("%s: seed %llu (replay: KV_SEED=%llu)\n", test, (unsigned long long)seed,
           (unsigned long long)seed);
    fflush(stdout);
    return seed;
}

uint64_t tu_rand(uint64_t *x) { /* splitmix64 */
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint8_t *tu_cmd(int op, uint64_t client, uint64_t seq, const void *key, size_t klen,
                const void *val, size_t vlen, const void *exp, size_t elen, size_t *len) {
    Kv__Command c;
    kv__command__init(&c);
    c.op = op;
    c.client_id = client;
    c.seq = seq;
    c.key.data = (uint8_t *)key;
    c.key.len = klen;
    c.value.data = (uint8_t *)val;
    c.value.len = vlen;
    c.expected.data = (uint8_t *)exp;
    c.expected.len = elen;
    *len = kv__command__get_packed_size(&c);
    uint8_t *buf = malloc(*len + 1);
    ck_assert_ptr_nonnull(buf);
    kv__command__pack(&c, buf);
    return buf;
}

int tu_apply(sm *s, uint64_t index, int op, uint64_t client, uint64_t seq, const char *key,
             const char *val, const char *exp, sm_reply *r) {
    size_t len = 0;
    uint8_t *buf = tu_cmd(op, client, seq, key, key ? strlen(key) : 0, val, val ? strlen(val) : 0,
                          exp, exp ? strlen(exp) : 0, &len);
    sm_entry e = {
        .index = index, .term = tu_term, .type = SM_ENTRY_COMMAND, .payload = buf, .len = len};
    sm_reply rr;
    ck_assert_int_eq(sm_apply(s, &e, 1, &rr), 0);
    free(buf);
    ck_assert(rr.index == index || strcmp(rr.detail ? rr.detail : "", "duplicate") == 0);
    int code = rr.code;
    if (r != NULL)
        *r = rr;
    else
        sm_replies_free(&rr, 1);
    return code;
}

static sm *tu_open_opt(const char *db_dir, const sm_options *o) {
    sm *s = NULL;
    ck_assert_int_eq(sm_open(db_dir, o, &s), 0);
    return s;
}

sm *tu_open_log(const char *db_dir, uint32_t sessions_max, uint32_t session_log_records) {
    sm_options o;
    sm_options_default(&o);
    if (sessions_max)
        o.sessions_max = sessions_max;
    o.session_log_records = session_log_records;
    return tu_open_opt(db_dir, &o);
}

sm *tu_open_cache(const char *db_dir, uint32_t key_cache_slots) {
    sm_options o;
    sm_options_default(&o);
    o.key_cache_slots = key_cache_slots;
    return tu_open_opt(db_dir, &o);
}

sm *tu_open(const char *db_dir, uint32_t sessions_max) {
    return tu_open_log(db_dir, sessions_max, SM_SESSION_LOG_RECORDS);
}

char *tu_get(sm *s, const char *key) {
    void *v = NULL;
    size_t n = 0;
    int rv = sm_get(s, key, strlen(key), &v, &n);
    if (rv == KV_ENOTFOUND)
        return NULL;
    ck_assert_int_eq(rv, 0);
    char *str = malloc(n + 1);
    memcpy(str, v, n);
    str[n] = '\0';
    free(v);
    return str;
}

void tu_problem(void *arg, const kv_check_problem *p) {
    tu_problems *t = arg;
    t->count++;
    snprintf(t->word, sizeof t->word, "%s", p->word);
    snprintf(t->file, sizeof t->file, "%s", p->file);
    t->offset = p->offset;
    printf("problem: %s %s offset %lld: %s\n", p->word, p->file,
           p->offset == KV_CHECK_NO_OFFSET ? -1LL : (long long)p->offset, p->detail);
}

void tu_flip(const char *path, uint64_t off) {
    int fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    unsigned char b = 0;
    ck_assert_int_eq(pread(fd, &b, 1, (off_t)off), 1);
    b ^= 0x5a;
    ck_assert_int_eq(pwrite(fd, &b, 1, (off_t)off), 1);
    close(fd);
}

bool tu_find(const char *dir, const char *suffix, char *out) {
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    bool found = false;
    size_t sl = strlen(suffix);
    while (!found && (e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n >= sl && strcmp(e->d_name + n - sl, suffix) == 0) {
            snprintf(out, 4096, "%s/%s", dir, e->d_name);
            found = true;
        }
    }
    closedir(d);
    return found;
}

static rocksdb_column_family_handle_t *tu_raw_default;

rocksdb_t *tu_raw_open(const char *db_dir, rocksdb_column_family_handle_t **history) {
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_options_set_create_missing_column_families(o, 1);
    const char *names[2] = {"default", "history"};
    const rocksdb_options_t *cfo[2] = {o, o};
    rocksdb_column_family_handle_t *cf[2] = {NULL, NULL};
    char *err = NULL;
    rocksdb_t *db = rocksdb_open_column_families(o, db_dir, 2, names, cfo, cf, &err);
    rocksdb_options_destroy(o);
    ck_assert_msg(err == NULL, "raw open: %s", err ? err : "");
    tu_raw_default = cf[0];
    *history = cf[1];
    return db;
}

void tu_raw_close(rocksdb_t *db, rocksdb_column_family_handle_t *history) {
    rocksdb_column_family_handle_destroy(tu_raw_default);
    rocksdb_column_family_handle_destroy(history);
    rocksdb_close(db);
}

void tu_raw_write(rocksdb_t *db, rocksdb_writebatch_t *wb) {
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    char *err = NULL;
    rocksdb_write(db, wo, wb, &err);
    ck_assert_msg(err == NULL, "raw write: %s", err ? err : "");
    rocksdb_writeoptions_destroy(wo);
    rocksdb_writebatch_destroy(wb);
}

bool tu_find_sst(const char *db_dir, const char *cf, char *out) {
    rocksdb_column_family_handle_t *h;
    rocksdb_t *db = tu_raw_open(db_dir, &h);
    const rocksdb_livefiles_t *lf = rocksdb_livefiles(db);
    bool found = false;
    for (int i = 0; i < rocksdb_livefiles_count(lf) && !found; i++) {
        if (strcmp(rocksdb_livefiles_column_family_name(lf, i), cf) != 0)
            continue;
        snprintf(out, 4096, "%s/%s", db_dir, rocksdb_livefiles_name(lf, i)); /* "/000012.sst" */
        found = true;
    }
    rocksdb_livefiles_destroy(lf);
    tu_raw_close(db, h);
    return found;
}
