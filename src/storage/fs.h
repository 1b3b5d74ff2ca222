/*
 * The file interface: every byte kv puts on disk goes through a kv_fs, so
 * tests can swap the real half (POSIX) for the fake half (fs_fake.h: an
 * in-memory file system that injects faults and simulates crashes).
 *
 * Contract, for every call: 0 on success or a negative KV_E* code.
 *  - A write or sync error is KV_EIO; the caller fail-stops. A sync is never
 *    retried (docs/rules.md, "fsync errors are final (fsyncgate)"): after a failed sync the file's
 *    contents are unknown.
 *  - Durability: data written with pwrite is durable only after sync() of
 *    that file returned 0. A file created, renamed or unlinked is durable in
 *    its directory only after sync_dir() of that directory returned 0
 *    (docs/rules.md, etcd#14098).
 *  - Paths are ordinary C strings; the fake half treats them as keys.
 */
#ifndef KV_STORAGE_FS_H
#define KV_STORAGE_FS_H

#include <stddef.h>
#include <stdint.h>

typedef struct kv_fs kv_fs;
typedef struct kv_file kv_file;

enum kv_fs_open_flags {
    KV_FS_READ = 0,        /* read only; KV_EMISSING when absent */
    KV_FS_WRITE = 1 << 0,  /* read and write */
    KV_FS_CREATE = 1 << 1, /* create when absent (implies WRITE) */
    KV_FS_EXCL = 1 << 2,   /* with CREATE: KV_EEXIST when present */
};

struct kv_fs_ops {
    int (*open)(kv_fs *fs, const char *path, int flags, kv_file **out);
    /* Reads up to len bytes at off; *got < len only at end of file. */
    int (*pread)(kv_file *f, void *buf, size_t len, uint64_t off, size_t *got);
    /* Writes all len bytes at off, or returns KV_EIO (a short write is an error). */
    int (*pwrite)(kv_file *f, const void *buf, size_t len, uint64_t off);
    /* Makes the file's data durable (fdatasync). KV_EIO is final. */
    int (*sync)(kv_file *f);
    int (*truncate)(kv_file *f, uint64_t size);
    int (*size)(kv_file *f, uint64_t *out);
    /* Closes and frees f; never fails (data not synced may be lost). */
    void (*close)(kv_file *f);

    int (*unlink)(kv_fs *fs, const char *path);
    int (*rename)(kv_fs *fs, const char *from, const char *to);
    int (*mkdir)(kv_fs *fs, const char *path); /* 0 also when it exists */
    int (*rmdir)(kv_fs *fs, const char *path); /* an empty directory */
    int (*sync_dir)(kv_fs *fs, const char *dir);
    /* Names in dir (not "." or ".."), sorted bytewise. *names is an array of
     * *count strings; the caller frees it with kv_fs_free_list(). */
    int (*list)(kv_fs *fs, const char *dir, char ***names, size_t *count);
    /* 0 when path exists, KV_EMISSING when not. */
    int (*exists)(kv_fs *fs, const char *path);
};

struct kv_fs {
    const struct kv_fs_ops *ops;
    void *impl;
};

/* The real half: POSIX files. A static instance; never freed. */
kv_fs *kv_fs_posix(void);

/* POSIX files whose sync and sync_dir do nothing (kvd --unsafe-no-fsync):
 * writes are lost at a power failure or kernel crash. Tests use it to prove
 * they notice lost writes. A static instance; never freed. */
kv_fs *kv_fs_posix_unsafe_nosync(void);

void kv_fs_free_list(char **names, size_t count);

/* Helpers built on the ops (fs.c), used by every module that writes files. */

/* Longest path the helpers below build. */
#define KV_FS_PATH_BYTES_MAX 4096u

/* Removes dir and everything under it (0 also when it is missing). */
int kv_fs_rmtree(kv_fs *fs, const char *dir);

/* Writes "dir/name" into buf[cap]. KV_EINVAL when it does not fit. */
int kv_fs_join(char *buf, size_t cap, const char *dir, const char *name);

/* The directory holding path ("." when none; trailing slashes ignored),
 * into buf[cap]. */
void kv_fs_dirname(const char *path, char *buf, size_t cap);

/* Syncs the directory holding path: after creating, renaming or removing
 * path, the change is durable only once this returned 0. */
int kv_fs_sync_parent(kv_fs *fs, const char *path);

/* Writes buf to path atomically and durably: a temporary file, sync,
 * rename over path, sync of the directory. */
int kv_fs_write_atomic(kv_fs *fs, const char *path, const void *buf, size_t len);

/* Reads a whole file of at most max bytes into a malloc'd buffer the caller
 * frees. KV_ETOOBIG past max, KV_EMISSING when absent. */
int kv_fs_read_all(kv_fs *fs, const char *path, size_t max, void **buf, size_t *len);

#endif /* KV_STORAGE_FS_H */
