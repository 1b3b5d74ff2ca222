/*
 * The steps on a data dir that a node's start-up (server.c) shares with
 * kvd's offline commands (kvd init, kvd restore and kvd recover, in the kvd
 * binary's admin.c). None needs a running node: no loop, no sockets, no
 * struct server.
 *
 *   startup_lock          DIR/LOCK: one process at a time on a data dir
 *   startup_hs_load       the hard state, checked against the log's highest
 *                         term (hardstate.h: a damaged slot that was synced
 *                         is corruption, never a fallback)
 *   startup_cluster_save  DIR/CLUSTER (clusterfile.h)
 *   server_book_parse     --cluster NAME=HOST:PORT,... as members
 *   server_book_encode    members as the kv.Membership the state machine
 *                         stores (server_members.c, the address book's file)
 *
 * Errors are negative KV_E* codes (server_exit_code turns one into kvd's
 * exit code); each is logged, or for the book printed, naming what failed.
 *
 * Threads: any one thread at a time; nothing here keeps state.
 */
#ifndef KV_SERVER_STARTUP_H
#define KV_SERVER_STARTUP_H

#include "kv/limits.h"
#include "storage/fs.h"
#include "storage/hardstate.h"
#include "storage/wal.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SERVER_ADDR_BYTES 128u
#define SERVER_PATH_BYTES 4096u

/* One entry of the address book: the members as applied (voters and
 * learners) and the nodes a member add announced (joining). */
typedef struct server_member {
    uint64_t id;
    char name[KV_NODE_NAME_BYTES_MAX + 1];
    char addr[SERVER_ADDR_BYTES];
    bool learner;
    bool joining;
} server_member;

#define SERVER_BOOK_MAX (2u * KV_NODES_MAX)

/* Takes DIR/LOCK of data_dir (flock, without waiting) and writes this
 * process's pid into it. On 0 *fd holds the lock until it is closed; on
 * failure *fd is -1. KV_ELOCKED when another process holds it (logged with
 * that process's pid), KV_EIO when the file cannot be opened. */
int startup_lock(const char *data_dir, int *fd);

/* Loads the hard state of data_dir on fs into *h (owned: hs_close) and *st,
 * checked against the highest term of the open log w. Every problem found
 * is logged naming the file and offset. hs_load's errors (KV_ECORRUPT, ...). */
int startup_hs_load(kv_fs *fs, const char *data_dir, wal *w, hs **h, hs_state *st);

/* Writes DIR/CLUSTER of data_dir on fs: the cluster id `id` and, for a
 * founder (kvd init), the founders' --cluster text (NULL: none). Logged
 * naming the file on failure. KV_EINVAL when id does not fit. */
int startup_cluster_save(kv_fs *fs, const char *data_dir, const char *id, const char *founders);

/* Parses spec (NAME=HOST:PORT,...) into book[0..*count), each id derived
 * from its name (server_node_id). KV_EINVAL, with one line on stderr naming
 * the member, for a malformed member or a name given twice; KV_EINVAL too
 * for no member or more than KV_NODES_MAX. */
int server_book_parse(const char *spec, server_member book[SERVER_BOOK_MAX], size_t *count);

/* book[0..count) as of log index `index`, packed as a kv.Membership into
 * *buf (malloc'd, owned by the caller: free) of *len bytes. KV_ENOMEM. */
int server_book_encode(const server_member *book, size_t count, uint64_t index, uint8_t **buf,
                       size_t *len);

#endif /* KV_SERVER_STARTUP_H */
