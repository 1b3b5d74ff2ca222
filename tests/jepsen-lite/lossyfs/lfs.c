/*
 * lfs: the model of lossyfs (see lfs.h).
 *
 * A node is a file or a directory. Its references are counted: one per
 * entry naming it, current or durable, one per open handle, one for the
 * root. It is freed at zero. A file keeps two byte arrays, current and
 * durable, and the range [dirty_lo, dirty_hi) outside which the two agree
 * below the smaller size (invariant D): every write extends the range by its
 * bytes and every growth of the size by the new bytes, so lfs_fsync copies
 * only that range.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "lfs.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct lfs_ent {
    char *name;
    lfs_node *node;
} lfs_ent;

/* One unsynced change to a file, kept in order for a torn crash: a write
 * (data != NULL) or a change of size. */
typedef struct lfs_op {
    uint64_t off, len; /* write: bytes [off, off+len); size change: len = new size */
    uint8_t *data;
    struct lfs_op *next;
} lfs_op;

typedef struct lfs_ents {
    lfs_ent *v;
    size_t n, cap;
} lfs_ents;

struct lfs_node {
    bool dir;
    mode_t mode;
    uint32_t refs;
    uint32_t links; /* current entries naming it */
    uint64_t ino;
    struct timespec mtime;
    /* files */
    uint8_t *data, *ddata;
    uint64_t size, dsize, cap, dcap;
    uint64_t dirty_lo, dirty_hi; /* empty when lo >= hi */
    lfs_op *ops, **ops_tail;     /* unsynced changes, oldest first */
    /* directories */
    lfs_ents cur, dur;
    lfs_node *prev, *next; /* every live node */
};

struct lfs {
    lfs_node *root;
    lfs_node *all;
    uint64_t next_ino;
    lfs_stats st;
};

/* ---- nodes --------------------------------------------------------------- */

static lfs_node *node_new(lfs *fs, bool dir, mode_t mode) {
    lfs_node *n = calloc(1, sizeof *n);
    if (n == NULL)
        return NULL;
    n->dir = dir;
    n->mode = (mode & 07777) | (dir ? S_IFDIR : S_IFREG);
    n->ino = ++fs->next_ino;
    n->ops_tail = &n->ops;
    clock_gettime(CLOCK_REALTIME, &n->mtime);
    n->next = fs->all;
    if (fs->all != NULL)
        fs->all->prev = n;
    fs->all = n;
    fs->st.nodes++;
    return n;
}

static void node_unref(lfs *fs, lfs_node *n);

static void ops_clear(lfs_node *n) {
    while (n->ops != NULL) {
        lfs_op *o = n->ops;
        n->ops = o->next;
        free(o->data);
        free(o);
    }
    n->ops_tail = &n->ops;
}

/* Records an unsynced change (data: a write's bytes, NULL: a size change). */
static int ops_add(lfs_node *n, uint64_t off, uint64_t len, const void *data) {
    lfs_op *o = calloc(1, sizeof *o);
    if (o == NULL || (data != NULL && (o->data = malloc(len ? len : 1)) == NULL)) {
        free(o);
        return -ENOMEM;
    }
    o->off = off;
    o->len = len;
    if (data != NULL)
        memcpy(o->data, data, len);
    if (n->ops_tail == NULL)
        n->ops_tail = &n->ops;
    *n->ops_tail = o;
    n->ops_tail = &o->next;
    return 0;
}

static void ents_clear(lfs *fs, lfs_ents *e) {
    for (size_t i = 0; i < e->n; i++) {
        free(e->v[i].name);
        node_unref(fs, e->v[i].node);
    }
    free(e->v);
    memset(e, 0, sizeof *e);
}

static void node_unref(lfs *fs, lfs_node *n) {
    assert(n->refs > 0);
    if (--n->refs > 0)
        return;
    if (n->prev != NULL)
        n->prev->next = n->next;
    else
        fs->all = n->next;
    if (n->next != NULL)
        n->next->prev = n->prev;
    fs->st.bytes -= n->cap + n->dcap;
    fs->st.nodes--;
    ents_clear(fs, &n->cur);
    ents_clear(fs, &n->dur);
    ops_clear(n);
    free(n->data);
    free(n->ddata);
    free(n);
}

static int ents_add(lfs_ents *e, const char *name, lfs_node *node) {
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 8;
        lfs_ent *v = realloc(e->v, cap * sizeof *v);
        if (v == NULL)
            return -ENOMEM;
        e->v = v;
        e->cap = cap;
    }
    char *nm = strdup(name);
    if (nm == NULL)
        return -ENOMEM;
    e->v[e->n++] = (lfs_ent){nm, node};
    node->refs++;
    return 0;
}

static lfs_ent *ents_find(lfs_ents *e, const char *name) {
    for (size_t i = 0; i < e->n; i++)
        if (strcmp(e->v[i].name, name) == 0)
            return &e->v[i];
    return NULL;
}

/* Removes the entry (its node loses a reference). */
static void ents_del(lfs *fs, lfs_ents *e, lfs_ent *x) {
    lfs_node *n = x->node;
    free(x->name);
    *x = e->v[--e->n];
    node_unref(fs, n);
}

/* e := a copy of src (new references first, then the old ones dropped). */
static int ents_copy(lfs *fs, lfs_ents *e, const lfs_ents *src) {
    lfs_ents copy = {0};
    for (size_t i = 0; i < src->n; i++)
        if (ents_add(&copy, src->v[i].name, src->v[i].node) != 0) {
            ents_clear(fs, &copy);
            return -ENOMEM;
        }
    ents_clear(fs, e);
    *e = copy;
    return 0;
}

/* ---- paths --------------------------------------------------------------- */

/* Walks path to its node; -ENOENT, -ENOTDIR, -ENAMETOOLONG. */
static int walk(lfs *fs, const char *path, lfs_node **out) {
    if (strlen(path) >= LFS_PATH_BYTES_MAX)
        return -ENAMETOOLONG;
    lfs_node *n = fs->root;
    const char *p = path;
    while (*p != 0) {
        while (*p == '/')
            p++;
        if (*p == 0)
            break;
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char name[LFS_NAME_BYTES_MAX + 1];
        if (len > LFS_NAME_BYTES_MAX)
            return -ENAMETOOLONG;
        memcpy(name, p, len);
        name[len] = 0;
        if (!n->dir)
            return -ENOTDIR;
        lfs_ent *e = ents_find(&n->cur, name);
        if (e == NULL)
            return -ENOENT;
        n = e->node;
        p += len;
    }
    *out = n;
    return 0;
}

/* Splits path into its parent directory node and last name. */
static int walk_parent(lfs *fs, const char *path, lfs_node **parent, char *name) {
    char buf[LFS_PATH_BYTES_MAX];
    if (strlen(path) >= sizeof buf)
        return -ENAMETOOLONG;
    strcpy(buf, path);
    size_t len = strlen(buf);
    while (len > 1 && buf[len - 1] == '/')
        buf[--len] = 0;
    char *slash = strrchr(buf, '/');
    if (slash == NULL || slash[1] == 0)
        return -EINVAL; /* the root has no parent here */
    if (strlen(slash + 1) > LFS_NAME_BYTES_MAX)
        return -ENAMETOOLONG;
    strcpy(name, slash + 1);
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return -EINVAL;
    *slash = 0;
    int rc = walk(fs, buf[0] ? buf : "/", parent);
    if (rc == 0 && !(*parent)->dir)
        rc = -ENOTDIR;
    return rc;
}

/* ---- the file system ------------------------------------------------------ */

lfs *lfs_new(void) {
    lfs *fs = calloc(1, sizeof *fs);
    if (fs == NULL)
        return NULL;
    fs->root = node_new(fs, true, 0755);
    if (fs->root == NULL) {
        free(fs);
        return NULL;
    }
    fs->root->refs = 1;
    fs->root->links = 1;
    return fs;
}

void lfs_free(lfs *fs) {
    if (fs == NULL)
        return;
    /* Cycles of durable entries may keep nodes alive: free the list. */
    while (fs->all != NULL) {
        lfs_node *n = fs->all;
        fs->all = n->next;
        for (size_t i = 0; i < n->cur.n; i++)
            free(n->cur.v[i].name);
        for (size_t i = 0; i < n->dur.n; i++)
            free(n->dur.v[i].name);
        free(n->cur.v);
        free(n->dur.v);
        ops_clear(n);
        free(n->data);
        free(n->ddata);
        free(n);
    }
    free(fs);
}

static void fill_stat(const lfs_node *n, struct stat *st) {
    memset(st, 0, sizeof *st);
    st->st_mode = n->mode;
    st->st_ino = n->ino;
    st->st_nlink = n->dir ? 2 : n->links;
    st->st_size = n->dir ? 4096 : (off_t)n->size;
    st->st_blksize = 4096;
    st->st_blocks = (blkcnt_t)((n->size + 511) / 512);
    st->st_mtim = st->st_ctim = st->st_atim = n->mtime;
}

int lfs_getattr(lfs *fs, const char *path, struct stat *st) {
    lfs_node *n;
    int rc = walk(fs, path, &n);
    if (rc == 0)
        fill_stat(n, st);
    return rc;
}

int lfs_fstat(lfs *fs, lfs_node *h, struct stat *st) {
    (void)fs;
    fill_stat(h, st);
    return 0;
}

/* Adds a new node named by path. */
static int make(lfs *fs, const char *path, bool dir, mode_t mode, lfs_node **out) {
    lfs_node *parent;
    char name[LFS_NAME_BYTES_MAX + 1];
    int rc = walk_parent(fs, path, &parent, name);
    if (rc != 0)
        return rc;
    if (ents_find(&parent->cur, name) != NULL)
        return -EEXIST;
    lfs_node *n = node_new(fs, dir, mode);
    if (n == NULL)
        return -ENOMEM;
    n->refs = 1; /* ours until the entry holds it */
    rc = ents_add(&parent->cur, name, n);
    if (rc == 0) {
        n->links = 1;
        parent->mtime = n->mtime;
        *out = n;
    }
    node_unref(fs, n);
    return rc;
}

int lfs_mkdir(lfs *fs, const char *path, mode_t mode) {
    lfs_node *n;
    return make(fs, path, true, mode, &n);
}

/* Removes path's entry; want_dir: rmdir (must be empty) else unlink. */
static int remove_entry(lfs *fs, const char *path, bool want_dir) {
    lfs_node *parent;
    char name[LFS_NAME_BYTES_MAX + 1];
    int rc = walk_parent(fs, path, &parent, name);
    if (rc != 0)
        return rc;
    lfs_ent *e = ents_find(&parent->cur, name);
    if (e == NULL)
        return -ENOENT;
    if (e->node->dir != want_dir)
        return want_dir ? -ENOTDIR : -EISDIR;
    if (want_dir && e->node->cur.n > 0)
        return -ENOTEMPTY;
    e->node->links--;
    ents_del(fs, &parent->cur, e);
    return 0;
}

int lfs_rmdir(lfs *fs, const char *path) {
    return remove_entry(fs, path, true);
}

int lfs_unlink(lfs *fs, const char *path) {
    return remove_entry(fs, path, false);
}

/* Checks a rename's target: may it be replaced by a node of kind dir? */
static int rename_target_ok(const lfs_ent *t, const lfs_node *src, unsigned flags) {
    if (t == NULL)
        return 0;
    if (flags & RENAME_NOREPLACE)
        return -EEXIST;
    if (t->node == src)
        return 1; /* same node: nothing to do */
    if (src->dir && !t->node->dir)
        return -ENOTDIR;
    if (!src->dir && t->node->dir)
        return -EISDIR;
    if (t->node->dir && t->node->cur.n > 0)
        return -ENOTEMPTY;
    return 0;
}

int lfs_rename(lfs *fs, const char *from, const char *to, unsigned flags) {
    if (flags & ~(unsigned)RENAME_NOREPLACE)
        return -EINVAL;
    size_t fl = strlen(from);
    if (strncmp(to, from, fl) == 0 && to[fl] == '/')
        return -EINVAL; /* into its own subtree */
    lfs_node *fp, *tp;
    char fname[LFS_NAME_BYTES_MAX + 1], tname[LFS_NAME_BYTES_MAX + 1];
    int rc = walk_parent(fs, from, &fp, fname);
    if (rc == 0)
        rc = walk_parent(fs, to, &tp, tname);
    if (rc != 0)
        return rc;
    lfs_ent *fe = ents_find(&fp->cur, fname);
    if (fe == NULL)
        return -ENOENT;
    lfs_node *n = fe->node;
    lfs_ent *te = ents_find(&tp->cur, tname);
    rc = rename_target_ok(te, n, flags);
    if (rc != 0)
        return rc < 0 ? rc : 0;
    n->refs++; /* pinned while its entries move */
    if (te != NULL) {
        te->node->links--;
        ents_del(fs, &tp->cur, te);
    }
    fe = ents_find(&fp->cur, fname); /* the array may have moved */
    ents_del(fs, &fp->cur, fe);
    rc = ents_add(&tp->cur, tname, n);
    if (rc != 0)
        n->links--;
    node_unref(fs, n);
    return rc;
}

int lfs_link(lfs *fs, const char *from, const char *to) {
    lfs_node *n, *tp;
    char tname[LFS_NAME_BYTES_MAX + 1];
    int rc = walk(fs, from, &n);
    if (rc == 0)
        rc = walk_parent(fs, to, &tp, tname);
    if (rc != 0)
        return rc;
    if (n->dir)
        return -EPERM;
    if (ents_find(&tp->cur, tname) != NULL)
        return -EEXIST;
    rc = ents_add(&tp->cur, tname, n);
    if (rc == 0)
        n->links++;
    return rc;
}

int lfs_chmod(lfs *fs, const char *path, mode_t mode) {
    lfs_node *n;
    int rc = walk(fs, path, &n);
    if (rc == 0)
        n->mode = (n->mode & S_IFMT) | (mode & 07777);
    return rc;
}

int lfs_open(lfs *fs, const char *path, bool create, bool excl, mode_t mode, lfs_node **out) {
    lfs_node *n;
    int rc = walk(fs, path, &n);
    if (rc == 0 && create && excl)
        return -EEXIST;
    if (rc == -ENOENT && create)
        rc = make(fs, path, false, mode, &n);
    if (rc != 0)
        return rc;
    n->refs++;
    *out = n;
    return 0;
}

void lfs_release(lfs *fs, lfs_node *h) {
    node_unref(fs, h);
}

/* ---- bytes ---------------------------------------------------------------- */

static int reserve(lfs *fs, uint8_t **buf, uint64_t *cap, uint64_t want) {
    if (want <= *cap)
        return 0;
    if (want > LFS_FILE_BYTES_MAX)
        return -EFBIG;
    uint64_t c = *cap ? *cap : 4096;
    while (c < want)
        c *= 2;
    uint8_t *b = realloc(*buf, c);
    if (b == NULL)
        return -ENOMEM;
    fs->st.bytes += c - *cap;
    *buf = b;
    *cap = c;
    return 0;
}

static void dirty(lfs_node *n, uint64_t lo, uint64_t hi) {
    if (lo >= hi)
        return;
    if (n->dirty_lo >= n->dirty_hi) {
        n->dirty_lo = lo;
        n->dirty_hi = hi;
        return;
    }
    n->dirty_lo = lo < n->dirty_lo ? lo : n->dirty_lo;
    n->dirty_hi = hi > n->dirty_hi ? hi : n->dirty_hi;
}

/* Sets the current size; growth is zero-filled and dirty (invariant D). */
static int resize(lfs *fs, lfs_node *n, uint64_t size) {
    int rc = reserve(fs, &n->data, &n->cap, size);
    if (rc == 0)
        rc = ops_add(n, 0, size, NULL);
    if (rc != 0)
        return rc;
    if (size > n->size) {
        memset(n->data + n->size, 0, size - n->size);
        dirty(n, n->size, size);
    }
    n->size = size;
    clock_gettime(CLOCK_REALTIME, &n->mtime);
    return 0;
}

ssize_t lfs_read(lfs *fs, lfs_node *h, void *buf, size_t n, uint64_t off) {
    (void)fs;
    if (h->dir)
        return -EISDIR;
    if (off >= h->size)
        return 0;
    size_t k = h->size - off < n ? (size_t)(h->size - off) : n;
    memcpy(buf, h->data + off, k);
    return (ssize_t)k;
}

ssize_t lfs_write(lfs *fs, lfs_node *h, const void *buf, size_t n, uint64_t off) {
    if (h->dir)
        return -EISDIR;
    if (n == 0)
        return 0; /* changes nothing, not even the size */
    if (off + n > LFS_FILE_BYTES_MAX)
        return -EFBIG;
    if (off + n > h->size) {
        int rc = resize(fs, h, off + n);
        if (rc != 0)
            return rc;
    }
    if (ops_add(h, off, n, buf) != 0)
        return -ENOMEM;
    memcpy(h->data + off, buf, n);
    dirty(h, off, off + n);
    clock_gettime(CLOCK_REALTIME, &h->mtime);
    fs->st.writes++;
    return (ssize_t)n;
}

int lfs_ftruncate(lfs *fs, lfs_node *h, uint64_t size) {
    return h->dir ? -EISDIR : resize(fs, h, size);
}

int lfs_truncate(lfs *fs, const char *path, uint64_t size) {
    lfs_node *n;
    int rc = walk(fs, path, &n);
    return rc != 0 ? rc : lfs_ftruncate(fs, n, size);
}

int lfs_fsync(lfs *fs, lfs_node *h) {
    fs->st.fsyncs++;
    if (h->dir)
        return 0; /* a directory's entries: lfs_fsyncdir */
    int rc = reserve(fs, &h->ddata, &h->dcap, h->size);
    if (rc != 0)
        return rc;
    uint64_t hi = h->dirty_hi < h->size ? h->dirty_hi : h->size;
    if (h->dirty_lo < hi)
        memcpy(h->ddata + h->dirty_lo, h->data + h->dirty_lo, hi - h->dirty_lo);
    h->dsize = h->size;
    h->dirty_lo = h->dirty_hi = 0;
    ops_clear(h);
    assert(h->dsize == h->size);
    return 0;
}

int lfs_fsyncdir(lfs *fs, const char *path) {
    lfs_node *n;
    int rc = walk(fs, path, &n);
    if (rc != 0)
        return rc;
    if (!n->dir)
        return -ENOTDIR;
    fs->st.fsyncdirs++;
    return ents_copy(fs, &n->dur, &n->cur);
}

int lfs_readdir(lfs *fs, const char *path, void (*fn)(void *arg, const char *name, bool dir),
                void *arg) {
    lfs_node *n;
    int rc = walk(fs, path, &n);
    if (rc != 0)
        return rc;
    if (!n->dir)
        return -ENOTDIR;
    for (size_t i = 0; i < n->cur.n; i++)
        fn(arg, n->cur.v[i].name, n->cur.v[i].node->dir);
    return 0;
}

/* ---- power loss ----------------------------------------------------------- */

static uint64_t lfs__rng(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A torn crash of one file: from its durable copy, a random prefix of its
 * unsynced changes in order; the last write kept may be cut short and the
 * rest of its bytes garbage (a torn sector). */
static void crash_torn_file(lfs *fs, lfs_node *n, uint64_t *seed) {
    size_t count = 0;
    for (lfs_op *o = n->ops; o != NULL; o = o->next)
        count++;
    size_t keep = (size_t)(lfs__rng(seed) % (count + 1));
    size_t i = 0;
    for (lfs_op *o = n->ops; o != NULL && i < keep; o = o->next, i++) {
        if (o->data == NULL) {
            if (reserve(fs, &n->data, &n->cap, o->len) != 0)
                abort();
            if (o->len > n->size)
                memset(n->data + n->size, 0, o->len - n->size);
            n->size = o->len;
            continue;
        }
        uint64_t whole = o->len;
        if (i + 1 == keep && lfs__rng(seed) % 2 == 0)
            whole = lfs__rng(seed) % (o->len + 1); /* torn: the rest is garbage */
        if (reserve(fs, &n->data, &n->cap, o->off + o->len) != 0)
            abort();
        if (o->off + o->len > n->size) {
            memset(n->data + n->size, 0, o->off + o->len - n->size);
            n->size = o->off + o->len;
        }
        if (whole > 0)
            memcpy(n->data + o->off, o->data, whole);
        for (uint64_t b = whole; b < o->len; b++)
            n->data[o->off + b] = (uint8_t)lfs__rng(seed);
    }
}

/* One node back to its durable state (a torn crash: plus a prefix of its
 * changes); what survives is on the disk now, so it becomes durable. */
static void crash_node(lfs *fs, lfs_node *n, bool torn, uint64_t *seed) {
    if (n->dir) {
        for (size_t i = 0; i < n->cur.n; i++)
            n->cur.v[i].node->links--;
        if (ents_copy(fs, &n->cur, &n->dur) != 0)
            abort(); /* out of memory mid-crash: the model cannot go on */
        for (size_t i = 0; i < n->cur.n; i++)
            n->cur.v[i].node->links++;
        return;
    }
    uint64_t lost = n->dirty_hi > n->dirty_lo ? n->dirty_hi - n->dirty_lo : 0;
    fs->st.dropped_bytes += lost;
    if (reserve(fs, &n->data, &n->cap, n->dsize) != 0)
        abort();
    if (n->dsize > 0)
        memcpy(n->data, n->ddata, n->dsize);
    n->size = n->dsize;
    n->dirty_lo = n->dirty_hi = 0;
    if (torn && n->ops != NULL) {
        crash_torn_file(fs, n, seed);
        n->dirty_lo = 0;
        n->dirty_hi = n->size;
        lfs_fsync(fs, n); /* what survived is on the disk */
        fs->st.fsyncs--;
    }
    ops_clear(n);
}

void lfs_crash_mode(lfs *fs, bool torn, uint64_t seed) {
    /* Pin every node while entries change, so none is freed under us. */
    size_t count = 0;
    for (lfs_node *n = fs->all; n != NULL; n = n->next)
        count++;
    lfs_node **all = malloc(count * sizeof *all);
    if (all == NULL)
        abort();
    size_t i = 0;
    for (lfs_node *n = fs->all; n != NULL; n = n->next) {
        all[i++] = n;
        n->refs++;
    }
    for (i = 0; i < count; i++)
        crash_node(fs, all[i], torn, &seed);
    for (i = 0; i < count; i++)
        node_unref(fs, all[i]);
    free(all);
    fs->st.crashes++;
}

void lfs_crash(lfs *fs) {
    lfs_crash_mode(fs, false, 0);
}

lfs_stats lfs_get_stats(const lfs *fs) {
    return fs->st;
}
