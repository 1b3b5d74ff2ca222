/* Internals of the write-ahead log shared by wal.c, wal_io.c and wal_scan.c;
 * not a public header. The on-disk format is described in wal.h. */
#ifndef KV_STORAGE_WAL_INTERNAL_H
#define KV_STORAGE_WAL_INTERNAL_H

#include "storage/wal.h"

#include "kv/limits.h"

#include <pthread.h>
#include <stdbool.h>

#define WAL_MAGIC 0x4745534c41575653ull /* "KVWALSEG" little-endian, see wal__put_header */
#define WAL_FLAG_RESET 1u
#define WAL_BATCH_MAGIC 0x4257564bu /* "KVWB" little-endian */
#define WAL_BATCH_FLAG_OVERRIDE 1u  /* rule 6 in wal.h */
#define WAL_BATCH_HDR WAL_BATCH_HEADER_BYTES
#define WAL_PATH_BYTES_MAX 4096u
#define WAL_REC_HDR KV_WAL_RECORD_HEADER_BYTES
/* The largest segment file a scan reads. A segment holds at most
 * segment_bytes, or one record alone in its batch, plus the override
 * markers (one batch header each) of conflicting suffixes written after it
 * was full (wal.h rule 6): twice the largest segment leaves room for over a
 * million of those, each needing a leader change. */
#define WAL_SEGMENT_FILE_BYTES_MAX (2u * (uint64_t)KV_WAL_SEGMENT_BYTES_DEFAULT)
/* Segments are zero-filled ahead of the records by this much at a time, so
 * most fdatasyncs overwrite allocated blocks and need no metadata journal
 * commit (an appending fdatasync costs about twice a raw one). The scan
 * treats an all-zero remainder of a segment as its end, not as a record. */
#define WAL_PREALLOC_BYTES (1024u * 1024u)
/* Segments one log holds at most (64 TiB of default segments). */
#define WAL_SEGMENTS_MAX (1u << 20)

_Static_assert(KV_WAL_RECORD_HEADER_BYTES == 32,
               "record header: xxh3, len, type, pad, term, index");
_Static_assert(WAL_BATCH_HEADER_BYTES == 48,
               "batch header: xxh3, magic, flags, seq, first, count, bytes, payload xxh3");
_Static_assert(WAL_SEGMENT_FILE_BYTES_MAX < UINT32_MAX, "a batch's payload length fits a u32");
_Static_assert(WAL_SEGMENT_FILE_BYTES_MAX >=
                   KV_WAL_SEGMENT_BYTES_DEFAULT + KV_WAL_RECORD_BYTES_MAX + 2u * WAL_BATCH_HDR,
               "a scan reads a full segment with a record alone in its batch");

/* One segment file. Heap-allocated so wal_ent can point at it. */
typedef struct wal_seg {
    uint64_t seq, first_index, base_term;
    uint32_t flags;
    uint64_t size;  /* bytes of header and whole batches (dead records too) */
    uint64_t alloc; /* bytes in the file: the records, then zeros */
    char *path;     /* owned */
    kv_file *file;  /* owned; NULL in a read-only scan */
} wal_seg;

/* Where one entry lives: entry first + i is ents[i]. */
typedef struct wal_ent {
    uint64_t term;
    uint64_t off; /* of the record header in seg */
    wal_seg *seg;
    uint32_t len;
    uint8_t type;
} wal_ent;

/* What a scan found. */
typedef struct wal_scan {
    wal_seg **segs; /* owned, each owned */
    size_t segs_n;
    wal_ent *ents; /* owned */
    size_t ents_n, ents_cap;
    uint64_t first, base_term; /* first index; term of first - 1 */
    char **obsolete;           /* owned paths: .tmp files, segments before a RESET */
    size_t obsolete_n;
    bool torn; /* the last segment has a torn tail at torn_off */
    uint64_t torn_off;
} wal_scan;

/* Decoded batch header. */
typedef struct wal_batch {
    uint32_t flags, count, payload_bytes;
    uint64_t seq, first, payload_xxh3;
} wal_batch;

/* Decoded record header. */
typedef struct wal_rec {
    uint64_t term, index;
    uint32_t len;
    uint8_t type;
} wal_rec;

/* ---- wal_scan.c: format and scan --------------------------------------- */

void wal__put_header(uint8_t *buf, const wal_seg *s);
/* Encodes b as a batch header at dst (WAL_BATCH_HDR bytes). */
void wal__batch_encode(uint8_t *dst, const wal_batch *b);
/* Checks the batch header at buf (avail bytes of file from there): magic,
 * checksum, a payload inside avail. 0, or KV_ECORRUPT with *why. */
int wal__batch_decode(const uint8_t *buf, size_t avail, wal_batch *b, const char **why);
/* Encodes e as one record at dst (WAL_REC_HDR + e->len bytes). */
void wal__rec_encode(uint8_t *dst, const wal_entry *e);
/* Checks the record at buf (avail bytes): 0, or KV_ECORRUPT with *why. */
int wal__rec_decode(const uint8_t *buf, size_t avail, wal_rec *r, const char **why);
/* Segment file name for seq into buf. */
int wal__seg_path(char *buf, size_t cap, const char *waldir, uint64_t seq, bool tmp);
int wal__ents_push(wal_scan *s, const wal_ent *e);
/* Scans DIR/wal (see wal_open). Ownership: *out's arrays are the caller's,
 * freed with wal__scan_free() even when the scan failed. */
int wal__scan(kv_fs *fs, const char *dir, kv_check_fn fn, void *arg, wal_scan *out);
void wal__scan_free(wal_scan *s);
void wal__report(kv_check_fn fn, void *arg, const char *word, const char *file, uint64_t off,
                 uint64_t index, const char *detail);

/* ---- wal.c / wal_io.c: the open log ------------------------------------ */

enum wal_item_kind { WAL_ITEM_APPEND, WAL_ITEM_DROP, WAL_ITEM_RESET };

typedef struct wal_item {
    enum wal_item_kind kind;
    uint8_t *buf; /* owned: encoded records of an append */
    size_t bytes, n;
    uint64_t index, term; /* first index of an append; drop/reset argument */
    wal_done_fn cb;
    void *arg;
    int status;
    struct wal_item *next;
} wal_item;

struct wal {
    kv_fs *fs;
    wal_options opt;
    char waldir[WAL_PATH_BYTES_MAX];

    /* mu guards the index (log) and stats; readers hold it while reading. */
    pthread_mutex_t mu;
    wal_scan log;
    uint64_t last_durable; /* readers see [log.first, last_durable] */
    wal_stats stats;

    /* qmu guards the queue. */
    pthread_mutex_t qmu;
    pthread_cond_t qcond;
    wal_item *head, *tail;
    uint64_t q_bytes, q_first, q_last; /* bounds after everything queued */
    int failed;                        /* sticky KV_EIO after a write/sync error */
    bool closing;
    bool io_busy;          /* a batch is being written or called back, by the
                              storage thread or by wal_append_now's caller */
    uint64_t sync_ns_last; /* the last fdatasync's time (wal_append_now) */
    pthread_t thread;
    /* Finished batches for the completion thread, also under qmu. */
    pthread_cond_t done_cond;
    wal_item *done_head, *done_tail;
    bool done_stop, done_busy;
    pthread_t done_thread;

    /* Storage-thread only. */
    uint8_t *wbuf; /* the batch being gathered: header room, then records */
    size_t wbuf_len, wbuf_cap;
    uint32_t wbuf_count;   /* records in wbuf; wbuf_len is 0 when none */
    uint64_t wbuf_first;   /* index of wbuf's first record */
    bool override_pending; /* the next batch overrides (wal.h rule 6) */
    uint64_t tail_last;    /* last index written (not necessarily synced) */
};

/* The storage thread and the completion thread (wal_io.c). */
void *wal__thread(void *arg);
/* Writes, syncs and calls back the one append it (admitted, not queued) on
 * the caller's thread, which set io_busy (wal_io.c). */
void wal__append_here(wal *w, wal_item *it);
void *wal__done_thread(void *arg);
/* Creates and durably installs a new segment; adds it to w->log under mu. */
int wal__seg_create(wal *w, uint64_t seq, uint64_t first, uint64_t base_term, uint32_t flags);

#endif /* KV_STORAGE_WAL_INTERNAL_H */
