/*
 * lossyfs: a FUSE file system that keeps everything in memory and forgets,
 * on command, whatever was not made durable (the model is lfs.h's, which
 * follows src/storage/fs_fake.h). kv-jepsen mounts one under each node's
 * data dir; a crash is kill -9 of kvd, then a write to the control file
 *
 *   MOUNT/.lossyfs-crash     "drop": drop everything not synced;
 *                            "torn SEED": keep a seeded prefix of each
 *                            file's unsynced writes (lfs.h)
 *
 * which answers only once the drop is done, so the next kvd start sees the
 * disk as a power loss would have left it.
 *
 *   lossyfs MOUNTPOINT [-d]      runs in the foreground until unmounted or
 *                                SIGTERM (then unmounts)
 *
 * The kernel caches nothing (direct_io, zero attribute and entry timeouts),
 * so what a reader sees is always the model's current state. One thread
 * (-s): every call is serialized, as lfs wants. Locks (flock, fcntl) are
 * left to the kernel, local to this machine, which is all kvd needs.
 */
#define FUSE_USE_VERSION 35
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "lfs.h"

#define CTL_PATH "/.lossyfs-crash"
#define CTL_FH 1u /* never a node pointer */

static lfs *FS;

static lfs_node *fh_node(const struct fuse_file_info *fi) {
    return (lfs_node *)(uintptr_t)fi->fh;
}

static void *lo_init(struct fuse_conn_info *conn, struct fuse_config *cfg) {
    (void)conn;
    cfg->use_ino = 1;
    cfg->hard_remove = 1;
    cfg->direct_io = 1;
    cfg->kernel_cache = 0;
    cfg->entry_timeout = 0;
    cfg->attr_timeout = 0;
    cfg->negative_timeout = 0;
    return NULL;
}

static int lo_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
    if (strcmp(path, CTL_PATH) == 0) {
        memset(st, 0, sizeof *st);
        st->st_mode = S_IFREG | 0200;
        st->st_nlink = 1;
        return 0;
    }
    if (fi != NULL && fi->fh > CTL_FH)
        return lfs_fstat(FS, fh_node(fi), st);
    return lfs_getattr(FS, path, st);
}

static int lo_open(const char *path, struct fuse_file_info *fi) {
    if (strcmp(path, CTL_PATH) == 0) {
        fi->fh = CTL_FH;
        fi->direct_io = 1;
        return 0;
    }
    lfs_node *h;
    int rc = lfs_open(FS, path, false, false, 0, &h);
    if (rc == 0 && (fi->flags & O_TRUNC))
        rc = lfs_ftruncate(FS, h, 0);
    if (rc == 0) {
        fi->fh = (uint64_t)(uintptr_t)h;
        fi->direct_io = 1;
    }
    return rc;
}

static int lo_create(const char *path, mode_t mode, struct fuse_file_info *fi) {
    if (strcmp(path, CTL_PATH) == 0)
        return -EEXIST;
    lfs_node *h;
    int rc = lfs_open(FS, path, true, (fi->flags & O_EXCL) != 0, mode, &h);
    if (rc == 0 && (fi->flags & O_TRUNC))
        rc = lfs_ftruncate(FS, h, 0);
    if (rc == 0) {
        fi->fh = (uint64_t)(uintptr_t)h;
        fi->direct_io = 1;
    }
    return rc;
}

static int lo_release(const char *path, struct fuse_file_info *fi) {
    (void)path;
    if (fi->fh > CTL_FH)
        lfs_release(FS, fh_node(fi));
    return 0;
}

static int lo_read(const char *path, char *buf, size_t n, off_t off, struct fuse_file_info *fi) {
    (void)path;
    if (fi->fh == CTL_FH)
        return 0;
    return (int)lfs_read(FS, fh_node(fi), buf, n, (uint64_t)off);
}

static int lo_write(const char *path, const char *buf, size_t n, off_t off,
                    struct fuse_file_info *fi) {
    (void)path;
    if (fi->fh == CTL_FH) {
        /* "torn SEED": fs_fake's torn crash; anything else: drop. */
        char cmd[64];
        size_t k = n < sizeof cmd - 1 ? n : sizeof cmd - 1;
        memcpy(cmd, buf, k);
        cmd[k] = 0;
        bool torn = strncmp(cmd, "torn ", 5) == 0;
        lfs_crash_mode(FS, torn, torn ? strtoull(cmd + 5, NULL, 10) : 0);
        lfs_stats s = lfs_get_stats(FS);
        fprintf(stderr,
                "lossyfs: crash %" PRIu64 ": unsynced changes dropped (%" PRIu64
                " bytes so far); %" PRIu64 " nodes, %" PRIu64 " bytes held\n",
                s.crashes, s.dropped_bytes, s.nodes, s.bytes);
        return (int)n;
    }
    return (int)lfs_write(FS, fh_node(fi), buf, n, (uint64_t)off);
}

static int lo_truncate(const char *path, off_t size, struct fuse_file_info *fi) {
    if (fi != NULL && fi->fh > CTL_FH)
        return lfs_ftruncate(FS, fh_node(fi), (uint64_t)size);
    return lfs_truncate(FS, path, (uint64_t)size);
}

static int lo_fsync(const char *path, int datasync, struct fuse_file_info *fi) {
    (void)path;
    (void)datasync; /* fdatasync keeps the size too: the same here */
    return fi->fh > CTL_FH ? lfs_fsync(FS, fh_node(fi)) : 0;
}

static int lo_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi) {
    (void)datasync;
    (void)fi;
    return lfs_fsyncdir(FS, path);
}

static int lo_mkdir(const char *path, mode_t mode) {
    return lfs_mkdir(FS, path, mode);
}

static int lo_rmdir(const char *path) {
    return lfs_rmdir(FS, path);
}

static int lo_unlink(const char *path) {
    return lfs_unlink(FS, path);
}

static int lo_rename(const char *from, const char *to, unsigned int flags) {
    return lfs_rename(FS, from, to, flags);
}

static int lo_link(const char *from, const char *to) {
    return lfs_link(FS, from, to);
}

static int lo_chmod(const char *path, mode_t mode, struct fuse_file_info *fi) {
    (void)fi;
    return lfs_chmod(FS, path, mode);
}

static int lo_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi) {
    (void)path, (void)uid, (void)gid, (void)fi;
    return 0;
}

static int lo_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi) {
    (void)path, (void)tv, (void)fi;
    return 0;
}

typedef struct dir_fill {
    void *buf;
    fuse_fill_dir_t filler;
} dir_fill;

static void fill_one(void *arg, const char *name, bool dir) {
    dir_fill *d = arg;
    (void)dir;
    d->filler(d->buf, name, NULL, 0, 0);
}

static int lo_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags) {
    (void)off, (void)fi, (void)flags;
    dir_fill d = {buf, filler};
    filler(buf, ".", NULL, 0, 0);
    filler(buf, "..", NULL, 0, 0);
    return lfs_readdir(FS, path, fill_one, &d);
}

static int lo_statfs(const char *path, struct statvfs *st) {
    (void)path;
    memset(st, 0, sizeof *st);
    st->f_bsize = st->f_frsize = 4096;
    st->f_blocks = st->f_bfree = st->f_bavail = 1u << 22; /* 16 GiB */
    st->f_files = st->f_ffree = st->f_favail = 1u << 20;
    st->f_namemax = LFS_NAME_BYTES_MAX;
    return 0;
}

static int lo_fallocate(const char *path, int mode, off_t off, off_t len,
                        struct fuse_file_info *fi) {
    (void)path;
    if (mode != 0 || fi == NULL || fi->fh <= CTL_FH)
        return -EOPNOTSUPP;
    struct stat st;
    lfs_fstat(FS, fh_node(fi), &st);
    if (off + len <= st.st_size)
        return 0;
    return lfs_ftruncate(FS, fh_node(fi), (uint64_t)(off + len));
}

static const struct fuse_operations ops = {
    .init = lo_init,
    .getattr = lo_getattr,
    .open = lo_open,
    .create = lo_create,
    .release = lo_release,
    .read = lo_read,
    .write = lo_write,
    .truncate = lo_truncate,
    .fsync = lo_fsync,
    .fsyncdir = lo_fsyncdir,
    .mkdir = lo_mkdir,
    .rmdir = lo_rmdir,
    .unlink = lo_unlink,
    .rename = lo_rename,
    .link = lo_link,
    .chmod = lo_chmod,
    .chown = lo_chown,
    .utimens = lo_utimens,
    .readdir = lo_readdir,
    .statfs = lo_statfs,
    .fallocate = lo_fallocate,
};

int main(int argc, char **argv) {
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: lossyfs MOUNTPOINT [-d]\n");
        return 2;
    }
    FS = lfs_new();
    if (FS == NULL)
        return 1;
    char *fargv[] = {argv[0],
                     argv[1],
                     "-f",
                     "-s",
                     "-o",
                     "fsname=lossyfs,auto_unmount",
                     argc > 2 ? argv[2] : NULL,
                     NULL};
    int fargc = argc > 2 ? 7 : 6;
    int rc = fuse_main(fargc, fargv, &ops, NULL);
    lfs_free(FS);
    return rc;
}
