/*
 * Every limit in kv, with the reason for its value (SQLite's sqliteLimit.h,
 * Redis's proto-max-bulk-len). docs/limits.md is the user's copy of this file.
 *
 * Rules (docs/rules.md "Code" rule 5, docs/rules.md "write path accepts what the read path
 * later rejects"): the check on the way in and the decoder on the way out use
 * the same constant from this header; no limit means "unlimited" when 0;
 * where limits relate, a KV_STATIC_ASSERT (_Static_assert) says how.
 */
#ifndef KV_LIMITS_H
#define KV_LIMITS_H

#include <stdint.h>

/* C++ (a program including kv/client.h) spells C11's _Static_assert
 * static_assert. */
#ifdef __cplusplus
#define KV_STATIC_ASSERT(cond, why) static_assert(cond, why)
#else
#define KV_STATIC_ASSERT(cond, why) _Static_assert(cond, why)
#endif

/* ---- user data ------------------------------------------------------- */

/* A key is an identifier, not a payload: 4 KiB covers composite keys and
 * paths while keeping index blocks and scan replies small. */
#define KV_KEY_BYTES_MAX 4096u

/* A value is at most 1 MiB: larger objects belong in a blob store. It keeps
 * one entry from stalling replication (one AppendEntries carries it) and
 * bounds the memory one request pins. */
#define KV_VALUE_BYTES_MAX 1048576u

/* Fixed overhead of one encoded command beyond its key and values: client
 * id, sequence, op, field tags and lengths. 1 KiB is many times what
 * protobuf needs, so the bound below is never the reason a request fails. */
#define KV_COMMAND_OVERHEAD_BYTES 1024u

/* The largest encoded command: compare-and-set carries a key, the expected
 * value and the new value. */
#define KV_COMMAND_BYTES_MAX                                                                       \
    (KV_KEY_BYTES_MAX + 2u * KV_VALUE_BYTES_MAX + KV_COMMAND_OVERHEAD_BYTES)

/* The largest payload of one Raft log entry, checked when proposed and when
 * the WAL decodes a record: the same constant on both paths. */
#define KV_ENTRY_BYTES_MAX KV_COMMAND_BYTES_MAX

/* ---- write-ahead log --------------------------------------------------- */

/* Segment size: 64 MiB keeps the number of files small (a few hundred for a
 * large log) and makes dropping a prefix a matter of unlinking whole files. */
#define KV_WAL_SEGMENT_BYTES_DEFAULT (64u * 1024u * 1024u)

/* A segment must hold at least one record of the largest size. */
#define KV_WAL_RECORD_HEADER_BYTES 32u
#define KV_WAL_RECORD_BYTES_MAX (KV_WAL_RECORD_HEADER_BYTES + KV_ENTRY_BYTES_MAX)
#define KV_WAL_SEGMENT_BYTES_MIN (2u * KV_WAL_RECORD_BYTES_MAX + 4096u)

/* Group commit: one fsync covers at most this many bytes of appends. 16 MiB
 * is a few milliseconds of disk bandwidth, so one batch never holds the
 * writers behind it for long, yet is far above what 64 writers queue. */
#define KV_WAL_BATCH_BYTES_MAX (16u * 1024u * 1024u)

/* Appends queued for the storage thread and not yet written: bounded so a
 * slow disk turns into BUSY upstream, not into memory growth. */
#define KV_WAL_QUEUE_BYTES_MAX (64u * 1024u * 1024u)

/* ---- Raft -------------------------------------------------------------- */

/* Most voters plus learners in one cluster. Raft with more than 7 voters
 * buys no availability worth its write cost; the slack is for learners. */
#define KV_NODES_MAX 9u

/* A node's name, as in --name n1. */
#define KV_NODE_NAME_BYTES_MAX 63u

/* AppendEntries messages in flight to one follower before the leader waits
 * for acknowledgements (flow control, as etcd-io/raft MaxInflightMsgs). */
#define KV_RAFT_INFLIGHT_MSGS_MAX 256u

/* Soft size of one AppendEntries message, its entries each counted as
 * payload + KV_RAFT_ENTRY_WIRE_OVERHEAD_BYTES; a single larger entry still
 * goes alone, so the frame limit below must hold the largest entry. */
#define KV_RAFT_MSG_BYTES_MAX (1024u * 1024u)

/* What the wire adds to one entry in a kv.RaftMessage beyond its payload:
 * the entries field's tag and length (<= 6 bytes) and the entry's index,
 * term, type and data tags, varints and length (<= 34 bytes). 64 bounds
 * the 40 with room for a field added later. The core counts it for every
 * entry of an APPEND against max_msg_bytes, so a batch of many empty or
 * tiny entries is sized by what it costs on the wire, not by its payload. */
#define KV_RAFT_ENTRY_WIRE_OVERHEAD_BYTES 64u

/* What the wire adds to one kv.RaftMessage besides its entries and its
 * snapshot chunk: its field and length in the kv.RaftBatch, 20 scalar
 * fields (<= 11 bytes each), KV_NODES_MAX member ids (<= 10 bytes each) and
 * the chunk's tag and length: about 330 bytes. 1 KiB bounds it. */
#define KV_RAFT_MSG_WIRE_OVERHEAD_BYTES 1024u

/* Bytes proposed on the leader and not yet committed. Past it a proposal is
 * refused with BUSY: a leader that cannot commit must not buffer forever. */
#define KV_RAFT_UNCOMMITTED_BYTES_MAX (64u * 1024u * 1024u)

/* Committed entries a leader keeps in memory (and in its log on disk) for
 * followers behind it, and for one installing a snapshot, which catches up
 * from the entries after that snapshot (raft_compact_floor). Past it the
 * slowest is sent a snapshot instead: memory stays bounded. */
#define KV_RAFT_LOG_KEEP_BYTES_MAX (64u * 1024u * 1024u)

/* Linearizable reads waiting for one ReadIndex round on the leader. */
#define KV_READ_INDEX_PENDING_MAX 65536u

/* ---- network ----------------------------------------------------------- */

/* One frame's payload: the largest AppendEntries carrying one largest entry,
 * plus envelope. Anything longer is a protocol error and closes the
 * connection before a byte is buffered. */
#define KV_FRAME_BYTES_MAX (KV_ENTRY_BYTES_MAX + 64u * 1024u)

/* Requests one client connection may have in flight; past it: BUSY. */
#define KV_CONN_INFLIGHT_REQUESTS_MAX 1024u

/* Reply bytes queued for a connection that does not read: past it the
 * connection is closed (a slow reader must not pin the node's memory). Two
 * largest frames, so one big reply never trips it by itself. */
#define KV_CONN_OUTPUT_BYTES_MAX (2u * KV_FRAME_BYTES_MAX + 4u * 1024u * 1024u)

/* Client connections open at once per node. A client past it gets a
 * HelloReply BUSY and the connection is closed: retry later or elsewhere.
 * 4,096 leaves room for 1,024 benchmark clients, operators and tools many
 * times over; an idle connection costs a few KiB (its buffers are freed
 * or kept small when it is quiet), so 4,096 are tens of MiB at most. */
#define KV_CONNS_MAX 4096u

/* Connections beyond KV_CONNS_MAX for what is not a client: peer links
 * (one in from each other member) and connections still in their
 * handshake. Past KV_CONNS_MAX + KV_CONNS_RESERVE a new connection is
 * closed as soon as it is accepted (a flood must not use up the process's
 * file descriptors). */
#define KV_CONNS_RESERVE 64u

/* Proposal bytes queued on the leader, waiting to enter the log. */
#define KV_PENDING_PROPOSAL_BYTES_MAX (64u * 1024u * 1024u)

/* ---- state machine and sessions ---------------------------------------- */

/* Client sessions kept for exactly-once writes. Past it the least recently
 * used session (by log index, never by wall clock) is evicted, and a retry
 * from that client is told its session expired. Each node keeps the table
 * and its order in memory (64 bytes a session, 4.3 MiB at the limit with the
 * hash table; stored reply values stay in RocksDB). */
#define KV_SESSIONS_MAX 65536u

/* Keys one scan reply may carry, and its bytes; a client pages for more. */
#define KV_SCAN_KEYS_MAX 10000u
#define KV_SCAN_REPLY_BYTES_MAX (1024u * 1024u)

/* ---- transactions, watch, leases --------------------------------------- */

/* Compares plus ops (success and failure) in one transaction. The whole
 * encoded transaction is also bounded by KV_COMMAND_BYTES_MAX. */
#define KV_TXN_OPS_MAX 128u

/* Key and value bytes the gets of one transaction may return. The reply
 * goes in one frame (and in the session record, for a retry); a txn whose
 * gets would return more is refused as TOOBIG before it changes anything.
 * Two values at the limit, e.g. both balances of a transfer. */
#define KV_TXN_GET_BYTES_MAX (2u * KV_VALUE_BYTES_MAX + 2u * KV_KEY_BYTES_MAX)

/* Keys one DELETE_PREFIX entry deletes; past it the reply says more remain
 * and the client sends another (kvcli del --prefix loops). Bounds the write
 * batch and the history record of one entry. */
#define KV_DELETE_PREFIX_KEYS_MAX 10000u

/* Watch history: the events of the newest KV_WATCH_HISTORY_REVS revisions
 * (log indexes) are kept; a watch from an older revision is refused with
 * COMPACTED and the oldest revision kept. At 256-byte values about 30 MiB
 * of RocksDB. The same on every node: it is a function of the applied
 * index. */
#define KV_WATCH_HISTORY_REVS 100000u

/* Watchers on one node, and the bytes of events one watcher may have queued
 * for its connection; past it the watcher is cancelled with CANCELED (it
 * resumes from its last revision, or learns it fell behind). */
#define KV_WATCHERS_MAX 1024u
#define KV_WATCH_BUFFER_BYTES_MAX (4u * 1024u * 1024u)

/* Event bytes read from the history for one watcher in one loop turn, and
 * for all watchers together: reading never holds the node's loop for long
 * (a watcher further behind catches up over several turns, as fast as its
 * connection drains). One event may pass them alone. */
#define KV_WATCH_PUMP_BYTES_MAX (256u * 1024u)
#define KV_WATCH_TURN_BYTES_MAX (1024u * 1024u)

/* Leases alive at once, their TTL in seconds, and keys attached to one
 * (revoking a lease deletes its keys in one entry). */
#define KV_LEASES_MAX 65536u
#define KV_LEASE_TTL_MAX (7 * 24 * 3600)
#define KV_LEASE_KEYS_MAX 10000u
/* Expired leases the leader proposes to revoke per expiry turn (each Raft
 * tick, at most every 50 ms): a burst of expiries becomes a stream of
 * entries the log and the followers keep up with, about 1,280 a second,
 * each bounded by KV_LEASE_KEYS_MAX keys. */
#define KV_LEASE_REVOKES_PER_TURN 64u

/* ---- snapshots --------------------------------------------------------- */

/* Chunk size for shipping snapshots: small enough that a chunk never holds
 * up heartbeats for long on a shared link, large enough to amortize acks. */
#define KV_SNAPSHOT_CHUNK_BYTES (1024u * 1024u)

/* Snapshots kept on disk by default (the newest K). */
#define KV_SNAPSHOTS_KEEP_DEFAULT 2u

/* Files in one snapshot manifest (a RocksDB checkpoint has a handful of SSTs
 * per level; 100,000 is far past any real store and bounds the manifest). */
#define KV_SNAPSHOT_FILES_MAX 100000u

/* Bytes of one encoded snapshot manifest (file names, sizes, hashes). */
#define KV_SNAPSHOT_MANIFEST_BYTES_MAX (16u * 1024u * 1024u)

KV_STATIC_ASSERT(KV_FRAME_BYTES_MAX > KV_ENTRY_BYTES_MAX, "a frame must carry the largest entry");
KV_STATIC_ASSERT(KV_TXN_GET_BYTES_MAX + 64u * KV_TXN_OPS_MAX + 1024u <= KV_FRAME_BYTES_MAX,
                 "a transaction's reply (its gets and a few numbers per op) must fit a frame");
KV_STATIC_ASSERT(KV_WAL_SEGMENT_BYTES_DEFAULT >= KV_WAL_SEGMENT_BYTES_MIN,
                 "a segment must hold the largest record");
KV_STATIC_ASSERT(KV_WAL_BATCH_BYTES_MAX >= KV_WAL_RECORD_BYTES_MAX,
                 "a batch must hold the largest record");
KV_STATIC_ASSERT(KV_WAL_QUEUE_BYTES_MAX >= KV_WAL_BATCH_BYTES_MAX,
                 "the queue must hold a full batch");
KV_STATIC_ASSERT(KV_CONN_OUTPUT_BYTES_MAX > KV_FRAME_BYTES_MAX,
                 "output buffer must hold the largest reply");
KV_STATIC_ASSERT(KV_SNAPSHOT_CHUNK_BYTES + KV_RAFT_MSG_WIRE_OVERHEAD_BYTES <= KV_FRAME_BYTES_MAX,
                 "a snapshot chunk, encoded, must fit in a frame");
KV_STATIC_ASSERT(KV_RAFT_MSG_BYTES_MAX + KV_RAFT_MSG_WIRE_OVERHEAD_BYTES <= KV_FRAME_BYTES_MAX,
                 "an APPEND batch (entries counted with their wire overhead) must fit in a frame");
KV_STATIC_ASSERT(KV_ENTRY_BYTES_MAX + KV_RAFT_ENTRY_WIRE_OVERHEAD_BYTES +
                         KV_RAFT_MSG_WIRE_OVERHEAD_BYTES <=
                     KV_FRAME_BYTES_MAX,
                 "an APPEND of the largest entry alone must fit in a frame");
KV_STATIC_ASSERT(KV_SCAN_REPLY_BYTES_MAX < KV_FRAME_BYTES_MAX, "a scan reply must fit in a frame");
KV_STATIC_ASSERT(KV_WATCH_PUMP_BYTES_MAX + KV_KEY_BYTES_MAX + KV_VALUE_BYTES_MAX + 4096u <
                     KV_FRAME_BYTES_MAX,
                 "one turn's events of a watcher must fit in one frame");
KV_STATIC_ASSERT(KV_WATCH_BUFFER_BYTES_MAX + KV_FRAME_BYTES_MAX <= KV_CONN_OUTPUT_BYTES_MAX,
                 "a watcher is cancelled before its connection is closed for not reading");
KV_STATIC_ASSERT(KV_CONNS_RESERVE >= 2u * KV_NODES_MAX,
                 "the reserve must hold a link from every other member, old and new");

#endif /* KV_LIMITS_H */
