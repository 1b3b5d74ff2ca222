/* Raft hard state in two checksummed slots: see hardstate.h. */
#include "storage/hardstate.h"

#include "common/checksum.h"
#include "common/logging.h"
#include "kv/errors.h"

#include <assert.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HS_PATH_BYTES_MAX 4096u

static const char hs__magic[8] = {'K', 'V', 'H', 'S', 'T', 'A', 'T', 'E'};

struct hs {
    kv_fs *fs;
    char dir[HS_PATH_BYTES_MAX];
    char path[2][HS_PATH_BYTES_MAX];
    bool exists[2];
    bool bad[2]; /* failed its checks at load: may have the wrong size */
    int newest;  /* slot holding the newest valid copy, -1 for none */
    uint64_t counter;
    hs_state st;
    int failed;
};

/* One slot as read. */
typedef struct hs_slot {
    int rv; /* 0 valid, KV_EMISSING, KV_ECORRUPT, KV_EVERSION, or an I/O error */
    const char *why;
    uint64_t counter;
    hs_state st;
} hs_slot;

static void hs__encode(uint8_t *b, uint64_t counter, const hs_state *st) {
    memcpy(b, hs__magic, 8);
    kv_put_u32(b + 8, HS_FORMAT_VERSION);
    kv_put_u32(b + 12, 0);
    kv_put_u64(b + 16, counter);
    kv_put_u64(b + 24, st->term);
    kv_put_u64(b + 32, st->vote);
    kv_put_u64(b + 40, st->commit);
    kv_put_u64(b + 48, kv_xxh3(b, 48));
    assert(HS_SLOT_BYTES == 56);
}

static void hs__read_slot(kv_fs *fs, const char *path, hs_slot *s) {
    void *buf = NULL;
    size_t len = 0;
    memset(s, 0, sizeof *s);
    s->rv = kv_fs_read_all(fs, path, 4096, &buf, &len);
    if (s->rv == KV_ETOOBIG) {
        s->rv = KV_ECORRUPT;
        s->why = "hard-state slot larger than a slot";
    }
    if (s->rv != 0)
        return;
    const uint8_t *b = buf;
    s->rv = KV_ECORRUPT;
    if (len != HS_SLOT_BYTES)
        s->why = len == 0 ? "empty hard-state slot" : "hard-state slot of the wrong size";
    else if (memcmp(b, hs__magic, 8) != 0)
        s->why = "not a kv hard-state slot (bad magic)";
    else if (kv_get_u64(b + 48) != kv_xxh3(b, 48))
        s->why = "hard-state slot checksum mismatch";
    else if (kv_get_u32(b + 8) != HS_FORMAT_VERSION) {
        s->rv = KV_EVERSION;
        s->why = "hard-state slot of another format version";
    } else {
        s->rv = 0;
        s->counter = kv_get_u64(b + 16);
        s->st = (hs_state){
            .term = kv_get_u64(b + 24), .vote = kv_get_u64(b + 32), .commit = kv_get_u64(b + 40)};
    }
    free(buf);
}

static void hs__report(kv_check_fn fn, void *arg, const char *word, const char *file,
                       const char *why) {
    if (fn == NULL)
        return;
    kv_check_problem p = {.word = word, .file = file, .offset = 0, .index = 0, .detail = why};
    fn(arg, &p);
}

static int hs__paths(const char *dir, char path[2][HS_PATH_BYTES_MAX]) {
    for (int i = 0; i < 2; i++) {
        int n = snprintf(path[i], HS_PATH_BYTES_MAX, "%s/hardstate.%d", dir, i);
        if (n < 0 || n >= (int)HS_PATH_BYTES_MAX)
            return KV_EINVAL;
    }
    return 0;
}

/* Reads both slots, reports by the rules of hardstate.h, and picks the
 * newest valid one (*newest, -1 when none). */
static int hs__scan(kv_fs *fs, char path[2][HS_PATH_BYTES_MAX], uint64_t log_term, kv_check_fn fn,
                    void *arg, hs_slot slot[2], int *newest) {
    for (int i = 0; i < 2; i++)
        hs__read_slot(fs, path[i], &slot[i]);
    for (int i = 0; i < 2; i++)
        if (slot[i].rv != 0 && slot[i].rv != KV_EMISSING && slot[i].rv != KV_ECORRUPT &&
            slot[i].rv != KV_EVERSION)
            return slot[i].rv; /* could not read */
    *newest = -1;
    for (int i = 0; i < 2; i++)
        if (slot[i].rv == 0 && (*newest < 0 || slot[i].counter > slot[*newest].counter))
            *newest = i;
    int rv = 0;
    char detail[160];
    for (int i = 0; i < 2; i++) {
        const hs_slot *other = &slot[1 - i];
        if (slot[i].rv == KV_EVERSION) {
            hs__report(fn, arg, "VERSION", path[i], slot[i].why);
            rv = KV_EVERSION;
        } else if (slot[i].rv == KV_ECORRUPT && other->rv == 0 && other->st.term >= log_term) {
            hs__report(fn, arg, "TORN", path[i], slot[i].why); /* rule 1 */
        } else if (slot[i].rv == KV_ECORRUPT) {
            const char *why = slot[i].why;
            if (other->rv == 0) { /* rule 2 */
                snprintf(detail, sizeof detail,
                         "%s; it was synced: the log holds term %llu, the other slot only %llu",
                         why, (unsigned long long)log_term, (unsigned long long)other->st.term);
                why = detail;
            }
            hs__report(fn, arg, "CORRUPT", path[i], why);
            rv = rv == 0 ? KV_ECORRUPT : rv;
        }
    }
    assert(*newest < 0 || slot[*newest].rv == 0);
    return rv;
}

int hs_check(kv_fs *fs, const char *dir, uint64_t log_term, kv_check_fn fn, void *arg) {
    assert(fs != NULL && dir != NULL);
    char path[2][HS_PATH_BYTES_MAX];
    hs_slot slot[2];
    int newest = -1;
    int rv = hs__paths(dir, path);
    return rv ? rv : hs__scan(fs, path, log_term, fn, arg, slot, &newest);
}

/* Syncs the slot about to be relied on, and the directory. A process that
 * died between hs_save's pwrite and its fdatasync leaves the new term/vote
 * in the page cache only: loading it and then acting on it (a vote in that
 * term) before it is durable is how two leaders get elected in one term
 * after a power loss (docs/rules.md, "two leaders in one term"). */
static int hs__sync_loaded(hs *h) {
    kv_fs *fs = h->fs;
    kv_file *f = NULL;
    int rv = 0;
    if (h->newest >= 0) {
        rv = fs->ops->open(fs, h->path[h->newest], KV_FS_WRITE, &f);
        if (rv == 0)
            rv = fs->ops->sync(f);
        if (f != NULL)
            fs->ops->close(f);
    }
    if (rv == 0 && (h->exists[0] || h->exists[1]))
        rv = fs->ops->sync_dir(fs, h->dir);
    if (rv != 0)
        KV_LOGE(kv_errword(rv), "cannot make the hard state in %s durable: %s", h->dir,
                kv_strerror(rv));
    return rv;
}

int hs_load(kv_fs *fs, const char *dir, uint64_t log_term, kv_check_fn fn, void *arg, hs **out,
            hs_state *st) {
    assert(fs != NULL && dir != NULL && out != NULL && st != NULL);
    hs *h = calloc(1, sizeof *h);
    if (h == NULL)
        return KV_ENOMEM;
    h->fs = fs;
    snprintf(h->dir, sizeof h->dir, "%s", dir);
    hs_slot slot[2];
    int rv = hs__paths(dir, h->path);
    if (rv == 0)
        rv = hs__scan(fs, h->path, log_term, fn, arg, slot, &h->newest);
    if (rv != 0) {
        free(h);
        return rv;
    }
    for (int i = 0; i < 2; i++) {
        h->exists[i] = slot[i].rv != KV_EMISSING;
        h->bad[i] = h->exists[i] && slot[i].rv != 0;
    }
    if (h->newest >= 0) {
        h->counter = slot[h->newest].counter;
        h->st = slot[h->newest].st;
    }
    rv = hs__sync_loaded(h);
    if (rv != 0) {
        free(h);
        return rv == KV_EPERM ? rv : KV_EIO;
    }
    *st = h->st;
    *out = h;
    return 0;
}

int hs_save(hs *h, const hs_state *st) {
    assert(h != NULL && st != NULL);
    if (h->failed != 0)
        return h->failed;
    int slot = h->newest < 0 ? 0 : 1 - h->newest;
    uint8_t b[HS_SLOT_BYTES];
    hs__encode(b, h->counter + 1, st);
    kv_fs *fs = h->fs;
    kv_file *f = NULL;
    int rv = 0;
    if (!h->exists[slot]) {
        /* a new slot appears whole or not at all (temporary file, sync,
         * rename, directory sync): a crash in the first save must not leave
         * a torn slot beside no other, which no rule could call torn */
        rv = kv_fs_write_atomic(fs, h->path[slot], b, sizeof b);
    } else {
        rv = fs->ops->open(fs, h->path[slot], KV_FS_WRITE, &f);
        if (rv == 0)
            rv = fs->ops->pwrite(f, b, sizeof b, 0);
        if (rv == 0 && h->bad[slot])
            rv = fs->ops->truncate(f, sizeof b);
        if (rv == 0)
            rv = fs->ops->sync(f);
        if (f != NULL)
            fs->ops->close(f);
    }
    if (rv != 0) {
        KV_LOGE("IO", "cannot save hard state to %s: %s", h->path[slot], kv_strerror(rv));
        h->failed = rv == KV_EPERM ? rv : KV_EIO;
        return h->failed;
    }
    h->exists[slot] = true;
    h->bad[slot] = false;
    h->newest = slot;
    h->counter++;
    h->st = *st;
    assert(h->newest == slot);
    return 0;
}

void hs_get(hs *h, hs_state *st) {
    assert(h != NULL && st != NULL);
    *st = h->st;
}

void hs_close(hs *h) {
    free(h);
}
