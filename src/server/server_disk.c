/*
 * The disk quota (docs/rules.md "a space quota that clears itself", etcd#11309).
 *
 * Every second the node measures its data dir (allocated blocks, each hard
 * link counted once: snapshots share RocksDB's files). The walk runs on
 * libuv's thread pool, never on the loop: it is a stat call per file
 * (RocksDB's tables, the log's segments, every snapshot's links), which
 * grows with the data dir and used to sit in the middle of a loop turn.
 * What the walk finds is acted on back on the loop. Over the quota it
 * raises the NOSPACE alarm: as leader it refuses writes with NOSPACE; reads
 * and deletes are still served. While the alarm is up it gives space back
 * on its own (its watch history up to now, a snapshot, which lets old log
 * segments go, and a RocksDB compaction, which drops deleted keys and the
 * history); the alarm clears by itself as soon
 * as usage is under the quota again. Nothing needs an operator.
 *
 * Each node watches its own disk; a follower over its quota keeps
 * replicating (refusing would stall the cluster) and says so in its log,
 * its metrics and /health.
 */
#include "server/server_int.h"

#include "common/logging.h"

#include <assert.h>
#include <ftw.h>
#include <inttypes.h>
#include <sys/stat.h>

#define DISK_CHECK_MS 1000u
#define DISK_COMPACT_EVERY_MS 5000u

static __thread uint64_t walk_total;

static int walk_add(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)path;
    (void)ftw;
    if (flag == FTW_F && st->st_nlink > 0)
        walk_total += (uint64_t)st->st_blocks * 512u / st->st_nlink;
    return 0;
}

static uint64_t dir_usage(const char *dir) {
    walk_total = 0;
    nftw(dir, walk_add, 16, FTW_PHYS);
    return walk_total;
}

/* On the loop, with the walk's result. */
static void disk_check(server *s) {
    bool over = s->disk_used > s->cfg.quota_bytes;
    if (over && !s->nospace) {
        s->nospace = true;
        s->nospace_alarms++;
        KV_LOGW("NOSPACE",
                "data dir uses %" PRIu64 " bytes, over the quota of %" PRIu64
                ": writes are refused until space is freed (reads and deletes go on)",
                s->disk_used, s->cfg.quota_bytes);
    } else if (!over && s->nospace) {
        s->nospace = false;
        KV_LOGI("NOSPACE",
                "data dir uses %" PRIu64 " bytes, under the quota of %" PRIu64
                ": the alarm is cleared, writes are accepted again",
                s->disk_used, s->cfg.quota_bytes);
    }
    uint64_t applied = sm_applied_index(s->sm);
    uint64_t now = uv_now(&s->loop);
    /* a full compaction blocks the loop for as long as it takes: at most
     * one every DISK_COMPACT_EVERY_MS, and only when something changed */
    if (s->nospace && applied != s->compacted_at && !server_log_backlogged(s) &&
        (s->compacted_ms == 0 || now - s->compacted_ms >= DISK_COMPACT_EVERY_MS)) {
        s->compacted_ms = now;
        /* give space back: the watch history (it holds the values of
         * recent writes, deleted keys' too; a watcher caught up loses
         * nothing), deleted keys out of RocksDB, old log segments out
         * behind a new snapshot */
        s->compacted_at = applied;
        (void)sm_history_drop(s->sm); /* logged; a real fault fails the next apply */
        sm_compact(s->sm);
        server_snapshot_take(s);
    }
}

/* On a thread of libuv's pool: reads only the data dir's name. */
static void disk_walk(uv_work_t *w) {
    server *s = w->data;
    s->disk_walked = dir_usage(s->cfg.data_dir);
}

static void disk_walked(uv_work_t *w, int status) {
    server *s = w->data;
    assert(s->disk_walking);
    s->disk_walking = false;
    if (status != 0 || s->stopping)
        return;
    s->disk_used = s->disk_walked;
    disk_check(s);
}

static void on_disk_timer(uv_timer_t *t) {
    server *s = t->data;
    if (s->disk_walking)
        return; /* the last walk is still going: a slow disk, skip a turn */
    s->disk_work.data = s;
    if (uv_queue_work(&s->loop, &s->disk_work, disk_walk, disk_walked) == 0)
        s->disk_walking = true;
}

void server_disk_start(server *s) {
    s->disk_timer.data = s;
    uv_timer_init(&s->loop, &s->disk_timer);
    s->disk_used = dir_usage(s->cfg.data_dir);
    uv_timer_start(&s->disk_timer, on_disk_timer, DISK_CHECK_MS, DISK_CHECK_MS);
}
