#include "test_wal_util.h"

#include "storage/datadir.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t tu_seed(void) {
    static uint64_t seed;
    static bool have;
    if (!have) {
        const char *s = getenv("KV_SEED");
        seed = s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL);
        have = true;
        fprintf(stderr, "seed=%" PRIu64 " (replay with KV_SEED=%" PRIu64 ")\n", seed, seed);
    }
    return seed;
}

int tu_seeds(int dflt) {
    const char *s = getenv("KV_SEEDS");
    int n = s ? atoi(s) : dflt;
    return n > 0 ? n : dflt;
}

fsf *tu_fake_datadir(uint64_t seed) {
    fsf *f = fsf_new(seed);
    assert(f != NULL);
    int rv = dd_init(fsf_fs(f), TU_DIR);
    assert(rv == 0);
    (void)rv;
    return f;
}

uint32_t tu_len(uint64_t index, uint64_t term) {
    return (uint32_t)((index * 37 + term * 11) % TU_LEN_MAX);
}

void tu_fill(uint8_t *buf, uint32_t len, uint64_t index, uint64_t term) {
    uint64_t x = index * 0x9e3779b97f4a7c15ull ^ term;
    for (uint32_t i = 0; i < len; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        buf[i] = (uint8_t)(x >> 56);
    }
}

void tu_entries(wal_entry *e, uint8_t (*bufs)[TU_LEN_MAX], uint64_t index, size_t n,
                uint64_t term) {
    for (size_t i = 0; i < n; i++) {
        uint32_t len = tu_len(index + i, term);
        tu_fill(bufs[i], len, index + i, term);
        e[i] = (wal_entry){.index = index + i,
                           .term = term,
                           .type = (uint8_t)(term & 3),
                           .len = len,
                           .data = bufs[i]};
    }
}

bool tu_entry_ok(const wal_entry *e) {
    uint8_t buf[TU_LEN_MAX];
    uint32_t len = tu_len(e->index, e->term);
    if (e->len != len || e->type != (uint8_t)(e->term & 3))
        return false;
    tu_fill(buf, len, e->index, e->term);
    return memcmp(buf, e->data, len) == 0;
}

uint64_t tu_data_end(fsf *f, const char *path) {
    void *buf = NULL;
    size_t size = 0;
    int rv = kv_fs_read_all(fsf_fs(f), path, 1u << 30, &buf, &size);
    assert(rv == 0);
    (void)rv;
    const uint8_t *b = buf;
    while (size > 0 && b[size - 1] == 0)
        size--;
    free(buf);
    return size;
}

void tu_zero(fsf *f, const char *path, uint64_t off, size_t len) {
    kv_fs *fs = fsf_fs(f);
    kv_file *h = NULL;
    uint8_t *zeros = calloc(1, len);
    int rv = zeros ? fs->ops->open(fs, path, KV_FS_WRITE, &h) : -1;
    if (rv == 0)
        rv = fs->ops->pwrite(h, zeros, len, off);
    if (rv == 0)
        rv = fs->ops->sync(h);
    if (h != NULL)
        fs->ops->close(h);
    free(zeros);
    assert(rv == 0);
    (void)rv;
}

void tu_collect(void *arg, const kv_check_problem *p) {
    tu_reports *r = arg;
    if (r->n >= TU_REPORTS_MAX)
        return;
    snprintf(r->word[r->n], sizeof r->word[0], "%s", p->word);
    snprintf(r->file[r->n], sizeof r->file[0], "%s", p->file);
    snprintf(r->detail[r->n], sizeof r->detail[0], "%s", p->detail ? p->detail : "");
    r->offset[r->n] = p->offset;
    r->index[r->n] = p->index;
    r->n++;
}

void tu_wait_init(tu_wait *t) {
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cond, NULL);
    t->pending = t->done = t->failed = 0;
}

void tu_wait_destroy(tu_wait *t) {
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cond);
}

void tu_op_done(void *arg, int status) {
    tu_op *op = arg;
    if (op->fake != NULL)
        op->syncs_at_done = fsf_syncs(op->fake);
    pthread_mutex_lock(&op->wait->mu);
    op->status = status;
    op->wait->pending--;
    op->wait->done++;
    if (status != 0)
        op->wait->failed++;
    pthread_cond_broadcast(&op->wait->cond);
    pthread_mutex_unlock(&op->wait->mu);
}

int tu_submit(wal *w, tu_op *op, tu_wait *t) {
    wal_entry e[64];
    static __thread uint8_t bufs[64][TU_LEN_MAX];
    assert(op->n <= 64);
    tu_entries(e, bufs, op->index, op->n, op->term);
    op->wait = t;
    op->status = 1;
    if (op->fake != NULL)
        op->syncs_at_submit = fsf_syncs(op->fake);
    pthread_mutex_lock(&t->mu);
    t->pending++;
    pthread_mutex_unlock(&t->mu);
    int rv = wal_append(w, e, op->n, tu_op_done, op);
    op->submitted = rv == 0;
    if (rv != 0) {
        pthread_mutex_lock(&t->mu);
        t->pending--;
        pthread_mutex_unlock(&t->mu);
        op->status = rv;
    }
    return rv;
}

void tu_wait_all(tu_wait *t) {
    pthread_mutex_lock(&t->mu);
    while (t->pending > 0)
        pthread_cond_wait(&t->cond, &t->mu);
    pthread_mutex_unlock(&t->mu);
}

void tu_gate_init(tu_gate *g) {
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cond, NULL);
    g->closed = true;
    g->entered = 0;
}

void tu_gate_hook(void *arg) {
    tu_gate *g = arg;
    pthread_mutex_lock(&g->mu);
    g->entered++;
    pthread_cond_broadcast(&g->cond);
    while (g->closed)
        pthread_cond_wait(&g->cond, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

void tu_gate_open(tu_gate *g) {
    pthread_mutex_lock(&g->mu);
    g->closed = false;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->mu);
}

void tu_gate_wait_entered(tu_gate *g, int n) {
    pthread_mutex_lock(&g->mu);
    while (g->entered < n)
        pthread_cond_wait(&g->cond, &g->mu);
    pthread_mutex_unlock(&g->mu);
}
