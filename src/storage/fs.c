/* The real half of the file interface (fs.h): POSIX files. */
#include "storage/fs.h"

#include "kv/errors.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct kv_file {
    int fd;
};

static int fs__errno(int e) {
    switch (e) {
    case ENOENT:
        return KV_EMISSING;
    case EEXIST:
    case ENOTEMPTY:
        return KV_EEXIST;
    case EACCES:
    case EPERM:
    case EROFS:
        return KV_EPERM;
    case ENOSPC:
    case EDQUOT:
        return KV_ENOSPACE;
    case ENOMEM:
        return KV_ENOMEM;
    default:
        return KV_EIO;
    }
}

static int posix_open(kv_fs *fs, const char *path, int flags, kv_file **out) {
    (void)fs;
    int oflags = O_CLOEXEC;
    if (flags & (KV_FS_WRITE | KV_FS_CREATE))
        oflags |= O_RDWR;
    else
        oflags |= O_RDONLY;
    if (flags & KV_FS_CREATE)
        oflags |= O_CREAT;
    if (flags & KV_FS_EXCL)
        oflags |= O_EXCL;
    int fd = open(path, oflags, 0644);
    if (fd < 0)
        return fs__errno(errno);
    kv_file *f = malloc(sizeof *f);
    if (f == NULL) {
        close(fd);
        return KV_ENOMEM;
    }
    f->fd = fd;
    *out = f;
    return 0;
}

static int posix_pread(kv_file *f, void *buf, size_t len, uint64_t off, size_t *got) {
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(f->fd, (char *)buf + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return KV_EIO;
        if (n == 0)
            break;
        done += (size_t)n;
    }
    *got = done;
    return 0;
}

static int posix_pwrite(kv_file *f, const void *buf, size_t len, uint64_t off) {
    size_t done = 0;
    while (done < len) {
        ssize_t n = pwrite(f->fd, (const char *)buf + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == ENOSPC ? KV_ENOSPACE : KV_EIO;
        done += (size_t)n;
    }
    return 0;
}

static int posix_sync(kv_file *f) {
    /* Never retried on failure (docs/rules.md, fsyncgate): the caller stops. */
    return fdatasync(f->fd) == 0 ? 0 : KV_EIO;
}

static int posix_truncate(kv_file *f, uint64_t size) {
    return ftruncate(f->fd, (off_t)size) == 0 ? 0 : KV_EIO;
}

static int posix_size(kv_file *f, uint64_t *out) {
    struct stat st;
    if (fstat(f->fd, &st) != 0)
        return KV_EIO;
    *out = (uint64_t)st.st_size;
    return 0;
}

static void posix_close(kv_file *f) {
    if (f == NULL)
        return;
    close(f->fd);
    free(f);
}

static int posix_unlink(kv_fs *fs, const char *path) {
    (void)fs;
    return unlink(path) == 0 ? 0 : fs__errno(errno);
}

static int posix_rename(kv_fs *fs, const char *from, const char *to) {
    (void)fs;
    return rename(from, to) == 0 ? 0 : fs__errno(errno);
}

static int posix_mkdir(kv_fs *fs, const char *path) {
    (void)fs;
    if (mkdir(path, 0755) == 0 || errno == EEXIST)
        return 0;
    return fs__errno(errno);
}

static int posix_rmdir(kv_fs *fs, const char *path) {
    (void)fs;
    return rmdir(path) == 0 ? 0 : fs__errno(errno);
}

static int posix_sync_dir(kv_fs *fs, const char *dir) {
    (void)fs;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return fs__errno(errno);
    int rv = fsync(fd) == 0 ? 0 : KV_EIO;
    close(fd);
    return rv;
}

static int name_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int posix_list(kv_fs *fs, const char *dir, char ***names, size_t *count) {
    (void)fs;
    DIR *d = opendir(dir);
    if (d == NULL)
        return fs__errno(errno);
    char **v = NULL;
    size_t n = 0, cap = 0;
    int rv = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            char **nv = realloc(v, cap * sizeof *v);
            if (nv == NULL) {
                rv = KV_ENOMEM;
                break;
            }
            v = nv;
        }
        if ((v[n] = strdup(e->d_name)) == NULL) {
            rv = KV_ENOMEM;
            break;
        }
        n++;
    }
    closedir(d);
    if (rv != 0) {
        kv_fs_free_list(v, n);
        return rv;
    }
    if (n > 0)
        qsort(v, n, sizeof *v, name_cmp);
    *names = v;
    *count = n;
    return 0;
}

static int posix_exists(kv_fs *fs, const char *path) {
    (void)fs;
    struct stat st;
    return stat(path, &st) == 0 ? 0 : KV_EMISSING;
}

static const struct kv_fs_ops posix_ops = {
    .open = posix_open,
    .pread = posix_pread,
    .pwrite = posix_pwrite,
    .sync = posix_sync,
    .truncate = posix_truncate,
    .size = posix_size,
    .close = posix_close,
    .unlink = posix_unlink,
    .rename = posix_rename,
    .mkdir = posix_mkdir,
    .rmdir = posix_rmdir,
    .sync_dir = posix_sync_dir,
    .list = posix_list,
    .exists = posix_exists,
};

kv_fs *kv_fs_posix(void) {
    static kv_fs fs = {.ops = &posix_ops, .impl = NULL};
    return &fs;
}

/* --unsafe-no-fsync: POSIX files whose syncs do nothing. For tests that
 * must show they notice lost writes; never for data anyone needs. */
static int nosync_sync(kv_file *f) {
    (void)f;
    return 0;
}

static int nosync_sync_dir(kv_fs *fs, const char *dir) {
    (void)fs;
    (void)dir;
    return 0;
}

kv_fs *kv_fs_posix_unsafe_nosync(void) {
    static struct kv_fs_ops ops;
    static kv_fs fs = {.ops = &ops, .impl = NULL};
    ops = posix_ops;
    ops.sync = nosync_sync;
    ops.sync_dir = nosync_sync_dir;
    return &fs;
}

void kv_fs_free_list(char **names, size_t count) {
    for (size_t i = 0; i < count; i++)
        free(names[i]);
    free(names);
}

int kv_fs_join(char *buf, size_t cap, const char *dir, const char *name) {
    assert(buf != NULL && cap > 0);
    assert(dir != NULL && name != NULL);
    int n = snprintf(buf, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap)
        return KV_EINVAL;
    return 0;
}

void kv_fs_dirname(const char *path, char *buf, size_t cap) {
    assert(path != NULL && buf != NULL && cap > 1);
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    while (n > 0 && path[n - 1] != '/')
        n--;
    while (n > 1 && path[n - 1] == '/')
        n--;
    if (n == 0)
        snprintf(buf, cap, ".");
    else
        snprintf(buf, cap, "%.*s", (int)n, path);
}

int kv_fs_sync_parent(kv_fs *fs, const char *path) {
    char dir[4096];
    kv_fs_dirname(path, dir, sizeof dir);
    return fs->ops->sync_dir(fs, dir);
}

int kv_fs_write_atomic(kv_fs *fs, const char *path, const void *buf, size_t len) {
    char tmp[4096], dir[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return KV_EINVAL;
    kv_fs_dirname(path, dir, sizeof dir);
    kv_file *f = NULL;
    (void)fs->ops->unlink(fs, tmp);
    int rv = fs->ops->open(fs, tmp, KV_FS_CREATE | KV_FS_EXCL, &f);
    if (rv != 0)
        return rv;
    rv = fs->ops->pwrite(f, buf, len, 0);
    if (rv == 0)
        rv = fs->ops->sync(f);
    fs->ops->close(f);
    if (rv == 0)
        rv = fs->ops->rename(fs, tmp, path);
    if (rv == 0)
        rv = fs->ops->sync_dir(fs, dir);
    else
        (void)fs->ops->unlink(fs, tmp);
    return rv;
}

int kv_fs_read_all(kv_fs *fs, const char *path, size_t max, void **buf, size_t *len) {
    kv_file *f = NULL;
    int rv = fs->ops->open(fs, path, KV_FS_READ, &f);
    if (rv != 0)
        return rv;
    uint64_t size = 0;
    rv = fs->ops->size(f, &size);
    if (rv == 0 && size > max)
        rv = KV_ETOOBIG;
    char *p = NULL;
    if (rv == 0 && (p = malloc(size ? size : 1)) == NULL)
        rv = KV_ENOMEM;
    size_t got = 0;
    if (rv == 0)
        rv = fs->ops->pread(f, p, size, 0, &got);
    if (rv == 0 && got != size)
        rv = KV_EIO;
    fs->ops->close(f);
    if (rv != 0) {
        free(p);
        return rv;
    }
    assert(got == size);
    *buf = p;
    *len = got;
    return 0;
}

int kv_fs_rmtree(kv_fs *fs, const char *dir) {
    char **names = NULL;
    size_t count = 0;
    int rv = fs->ops->list(fs, dir, &names, &count);
    if (rv == KV_EMISSING)
        return 0;
    if (rv != 0)
        return rv;
    char path[KV_FS_PATH_BYTES_MAX];
    for (size_t i = 0; i < count && rv == 0; i++) {
        rv = kv_fs_join(path, KV_FS_PATH_BYTES_MAX, dir, names[i]);
        if (rv == 0 && fs->ops->unlink(fs, path) != 0)
            rv = kv_fs_rmtree(fs, path); /* a directory (RocksDB's archive/) */
    }
    kv_fs_free_list(names, count);
    if (rv == 0)
        rv = fs->ops->rmdir(fs, dir);
    return rv;
}
