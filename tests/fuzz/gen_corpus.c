/* Writes the valid seeds of tests/fuzz/corpus/<target>/ (README.md):
 *   cmake --build build --target fuzz-gen-corpus
 *   build/bin/fuzz-gen-corpus tests/fuzz/corpus
 * Seeds come from the real encoders (frames, protobuf, raftwire, the WAL
 * and hard state through their public API on the fake file system), so
 * after a format change, rerun it and commit the result. It also writes the
 * regressions of bugs found by hand (regress-*); inputs the fuzzers found
 * are kept as they were found (crash-*), never rewritten by it. Not built
 * by default (EXCLUDE_FROM_ALL). */
#include "common/checksum.h"
#include "kv/errors.h"
#include "kv/limits.h"
#include "net/frame.h"
#include "net/net.h"
#include "storage/datadir.h"
#include "storage/fs_fake.h"
#include "storage/hardstate.h"
#include "storage/snap_internal.h"
#include "storage/wal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *root;

static void die(const char *what) {
    fprintf(stderr, "fuzz-gen-corpus: %s failed\n", what);
    exit(1);
}

static void put(const char *target, const char *name, const void *a, size_t alen, const void *b,
                size_t blen) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", root, target);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s", root, target, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(a, 1, alen, f) != alen || (blen && fwrite(b, 1, blen, f) != blen)) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    fclose(f);
}

/* A protobuf message packed into a malloc'd buffer. */
static uint8_t *pack(const ProtobufCMessage *m, size_t *len) {
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(*len + 1);
    protobuf_c_message_pack(m, b);
    return b;
}

/* ---- frames, Hello, Request ---- */

static void put_frame(const char *name, uint8_t flags, uint8_t type, const ProtobufCMessage *m) {
    size_t len;
    uint8_t *p = pack(m, &len);
    uint8_t buf[1 + KV_FRAME_HEADER_BYTES];
    buf[0] = flags;
    kv_frame_header_encode(buf + 1, type, p, (uint32_t)len);
    put("frame", name, buf, sizeof buf, p, len);
    free(p);
}

static void put_flagged(const char *target, const char *name, uint8_t flags,
                        const ProtobufCMessage *m) {
    size_t len;
    uint8_t *p = pack(m, &len);
    put(target, name, &flags, 1, p, len);
    free(p);
}

static void gen_handshake(void) {
    Kv__Hello h = KV__HELLO__INIT;
    h.version = KV_WIRE_VERSION;
    put_flagged("hello", "client", 0, &h.base);
    h.cluster_id = "c1";
    h.node_name = "n2";
    put_flagged("hello", "peer", 0, &h.base);
    put_frame("hello", 0, KV_FRAME_HELLO, &h.base);
    h.token = "secret";
    put_flagged("hello", "peer-token", 2, &h.base);
    h.node_name = "n9";
    put_flagged("hello", "unknown-peer", 0, &h.base);
    h.cluster_id = "other";
    put_flagged("hello", "other-cluster", 0, &h.base);
    h.version = 2;
    put_flagged("hello", "version-2", 0, &h.base);
    Kv__HelloReply r = KV__HELLO_REPLY__INIT;
    r.code = KV_ECONFIG;
    r.reason = "cluster id x, this node is in y";
    r.node_name = "n1";
    r.cluster_id = "c1";
    r.version = KV_WIRE_VERSION;
    put_flagged("hello", "reply", 1, &r.base);
    put_frame("hello-reply", 1, KV_FRAME_HELLO_REPLY, &r.base);
}

static void gen_requests(void) {
    static const struct {
        const char *name;
        int type;
    } kinds[] = {{"put", KV__REQUEST__TYPE__PUT},
                 {"get", KV__REQUEST__TYPE__GET},
                 {"cas", KV__REQUEST__TYPE__CAS},
                 {"scan", KV__REQUEST__TYPE__SCAN},
                 {"member-add", KV__REQUEST__TYPE__MEMBER_ADD},
                 {"snapshot-read", KV__REQUEST__TYPE__SNAPSHOT_READ}};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        Kv__Request q = KV__REQUEST__INIT;
        q.id = i + 1;
        q.type = kinds[i].type;
        q.client_id = 42;
        q.seq = 7;
        q.key = (ProtobufCBinaryData){.data = (uint8_t *)"key", .len = 3};
        q.value = (ProtobufCBinaryData){.data = (uint8_t *)"value", .len = 5};
        q.expected = (ProtobufCBinaryData){.data = (uint8_t *)"old", .len = 3};
        q.limit = 10;
        q.offset = 4096;
        q.index = 100;
        q.term = 3;
        q.name = "n4";
        q.address = "127.0.0.1:7004";
        size_t len;
        uint8_t *p = pack(&q.base, &len);
        put("request", kinds[i].name, p, len, NULL, 0);
        free(p);
        if (i == 0) {
            put_frame("request", 0, KV_FRAME_REQUEST, &q.base);
            put_frame("request-fixup", 1, KV_FRAME_REQUEST, &q.base);
        }
    }
}

/* ---- Raft ---- */

/* role byte, flags byte, RaftBatch of msgs */
static void put_batch(const char *target, const char *name, uint8_t role, uint8_t flags,
                      const raft_msg *msgs, size_t n) {
    Kv__RaftMessage pbs[8];
    Kv__RaftMessage *ptrs[8];
    Kv__RaftEntry ents[16];
    Kv__RaftEntry *eps[16];
    size_t e = 0;
    for (size_t i = 0; i < n; i++) {
        raftwire_to_pb(&msgs[i], &pbs[i], ents + e, eps + e);
        ptrs[i] = &pbs[i];
        e += msgs[i].entries_count;
    }
    Kv__RaftBatch b = KV__RAFT_BATCH__INIT;
    b.n_msgs = n;
    b.msgs = ptrs;
    if (strcmp(target, "frame") == 0) {
        put_frame(name, flags, KV_FRAME_RAFT, &b.base);
        return;
    }
    size_t len;
    uint8_t *p = pack(&b.base, &len);
    uint8_t hdr[2] = {role, flags};
    put(target, name, hdr, 2, p, len);
    free(p);
}

/* Seeds for tests/raft/unit/hostile.c's node 1: log terms 1 1 1 2 2 3 3 5
 * (index 8), term 5; a leader campaigned to term 6 and appended its no-op
 * (index 9); node 3 probes from index 10. Roles: 0 follower of 2,
 * 1 pre-candidate, 2 candidate, 3 leader, 4 leader with a compacted log. */
static void gen_raft(void) {
    raft_membership mb = {.voters_count = 3, .voters = {1, 2, 3}};
    raft_entry ents[2] = {{.index = 9, .term = 5, .data = "a", .len = 1},
                          {.index = 10, .term = 5, .type = RAFT_ENTRY_NOOP}};
    raft_msg hb = {.type = RAFT_MSG_HEARTBEAT, .from = 2, .to = 1, .term = 5, .commit = 8};
    raft_msg app = {.type = RAFT_MSG_APPEND,
                    .from = 2,
                    .to = 1,
                    .term = 5,
                    .index = 8,
                    .log_term = 5,
                    .commit = 9,
                    .entries = ents,
                    .entries_count = 2};
    raft_msg snap = {.type = RAFT_MSG_SNAPSHOT,
                     .from = 2,
                     .to = 1,
                     .term = 5,
                     .snap = {.index = 20, .term = 5, .membership = mb},
                     .snap_total = 8,
                     .snap_data = "snapshot",
                     .snap_len = 8,
                     .snap_last = true};
    raft_msg follower[3] = {hb, app, snap};
    put_batch("raftbatch", "follower", 0, 1, follower, 3);
    put_batch("raftbatch", "follower-ticks", 0, 3, follower, 2);
    put_batch("frame", "raft", 0, 0, follower, 3);
    raft_msg vote = {
        .type = RAFT_MSG_VOTE, .from = 3, .to = 1, .term = 7, .index = 9, .log_term = 5};
    raft_msg pre = {.type = RAFT_MSG_PREVOTE_RESP, .from = 2, .to = 1, .term = 6};
    raft_msg grant = {.type = RAFT_MSG_VOTE_RESP, .from = 3, .to = 1, .term = 6};
    raft_msg cand[3] = {pre, grant, vote};
    put_batch("raftbatch", "pre-candidate", 1, 1, cand, 3);
    put_batch("raftbatch", "candidate", 2, 1, cand + 1, 2);
    raft_msg ack = {.type = RAFT_MSG_APPEND_RESP, .from = 3, .to = 1, .term = 6, .index = 9};
    raft_msg rej = {.type = RAFT_MSG_APPEND_RESP,
                    .from = 3,
                    .to = 1,
                    .term = 6,
                    .reject = true,
                    .index = 9,
                    .reject_hint = 4,
                    .hint_term = 2};
    raft_msg hbr = {.type = RAFT_MSG_HEARTBEAT_RESP, .from = 2, .to = 1, .term = 6, .context = 1};
    raft_msg sresp = {.type = RAFT_MSG_SNAPSHOT_RESP,
                      .from = 3,
                      .to = 1,
                      .term = 6,
                      .snap = {.index = 4, .term = 2},
                      .snap_offset = 32};
    raft_msg leader[4] = {rej, ack, hbr, sresp};
    put_batch("raftbatch", "leader", 3, 1, leader, 4);
    put_batch("raftbatch", "leader-compacted", 4, 3, leader, 4);
    /* issue 10: a reject hint of UINT64_MAX with hint term 0 to the probe
     * of node 3 (previous index 8) tripped assert(next >= 1) */
    raft_msg hint = {.type = RAFT_MSG_APPEND_RESP,
                     .from = 3,
                     .to = 1,
                     .term = 6,
                     .reject = true,
                     .index = 8,
                     .reject_hint = UINT64_MAX};
    put_batch("raftbatch", "regress-reject-hint-max", 3, 1, &hint, 1);
    /* a snapshot of term 0 past the log tripped assert(commit <= last) */
    raft_msg snap0 = snap;
    snap0.snap.index = 30;
    snap0.snap.term = 0;
    put_batch("raftbatch", "regress-snapshot-term-0", 0, 1, &snap0, 1);
    /* a term of UINT64_MAX - 1, then campaigns: the term wrapped to 0 */
    raft_msg big = hb;
    big.term = UINT64_MAX - 1;
    put_batch("raftbatch", "regress-term-wrap", 0, 3, &big, 1);
}

/* ---- snapshot stream: one file of 100 bytes in chunks of 64 ---- */

static void gen_snapchunk(void) {
    uint8_t file[100];
    for (size_t i = 0; i < sizeof file; i++)
        file[i] = (uint8_t)(i * 13);
    Kv__SnapshotManifest m = KV__SNAPSHOT_MANIFEST__INIT;
    Kv__SnapshotManifest__File f = KV__SNAPSHOT_MANIFEST__FILE__INIT;
    Kv__SnapshotManifest__File *fp = &f;
    uint64_t chunks[2] = {kv_xxh3(file, 64), kv_xxh3(file + 64, 36)};
    f.name = "000001.sst";
    f.size = sizeof file;
    f.xxh3 = kv_xxh3(file, sizeof file);
    f.n_chunk_xxh3 = 2;
    f.chunk_xxh3 = chunks;
    m.format = SNAP_FORMAT;
    m.index = 20;
    m.term = 5;
    m.n_files = 1;
    m.files = &fp;
    m.chunk_bytes = 64;
    uint8_t *man;
    size_t mlen;
    if (snap_manifest_encode(&m, &man, &mlen) != 0)
        die("snap_manifest_encode");
    uint8_t s[4096];
    size_t off = 0;
    s[off++] = 0; /* flags */
    kv_put_u32(s + off, (uint32_t)mlen);
    memcpy(s + off + 4, man, mlen);
    off += 4 + mlen;
    for (uint32_t k = 0; k < 2; k++) {
        uint32_t len = k == 0 ? 64 : 36;
        kv_put_u32(s + off, k);
        kv_put_u32(s + off + 4, len);
        kv_put_u64(s + off + 8, chunks[k]);
        memcpy(s + off + 16, file + 64 * k, len);
        off += 16 + len;
    }
    put("snapchunk", "one-file", s, off, NULL, 0);
    s[0] = 1;
    put("snapchunk", "one-file-fixup", s, off, NULL, 0);
    free(man);
}

/* ---- WAL and hard state, through their public API ---- */

static size_t read_file(kv_fs *fs, const char *path, uint8_t *buf, size_t cap) {
    kv_file *f;
    size_t got = 0;
    if (fs->ops->open(fs, path, KV_FS_READ, &f) != 0)
        die(path);
    fs->ops->pread(f, buf, cap, 0, &got);
    fs->ops->close(f);
    return got;
}

/* The segment without its zero-filled tail (an all-zero remainder ends the
 * records: wal.h), keeping 8 zero bytes. */
static size_t trim_zeros(const uint8_t *p, size_t n) {
    while (n > 0 && p[n - 1] == 0)
        n--;
    return n + 8;
}

static void gen_wal(void) {
    fsf *ff = fsf_new(1);
    kv_fs *fs = fsf_fs(ff);
    if (dd_init(fs, "/d") != 0)
        die("dd_init");
    wal_options o;
    wal_options_default(&o);
    wal *w;
    if (wal_open(fs, "/d", &o, NULL, NULL, &w) != 0)
        die("wal_open");
    uint8_t data[3][16] = {"first", "second", "third"};
    wal_entry e[3];
    for (int i = 0; i < 3; i++)
        e[i] = (wal_entry){.index = (uint64_t)i + 1,
                           .term = 1 + (uint64_t)i / 2,
                           .type = 0,
                           .len = 6,
                           .data = data[i]};
    if (wal_append_wait(w, e, 3) != 0)
        die("wal_append_wait");
    wal_close(w);
    static uint8_t buf[2 << 20];
    size_t n = read_file(fs, "/d/wal/0000000000000001.wal", buf, sizeof buf);
    n = trim_zeros(buf, n);
    uint8_t flags = 0;
    put("wal", "three-entries", &flags, 1, buf, n);
    flags = 2;
    put("wal", "three-entries-open", &flags, 1, buf, n);
    fsf_free(ff);
}

static void gen_hardstate(void) {
    fsf *ff = fsf_new(1);
    kv_fs *fs = fsf_fs(ff);
    fs->ops->mkdir(fs, "/d");
    hs *h;
    hs_state st;
    if (hs_load(fs, "/d", NULL, NULL, &h, &st) != 0)
        die("hs_load");
    hs_state a = {.term = 3, .vote = 2, .commit = 10}, b = {.term = 4, .vote = 0, .commit = 12};
    if (hs_save(h, &a) != 0 || hs_save(h, &b) != 0)
        die("hs_save");
    hs_close(h);
    uint8_t s0[256], s1[256];
    size_t n0 = read_file(fs, "/d/hardstate.0", s0, sizeof s0);
    size_t n1 = read_file(fs, "/d/hardstate.1", s1, sizeof s1);
    uint8_t in[2 + 512];
    in[0] = 3;
    in[1] = (uint8_t)n0;
    memcpy(in + 2, s0, n0);
    memcpy(in + 2 + n0, s1, n1);
    put("hardstate", "both-slots", in, 2 + n0 + n1, NULL, 0);
    in[0] = 1;
    put("hardstate", "slot-0-only", in, 2 + n0, NULL, 0);
    in[0] = 3;
    in[2 + n0 + 20] ^= 0x40; /* slot 1 torn: slot 0 wins */
    put("hardstate", "slot-1-torn", in, 2 + n0 + n1, NULL, 0);
    fsf_free(ff);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz-gen-corpus tests/fuzz/corpus\n");
        return 2;
    }
    root = argv[1];
    mkdir(root, 0755);
    gen_handshake();
    gen_requests();
    gen_raft();
    gen_snapchunk();
    gen_wal();
    gen_hardstate();
    printf("seeds written under %s\n", root);
    return 0;
}
