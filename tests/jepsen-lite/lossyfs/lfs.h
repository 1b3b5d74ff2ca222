/*
 * lfs: the in-memory model behind lossyfs, a file system that forgets what
 * was not made durable, as a power loss would. It has no FUSE in it, so its
 * unit tests (test_lfs.c) run anywhere; lossyfs.c mounts it with libfuse3.
 *
 * Model (the same as src/storage/fs_fake.h's FSF_CRASH_DROP, which is the
 * specification):
 *  - Each file has a durable copy of its bytes and size, taken by
 *    lfs_fsync() (fsync and fdatasync alike). Writes and truncations since
 *    then live only in the current copy.
 *  - Each directory has a durable copy of its entries (name -> node), taken
 *    by lfs_fsyncdir(). Creates, renames, links, unlinks, mkdirs and rmdirs
 *    since then change only the current entries; the node a name points to
 *    (and its synced bytes) is untouched by them.
 *  - lfs_crash(): every file's bytes return to its durable copy and every
 *    directory's entries to its durable entries. A node no durable entry
 *    reaches is gone. A new directory starts with no durable entries; a new
 *    file with a durable copy of zero bytes.
 *  - The root directory always exists (it is the mount point).
 *
 * Paths are absolute ("/a/b"); every call returns 0 (or a byte count) or a
 * negative errno, as FUSE wants. Not thread-safe: the caller serializes.
 *
 * Ownership: lfs_new()'s result is freed with lfs_free(). A handle from
 * lfs_open()/lfs_create() pins its node until lfs_release(), even across
 * unlink and crash (reads and writes on it still work, as on an unlinked
 * file).
 */
#ifndef KV_TESTS_LOSSYFS_LFS_H
#define KV_TESTS_LOSSYFS_LFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

typedef struct lfs lfs;
typedef struct lfs_node lfs_node;

/* Files larger than this are refused with -EFBIG: memory is the disk. */
#define LFS_FILE_BYTES_MAX (1ull << 30)
/* Path length (PATH_MAX-like) and name length. */
#define LFS_PATH_BYTES_MAX 4096u
#define LFS_NAME_BYTES_MAX 255u

lfs *lfs_new(void);
void lfs_free(lfs *fs);

int lfs_getattr(lfs *fs, const char *path, struct stat *st);
int lfs_mkdir(lfs *fs, const char *path, mode_t mode);
int lfs_rmdir(lfs *fs, const char *path);
int lfs_unlink(lfs *fs, const char *path);
/* flags: 0 or RENAME_NOREPLACE (-EINVAL for others). */
int lfs_rename(lfs *fs, const char *from, const char *to, unsigned flags);
int lfs_link(lfs *fs, const char *from, const char *to);
int lfs_truncate(lfs *fs, const char *path, uint64_t size);
int lfs_chmod(lfs *fs, const char *path, mode_t mode);

/* Opens (creating when create; -EEXIST when excl and it exists). *out is a
 * handle: pass it back to lfs_release. */
int lfs_open(lfs *fs, const char *path, bool create, bool excl, mode_t mode, lfs_node **out);
void lfs_release(lfs *fs, lfs_node *h);
int lfs_fstat(lfs *fs, lfs_node *h, struct stat *st);
ssize_t lfs_read(lfs *fs, lfs_node *h, void *buf, size_t n, uint64_t off);
ssize_t lfs_write(lfs *fs, lfs_node *h, const void *buf, size_t n, uint64_t off);
int lfs_ftruncate(lfs *fs, lfs_node *h, uint64_t size);
/* Makes the file's current bytes and size durable. */
int lfs_fsync(lfs *fs, lfs_node *h);
/* Makes the directory's current entries durable. */
int lfs_fsyncdir(lfs *fs, const char *path);

/* Calls fn for each entry name of the directory (not "." or ".."). */
int lfs_readdir(lfs *fs, const char *path, void (*fn)(void *arg, const char *name, bool dir),
                void *arg);

/* Power loss: see the model above (FSF_CRASH_DROP). */
void lfs_crash(lfs *fs);
/* torn: as fs_fake's FSF_CRASH_TORN, each file keeps, in order, a random
 * prefix (the seed decides) of its writes and size changes since its last
 * fsync, the last write kept possibly cut short with garbage after the cut;
 * directories still return to their durable entries. Either way what
 * survives is what the disk holds now: it is durable from then on. */
void lfs_crash_mode(lfs *fs, bool torn, uint64_t seed);

typedef struct lfs_stats {
    uint64_t crashes, fsyncs, fsyncdirs, writes;
    uint64_t nodes;         /* live nodes */
    uint64_t bytes;         /* current + durable bytes held */
    uint64_t dropped_bytes; /* unsynced bytes thrown away by crashes */
} lfs_stats;
lfs_stats lfs_get_stats(const lfs *fs);

#endif /* KV_TESTS_LOSSYFS_LFS_H */
