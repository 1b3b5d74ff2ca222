/* The fake half of the file interface: see fs_fake.h for the model. */
#include "storage/fs_fake.h"

#include "kv/errors.h"

#include <assert.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define FSF_NAME_BYTES_MAX 255u
#define FSF_DEPTH_MAX 64u
#define FSF_PAGE_BYTES_DEFAULT 4096u

typedef struct fsf_node fsf_node;

typedef struct fsf_dent {
    char *name; /* owned */
    fsf_node *node;
} fsf_dent;

typedef struct fsf_dents {
    fsf_dent *v;
    size_t n, cap;
} fsf_dents;

enum { FSF_OP_WRITE, FSF_OP_TRUNCATE };

/* One unsynced change to a file, kept in order for a torn crash. */
typedef struct fsf_op {
    int kind;
    uint64_t off; /* write offset, or new size */
    size_t len;
    uint8_t *bytes; /* owned copy of the written bytes */
} fsf_op;

struct fsf_node {
    bool is_dir, readonly;
    uint8_t *data; /* current contents, size bytes */
    size_t size;
    uint8_t *dur; /* durable contents, dur_size bytes */
    size_t dur_size;
    fsf_op *ops; /* unsynced changes since the last sync */
    size_t ops_n, ops_cap;
    fsf_dents cur, dur_ents; /* directories: current and durable entries */
    fsf_node *all_next;      /* every node, for crash and free */
};

struct kv_file {
    fsf *f;
    fsf_node *node;
    uint64_t gen; /* crash generation it was opened in */
};

struct fsf {
    kv_fs fs;
    pthread_mutex_t mu;
    fsf_node *root, *all;
    uint64_t gen, rng;
    uint64_t fail_write_n, fail_sync_n, short_write_n, die_n;
    bool dead;
    uint64_t syncs, writes, dir_syncs;
    size_t page_bytes; /* the unit FSF_CRASH_PAGES keeps or loses */
    void (*hook)(void *arg);
    void *hook_arg;
};

static uint64_t fsf__rand(fsf *f) {
    uint64_t z = (f->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Counts a countdown down; true when it fires now. */
static bool fsf__fires(uint64_t *n) {
    if (*n == 0)
        return false;
    return --*n == 0;
}

static fsf_node *fsf__node_new(fsf *f, bool is_dir) {
    fsf_node *n = calloc(1, sizeof *n);
    if (n == NULL)
        return NULL;
    n->is_dir = is_dir;
    n->all_next = f->all;
    f->all = n;
    assert(n->size == 0 && n->ops_n == 0);
    return n;
}

static void fsf__dents_clear(fsf_dents *d) {
    for (size_t i = 0; i < d->n; i++)
        free(d->v[i].name);
    free(d->v);
    memset(d, 0, sizeof *d);
}

static void fsf__ops_clear(fsf_node *n) {
    for (size_t i = 0; i < n->ops_n; i++)
        free(n->ops[i].bytes);
    n->ops_n = 0;
}

static void fsf__node_free(fsf_node *n) {
    fsf__ops_clear(n);
    free(n->ops);
    free(n->data);
    free(n->dur);
    fsf__dents_clear(&n->cur);
    fsf__dents_clear(&n->dur_ents);
    free(n);
}

static fsf_dent *fsf__lookup(fsf_dents *d, const char *name) {
    for (size_t i = 0; i < d->n; i++)
        if (strcmp(d->v[i].name, name) == 0)
            return &d->v[i];
    return NULL;
}

static int fsf__dents_put(fsf_dents *d, const char *name, fsf_node *node) {
    assert(name[0] != '\0' && strchr(name, '/') == NULL);
    assert(node != NULL);
    fsf_dent *e = fsf__lookup(d, name);
    if (e != NULL) {
        e->node = node;
        return 0;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? 2 * d->cap : 8;
        fsf_dent *v = realloc(d->v, cap * sizeof *v);
        if (v == NULL)
            return KV_ENOMEM;
        d->v = v;
        d->cap = cap;
    }
    char *copy = strdup(name);
    if (copy == NULL)
        return KV_ENOMEM;
    d->v[d->n++] = (fsf_dent){.name = copy, .node = node};
    return 0;
}

static void fsf__dents_del(fsf_dents *d, const char *name) {
    fsf_dent *e = fsf__lookup(d, name);
    assert(e != NULL);
    free(e->name);
    *e = d->v[--d->n];
}

static int fsf__dents_copy(fsf_dents *to, const fsf_dents *from) {
    fsf_dents t = {0};
    for (size_t i = 0; i < from->n; i++) {
        int rv = fsf__dents_put(&t, from->v[i].name, from->v[i].node);
        if (rv != 0) {
            fsf__dents_clear(&t);
            return rv;
        }
    }
    fsf__dents_clear(to);
    *to = t;
    return 0;
}

/* Finds the directory holding path's last component and copies that
 * component into base. KV_EMISSING when a directory on the way is absent. */
static int fsf__parent(fsf *f, const char *path, fsf_node **dir, char *base) {
    assert(path != NULL && base != NULL);
    fsf_node *d = f->root;
    assert(d != NULL && d->is_dir);
    const char *p = path;
    base[0] = '\0';
    for (unsigned depth = 0; depth < FSF_DEPTH_MAX; depth++) {
        while (*p == '/')
            p++;
        size_t len = strcspn(p, "/");
        if (len == 0)
            break;
        if (len > FSF_NAME_BYTES_MAX)
            return KV_EINVAL;
        const char *next = p + len;
        while (*next == '/')
            next++;
        if (len == 1 && p[0] == '.') {
            p = next;
            continue;
        }
        if (*next == '\0') {
            memcpy(base, p, len);
            base[len] = '\0';
            *dir = d;
            return 0;
        }
        char comp[FSF_NAME_BYTES_MAX + 1];
        memcpy(comp, p, len);
        comp[len] = '\0';
        fsf_dent *e = fsf__lookup(&d->cur, comp);
        if (e == NULL || !e->node->is_dir)
            return KV_EMISSING;
        d = e->node;
        p = next;
    }
    *dir = d; /* the root itself, or "." */
    return 0;
}

/* The node at path (the root for "/"), or NULL. */
static fsf_node *fsf__resolve(fsf *f, const char *path) {
    fsf_node *d = NULL;
    char base[FSF_NAME_BYTES_MAX + 1];
    if (fsf__parent(f, path, &d, base) != 0)
        return NULL;
    if (base[0] == '\0')
        return d;
    fsf_dent *e = fsf__lookup(&d->cur, base);
    return e ? e->node : NULL;
}

/* Common entry for mutating calls: the death countdown. Caller holds mu. */
static int fsf__mutate(fsf *f) {
    if (f->dead)
        return KV_EIO;
    if (fsf__fires(&f->die_n)) {
        f->dead = true;
        return KV_EIO;
    }
    return 0;
}

static int fsf__file_ok(kv_file *h) {
    if (h->f->dead || h->gen != h->f->gen)
        return KV_EIO;
    return 0;
}

static int fsf__reserve(fsf_node *n, size_t size) {
    assert(!n->is_dir);
    if (size <= n->size)
        return 0;
    uint8_t *d = realloc(n->data, size);
    if (d == NULL)
        return KV_ENOMEM;
    memset(d + n->size, 0, size - n->size);
    n->data = d;
    n->size = size;
    assert(n->data != NULL);
    return 0;
}

static int fsf__apply(fsf_node *n, const fsf_op *op, size_t len) {
    assert(!n->is_dir);
    assert(len <= op->len);
    if (op->kind == FSF_OP_TRUNCATE) {
        if (op->off < n->size) {
            n->size = op->off;
            return 0;
        }
        return fsf__reserve(n, op->off);
    }
    int rv = fsf__reserve(n, op->off + len);
    if (rv == 0 && len > 0)
        memcpy(n->data + op->off, op->bytes, len);
    return rv;
}

/* Applies a change and keeps it in the unsynced list. Caller holds mu. */
static int fsf__record(fsf_node *n, int kind, uint64_t off, const void *buf, size_t len) {
    if (n->ops_n == n->ops_cap) {
        size_t cap = n->ops_cap ? 2 * n->ops_cap : 16;
        fsf_op *v = realloc(n->ops, cap * sizeof *v);
        if (v == NULL)
            return KV_ENOMEM;
        n->ops = v;
        n->ops_cap = cap;
    }
    fsf_op op = {.kind = kind, .off = off, .len = len, .bytes = NULL};
    if (len > 0) {
        if ((op.bytes = malloc(len)) == NULL)
            return KV_ENOMEM;
        memcpy(op.bytes, buf, len);
    }
    int rv = fsf__apply(n, &op, len);
    if (rv != 0) {
        free(op.bytes);
        return rv;
    }
    n->ops[n->ops_n++] = op;
    assert(n->ops_n <= n->ops_cap);
    return 0;
}

static int fsf_open(kv_fs *fs, const char *path, int flags, kv_file **out) {
    fsf *f = fs->impl;
    assert(f != NULL && path != NULL && out != NULL);
    fsf_node *dir = NULL, *node = NULL;
    char base[FSF_NAME_BYTES_MAX + 1];
    pthread_mutex_lock(&f->mu);
    int rv = f->dead ? KV_EIO : fsf__parent(f, path, &dir, base);
    if (rv == 0 && base[0] == '\0')
        rv = KV_EINVAL;
    fsf_dent *e = rv == 0 ? fsf__lookup(&dir->cur, base) : NULL;
    if (rv == 0 && e != NULL) {
        node = e->node;
        if ((flags & KV_FS_CREATE) && (flags & KV_FS_EXCL))
            rv = KV_EEXIST;
        else if (node->is_dir)
            rv = KV_EINVAL;
    } else if (rv == 0 && !(flags & KV_FS_CREATE)) {
        rv = KV_EMISSING;
    } else if (rv == 0 && dir->readonly) {
        rv = KV_EPERM;
    } else if (rv == 0 && (rv = fsf__mutate(f)) == 0) {
        node = fsf__node_new(f, false);
        rv = node ? fsf__dents_put(&dir->cur, base, node) : KV_ENOMEM;
    }
    kv_file *h = NULL;
    if (rv == 0 && (h = malloc(sizeof *h)) == NULL)
        rv = KV_ENOMEM;
    if (rv == 0) {
        assert(node != NULL && !node->is_dir);
        *h = (kv_file){.f = f, .node = node, .gen = f->gen};
        *out = h;
    }
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static int fsf_pread(kv_file *h, void *buf, size_t len, uint64_t off, size_t *got) {
    fsf *f = h->f;
    assert(buf != NULL || len == 0);
    pthread_mutex_lock(&f->mu);
    int rv = fsf__file_ok(h);
    if (rv == 0) {
        fsf_node *n = h->node;
        size_t avail = off < n->size ? n->size - (size_t)off : 0;
        size_t k = len < avail ? len : avail;
        if (k > 0)
            memcpy(buf, n->data + off, k);
        *got = k;
        assert(k <= len);
    }
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static int fsf_pwrite(kv_file *h, const void *buf, size_t len, uint64_t off) {
    fsf *f = h->f;
    assert(buf != NULL || len == 0);
    assert(h->node != NULL && !h->node->is_dir);
    pthread_mutex_lock(&f->mu);
    int rv = fsf__file_ok(h);
    if (rv == 0)
        rv = fsf__mutate(f);
    if (rv == 0 && fsf__fires(&f->fail_write_n))
        rv = KV_EIO;
    if (rv == 0 && fsf__fires(&f->short_write_n)) {
        size_t keep = len ? (size_t)(fsf__rand(f) % len) : 0;
        rv = fsf__record(h->node, FSF_OP_WRITE, off, buf, keep);
        rv = rv ? rv : KV_EIO;
    }
    if (rv == 0)
        rv = fsf__record(h->node, FSF_OP_WRITE, off, buf, len);
    if (rv == 0)
        f->writes++;
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static int fsf_sync(kv_file *h) {
    fsf *f = h->f;
    pthread_mutex_lock(&f->mu);
    void (*hook)(void *) = f->hook;
    void *hook_arg = f->hook_arg;
    pthread_mutex_unlock(&f->mu);
    if (hook != NULL)
        hook(hook_arg);
    pthread_mutex_lock(&f->mu);
    int rv = fsf__file_ok(h);
    if (rv == 0)
        rv = fsf__mutate(f);
    if (rv == 0 && fsf__fires(&f->fail_sync_n))
        rv = KV_EIO;
    fsf_node *n = h->node;
    uint8_t *copy = NULL;
    if (rv == 0 && n->size > 0 && (copy = malloc(n->size)) == NULL)
        rv = KV_ENOMEM;
    if (rv == 0) {
        if (n->size > 0)
            memcpy(copy, n->data, n->size);
        free(n->dur);
        n->dur = copy;
        n->dur_size = n->size;
        fsf__ops_clear(n);
        f->syncs++;
        assert(n->dur_size == n->size && n->ops_n == 0);
    }
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static int fsf_truncate(kv_file *h, uint64_t size) {
    fsf *f = h->f;
    assert(h->node != NULL && !h->node->is_dir);
    pthread_mutex_lock(&f->mu);
    int rv = fsf__file_ok(h);
    if (rv == 0)
        rv = fsf__mutate(f);
    if (rv == 0)
        rv = fsf__record(h->node, FSF_OP_TRUNCATE, size, NULL, 0);
    assert(rv != 0 || h->node->size == size);
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static int fsf_fsize(kv_file *h, uint64_t *out) {
    fsf *f = h->f;
    pthread_mutex_lock(&f->mu);
    int rv = fsf__file_ok(h);
    if (rv == 0)
        *out = h->node->size;
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static void fsf_close(kv_file *h) {
    free(h);
}

static int fsf_unlink(kv_fs *fs, const char *path) {
    fsf *f = fs->impl;
    assert(f != NULL && path != NULL);
    fsf_node *dir = NULL;
    char base[FSF_NAME_BYTES_MAX + 1];
    pthread_mutex_lock(&f->mu);
    int rv = f->dead ? KV_EIO : fsf__parent(f, path, &dir, base);
    fsf_dent *e = rv == 0 ? fsf__lookup(&dir->cur, base) : NULL;
    if (rv == 0 && e == NULL)
        rv = KV_EMISSING;
    else if (rv == 0 && e->node->is_dir)
        rv = KV_EINVAL;
    else if (rv == 0 && dir->readonly)
        rv = KV_EPERM;
    if (rv == 0)
        rv = fsf__mutate(f);
    if (rv == 0)
        fsf__dents_del(&dir->cur, base);
    assert(rv != 0 || fsf__lookup(&dir->cur, base) == NULL);
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static int fsf_rename(kv_fs *fs, const char *from, const char *to) {
    fsf *f = fs->impl;
    assert(f != NULL && from != NULL && to != NULL);
    fsf_node *fd = NULL, *td = NULL;
    char fb[FSF_NAME_BYTES_MAX + 1], tb[FSF_NAME_BYTES_MAX + 1];
    pthread_mutex_lock(&f->mu);
    int rv = f->dead ? KV_EIO : fsf__parent(f, from, &fd, fb);
    if (rv == 0)
        rv = fsf__parent(f, to, &td, tb);
    fsf_dent *e = rv == 0 ? fsf__lookup(&fd->cur, fb) : NULL;
    fsf_dent *t = rv == 0 ? fsf__lookup(&td->cur, tb) : NULL;
    if (rv == 0 && (e == NULL || fb[0] == '\0' || tb[0] == '\0'))
        rv = KV_EMISSING;
    else if (rv == 0 && t != NULL && t->node->is_dir != e->node->is_dir)
        rv = KV_EINVAL;
    else if (rv == 0 && (fd->readonly || td->readonly))
        rv = KV_EPERM;
    if (rv == 0)
        rv = fsf__mutate(f);
    if (rv == 0) {
        fsf_node *node = e->node;
        rv = fsf__dents_put(&td->cur, tb, node);
        if (rv == 0 && (fd != td || strcmp(fb, tb) != 0))
            fsf__dents_del(&fd->cur, fb);
        assert(rv != 0 || fsf__lookup(&td->cur, tb)->node == node);
    }
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static int fsf_mkdir(kv_fs *fs, const char *path) {
    fsf *f = fs->impl;
    assert(f != NULL && path != NULL);
    fsf_node *dir = NULL;
    char base[FSF_NAME_BYTES_MAX + 1];
    pthread_mutex_lock(&f->mu);
    int rv = f->dead ? KV_EIO : fsf__parent(f, path, &dir, base);
    fsf_dent *e = rv == 0 && base[0] ? fsf__lookup(&dir->cur, base) : NULL;
    if (rv == 0 && base[0] == '\0') {
        rv = 0; /* the root exists */
    } else if (rv == 0 && e != NULL) {
        rv = e->node->is_dir ? 0 : KV_EEXIST;
    } else if (rv == 0 && dir->readonly) {
        rv = KV_EPERM;
    } else if (rv == 0 && (rv = fsf__mutate(f)) == 0) {
        fsf_node *n = fsf__node_new(f, true);
        rv = n ? fsf__dents_put(&dir->cur, base, n) : KV_ENOMEM;
    }
    pthread_mutex_unlock(&f->mu);
    return rv;
}

/* Removes an empty directory. KV_EEXIST when it is not empty (fs.c maps
 * ENOTEMPTY through fs__errno), KV_EINVAL when path is a file. */
static int fsf_rmdir(kv_fs *fs, const char *path) {
    fsf *f = fs->impl;
    assert(f != NULL && path != NULL);
    fsf_node *dir = NULL;
    char base[FSF_NAME_BYTES_MAX + 1];
    pthread_mutex_lock(&f->mu);
    int rv = f->dead ? KV_EIO : fsf__parent(f, path, &dir, base);
    fsf_dent *e = rv == 0 && base[0] ? fsf__lookup(&dir->cur, base) : NULL;
    if (rv == 0 && e == NULL)
        rv = base[0] ? KV_EMISSING : KV_EINVAL; /* not the root */
    else if (rv == 0 && !e->node->is_dir)
        rv = KV_EINVAL;
    else if (rv == 0 && e->node->cur.n > 0)
        rv = KV_EEXIST;
    else if (rv == 0 && dir->readonly)
        rv = KV_EPERM;
    if (rv == 0)
        rv = fsf__mutate(f);
    if (rv == 0)
        fsf__dents_del(&dir->cur, base);
    assert(rv != 0 || fsf__lookup(&dir->cur, base) == NULL);
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static int fsf_sync_dir(kv_fs *fs, const char *path) {
    fsf *f = fs->impl;
    assert(f != NULL && path != NULL);
    pthread_mutex_lock(&f->mu);
    int rv = f->dead ? KV_EIO : 0;
    fsf_node *d = rv == 0 ? fsf__resolve(f, path) : NULL;
    if (rv == 0 && (d == NULL || !d->is_dir))
        rv = KV_EMISSING;
    if (rv == 0)
        rv = fsf__mutate(f);
    if (rv == 0)
        rv = fsf__dents_copy(&d->dur_ents, &d->cur);
    if (rv == 0)
        f->dir_syncs++;
    assert(rv != 0 || d->dur_ents.n == d->cur.n);
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static int fsf__name_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int fsf_list(kv_fs *fs, const char *path, char ***names, size_t *count) {
    fsf *f = fs->impl;
    assert(f != NULL && path != NULL);
    assert(names != NULL && count != NULL);
    pthread_mutex_lock(&f->mu);
    int rv = f->dead ? KV_EIO : 0;
    fsf_node *d = rv == 0 ? fsf__resolve(f, path) : NULL;
    if (rv == 0 && (d == NULL || !d->is_dir))
        rv = KV_EMISSING;
    char **v = NULL;
    size_t n = 0;
    if (rv == 0 && (v = calloc(d->cur.n + 1, sizeof *v)) == NULL)
        rv = KV_ENOMEM;
    for (size_t i = 0; rv == 0 && i < d->cur.n; i++, n++)
        if ((v[i] = strdup(d->cur.v[i].name)) == NULL)
            rv = KV_ENOMEM;
    pthread_mutex_unlock(&f->mu);
    if (rv != 0) {
        kv_fs_free_list(v, n);
        return rv;
    }
    qsort(v, n, sizeof *v, fsf__name_cmp);
    *names = v;
    *count = n;
    return 0;
}

static int fsf_exists(kv_fs *fs, const char *path) {
    fsf *f = fs->impl;
    assert(f != NULL && path != NULL);
    pthread_mutex_lock(&f->mu);
    int rv = f->dead ? KV_EIO : (fsf__resolve(f, path) ? 0 : KV_EMISSING);
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static const struct kv_fs_ops fsf_ops = {
    .open = fsf_open,
    .pread = fsf_pread,
    .pwrite = fsf_pwrite,
    .sync = fsf_sync,
    .truncate = fsf_truncate,
    .size = fsf_fsize,
    .close = fsf_close,
    .unlink = fsf_unlink,
    .rename = fsf_rename,
    .mkdir = fsf_mkdir,
    .rmdir = fsf_rmdir,
    .sync_dir = fsf_sync_dir,
    .list = fsf_list,
    .exists = fsf_exists,
};

fsf *fsf_new(uint64_t seed) {
    fsf *f = calloc(1, sizeof *f);
    if (f == NULL)
        return NULL;
    f->fs = (kv_fs){.ops = &fsf_ops, .impl = f};
    f->rng = seed;
    f->page_bytes = FSF_PAGE_BYTES_DEFAULT;
    pthread_mutex_init(&f->mu, NULL);
    if ((f->root = fsf__node_new(f, true)) == NULL) {
        fsf_free(f);
        return NULL;
    }
    assert(f->root->is_dir);
    return f;
}

void fsf_free(fsf *f) {
    if (f == NULL)
        return;
    while (f->all != NULL) {
        fsf_node *n = f->all;
        f->all = n->all_next;
        fsf__node_free(n);
    }
    pthread_mutex_destroy(&f->mu);
    free(f);
}

kv_fs *fsf_fs(fsf *f) {
    assert(f != NULL);
    assert(f->fs.impl == f);
    return &f->fs;
}

#define FSF_SETTER(fn, field)                                                                      \
    void fn(fsf *f, uint64_t n) {                                                                  \
        pthread_mutex_lock(&f->mu);                                                                \
        f->field = n;                                                                              \
        pthread_mutex_unlock(&f->mu);                                                              \
    }
FSF_SETTER(fsf_fail_write, fail_write_n)
FSF_SETTER(fsf_fail_sync, fail_sync_n)
FSF_SETTER(fsf_short_write, short_write_n)
FSF_SETTER(fsf_die_at, die_n)
#undef FSF_SETTER

#define FSF_GETTER(type, fn, field)                                                                \
    type fn(fsf *f) {                                                                              \
        pthread_mutex_lock(&f->mu);                                                                \
        type v = f->field;                                                                         \
        pthread_mutex_unlock(&f->mu);                                                              \
        return v;                                                                                  \
    }
FSF_GETTER(bool, fsf_dead, dead)
FSF_GETTER(uint64_t, fsf_syncs, syncs)
FSF_GETTER(uint64_t, fsf_writes, writes)
FSF_GETTER(uint64_t, fsf_dir_syncs, dir_syncs)
#undef FSF_GETTER

/* A torn crash: a random prefix of the unsynced changes, in order; the last
 * write kept may be cut short, its tail garbage. Caller holds mu. */
static void fsf__tear(fsf *f, fsf_node *n) {
    size_t keep = (size_t)(fsf__rand(f) % (n->ops_n + 1));
    assert(keep <= n->ops_n && !n->is_dir);
    for (size_t i = 0; i < keep; i++)
        (void)fsf__apply(n, &n->ops[i], n->ops[i].len);
    if (keep == n->ops_n || n->ops[keep].kind != FSF_OP_WRITE)
        return;
    fsf_op *op = &n->ops[keep];
    size_t len = (size_t)(fsf__rand(f) % (op->len + 1));
    if (len > 0 && fsf__rand(f) % 2 == 0) {
        size_t garbage = 1 + (size_t)(fsf__rand(f) % len);
        for (size_t i = len - garbage; i < len; i++)
            op->bytes[i] = (uint8_t)fsf__rand(f);
    }
    (void)fsf__apply(n, op, len);
}

/* Byte i of an image of len bytes; zeros past its end. */
static uint8_t fsf__byte(const uint8_t *d, size_t len, size_t i) {
    return i < len ? d[i] : 0;
}

/* Fills out[off, off + len) from the old image, the new one, or a prefix
 * of the new one and the rest old (a torn page). */
static void fsf__page(uint8_t *out, size_t off, size_t len, const fsf_node *n, size_t new_len) {
    for (size_t i = 0; i < len; i++) {
        bool take_new = i < new_len;
        out[off + i] = take_new ? fsf__byte(n->data, n->size, off + i)
                                : fsf__byte(n->dur, n->dur_size, off + i);
    }
}

/* The size after an FSF_CRASH_PAGES crash: the durable one, the current
 * one, or a page boundary between them. */
static size_t fsf__pages_size(fsf *f, const fsf_node *n) {
    size_t lo = n->dur_size < n->size ? n->dur_size : n->size;
    size_t hi = n->dur_size < n->size ? n->size : n->dur_size;
    uint64_t r = fsf__rand(f) % 3;
    if (r == 0 || lo == hi)
        return n->dur_size;
    if (r == 1)
        return n->size;
    size_t b = lo + (size_t)(fsf__rand(f) % (hi - lo + 1));
    b -= b % f->page_bytes;
    return b < lo ? lo : b;
}

/* An FSF_CRASH_PAGES crash of one file: each page that unsynced changes
 * made different comes back old or new, at most one of them torn. The
 * result becomes durable. Caller holds mu. */
static void fsf__crash_pages(fsf *f, fsf_node *n) {
    assert(!n->is_dir && f->page_bytes > 0);
    size_t size = fsf__pages_size(f, n), pg = f->page_bytes;
    uint8_t *out = size ? malloc(size) : NULL;
    assert(size == 0 || out != NULL);
    bool torn = false;
    for (size_t off = 0; off < size; off += pg) {
        size_t len = size - off < pg ? size - off : pg;
        bool same = true;
        for (size_t i = 0; same && i < len; i++)
            same = fsf__byte(n->data, n->size, off + i) == fsf__byte(n->dur, n->dur_size, off + i);
        uint64_t r = same ? 0 : fsf__rand(f) % 5;
        size_t new_len = r < 2 ? len : 0;
        if (r == 4 && !torn) {
            new_len = 1 + (size_t)(fsf__rand(f) % len);
            torn = true;
        }
        fsf__page(out, off, len, n, new_len);
    }
    free(n->data);
    free(n->dur);
    n->data = out;
    n->size = size;
    n->dur = NULL;
    if (size > 0) {
        n->dur = malloc(size);
        assert(n->dur != NULL);
        memcpy(n->dur, out, size);
    }
    n->dur_size = size;
}

/* An FSF_CRASH_PAGES crash of one directory: each name created, replaced,
 * renamed or unlinked since its last sync_dir keeps its new or its old
 * entry, each name on its own (the two names of a rename too: the file may
 * show under both or neither). Caller holds mu. */
static void fsf__crash_dents(fsf *f, fsf_node *d) {
    assert(d->is_dir);
    fsf_dents t = {0};
    int rv = fsf__dents_copy(&t, &d->dur_ents);
    for (size_t i = 0; rv == 0 && i < d->cur.n; i++) {
        const fsf_dent *e = &d->cur.v[i];
        const fsf_dent *o = fsf__lookup(&d->dur_ents, e->name);
        if ((o == NULL || o->node != e->node) && fsf__rand(f) % 2 == 0)
            rv = fsf__dents_put(&t, e->name, e->node);
    }
    for (size_t i = 0; rv == 0 && i < d->dur_ents.n; i++) {
        const char *name = d->dur_ents.v[i].name;
        if (fsf__lookup(&d->cur, name) == NULL && fsf__rand(f) % 2 == 0)
            fsf__dents_del(&t, name);
    }
    if (rv == 0)
        rv = fsf__dents_copy(&d->dur_ents, &t);
    assert(rv == 0);
    (void)rv;
    fsf__dents_clear(&d->cur);
    d->cur = t;
}

/* A file after a crash in mode DROP or TORN. Caller holds mu. */
static void fsf__crash_file(fsf *f, fsf_node *n, enum fsf_crash_mode mode) {
    n->size = 0;
    if (n->dur_size > 0) {
        int rv = fsf__reserve(n, n->dur_size);
        assert(rv == 0);
        (void)rv;
        memcpy(n->data, n->dur, n->dur_size);
    }
    if (mode == FSF_CRASH_TORN && n->ops_n > 0) {
        fsf__tear(f, n);
        uint8_t *d = n->size ? malloc(n->size) : NULL;
        assert(n->size == 0 || d != NULL);
        if (n->size)
            memcpy(d, n->data, n->size);
        free(n->dur);
        n->dur = d;
        n->dur_size = n->size;
    }
}

void fsf_crash(fsf *f, enum fsf_crash_mode mode) {
    pthread_mutex_lock(&f->mu);
    for (fsf_node *n = f->all; n != NULL; n = n->all_next) {
        if (n->is_dir && mode == FSF_CRASH_PAGES) {
            fsf__crash_dents(f, n);
        } else if (n->is_dir) {
            int rv = fsf__dents_copy(&n->cur, &n->dur_ents);
            assert(rv == 0);
            (void)rv;
        } else if (mode == FSF_CRASH_PAGES) {
            if (n->ops_n > 0)
                fsf__crash_pages(f, n);
        } else {
            fsf__crash_file(f, n, mode);
        }
        if (!n->is_dir)
            fsf__ops_clear(n);
        assert(n->is_dir || n->size == n->dur_size);
    }
    f->gen++;
    f->dead = false;
    f->fail_write_n = f->fail_sync_n = f->short_write_n = f->die_n = 0;
    pthread_mutex_unlock(&f->mu);
}

void fsf_set_page_bytes(fsf *f, size_t bytes) {
    assert(f != NULL && bytes > 0);
    pthread_mutex_lock(&f->mu);
    f->page_bytes = bytes;
    pthread_mutex_unlock(&f->mu);
}

int fsf_flip(fsf *f, const char *path, uint64_t offset, uint8_t mask) {
    assert(f != NULL && path != NULL);
    pthread_mutex_lock(&f->mu);
    fsf_node *n = fsf__resolve(f, path);
    int rv = (n == NULL || n->is_dir) ? KV_EMISSING : 0;
    if (rv == 0 && offset >= n->size)
        rv = KV_EINVAL;
    if (rv == 0) {
        n->data[offset] ^= mask;
        if (offset < n->dur_size)
            n->dur[offset] ^= mask;
    }
    pthread_mutex_unlock(&f->mu);
    return rv;
}

int fsf_set_readonly(fsf *f, const char *dir, bool ro) {
    assert(f != NULL && dir != NULL);
    pthread_mutex_lock(&f->mu);
    fsf_node *n = fsf__resolve(f, dir);
    int rv = (n == NULL || !n->is_dir) ? KV_EMISSING : 0;
    if (rv == 0)
        n->readonly = ro;
    pthread_mutex_unlock(&f->mu);
    return rv;
}

int fsf_size(fsf *f, const char *path, uint64_t *out) {
    assert(f != NULL && path != NULL && out != NULL);
    pthread_mutex_lock(&f->mu);
    fsf_node *n = fsf__resolve(f, path);
    int rv = (n == NULL || n->is_dir) ? KV_EMISSING : 0;
    if (rv == 0)
        *out = n->size;
    pthread_mutex_unlock(&f->mu);
    return rv;
}

void fsf_set_sync_hook(fsf *f, void (*hook)(void *arg), void *arg) {
    pthread_mutex_lock(&f->mu);
    f->hook = hook;
    f->hook_arg = arg;
    pthread_mutex_unlock(&f->mu);
}
