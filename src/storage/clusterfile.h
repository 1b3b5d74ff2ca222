/*
 * DIR/CLUSTER: which cluster a data dir belongs to, and whether it may
 * bootstrap that cluster.
 *
 *   kv-cluster 1\n
 *   id HEX\n                    the cluster id (handshakes carry it)
 *   founders N1=H:P,...\n       only in a data dir made by kvd init: the
 *                               founding members it bootstraps with
 *   xxh3 HEX16\n                xxh3-64 of every byte before this line
 *
 * Written once, atomically (kv_fs_write_atomic: temp file, fsync, rename,
 * directory fsync). A data dir is bootstrapped only when its CLUSTER names
 * founders: kvd init writes it, and a replaced disk has none, so a node that
 * lost its storage never bootstraps a second time and never votes with an
 * empty log (docs/deploy.md "A replaced disk"; the Raft thesis: a server
 * that loses its storage rejoins as a new member).
 */
#ifndef KV_STORAGE_CLUSTERFILE_H
#define KV_STORAGE_CLUSTERFILE_H

#include "storage/check.h"
#include "storage/fs.h"

#include <stdbool.h>

#define CF_FILE "CLUSTER"
#define CF_ID_HEX_BYTES 32u      /* 128 bits, as hex */
#define CF_FOUNDERS_BYTES_MAX 2048u /* KV_NODES_MAX of "name=host:port," */

typedef struct cf_info {
    char id[CF_ID_HEX_BYTES + 1];            /* hex; older ids may be shorter */
    char founders[CF_FOUNDERS_BYTES_MAX + 1]; /* "" when not a founding data dir */
} cf_info;

/* Writes DIR/CLUSTER durably. KV_EINVAL for an id that is not 1..32 hex
 * digits or founders too long or holding a newline. */
int cf_write(kv_fs *fs, const char *dir, const cf_info *c);

/* Reads DIR/CLUSTER into *out: 0; KV_EMISSING when absent (reported as
 * MISSING); KV_ECORRUPT when its checksum or shape is wrong (reported as
 * CORRUPT naming the file and the byte offset of the bad line). fn may be
 * NULL. */
int cf_read(kv_fs *fs, const char *dir, cf_info *out, kv_check_fn fn, void *arg);

/* A new cluster id into id (CF_ID_HEX_BYTES + 1 bytes): derived from token
 * and the founders when token is not NULL (every founder given the same
 * token and --cluster gets the same id; another token, another cluster),
 * else random (getrandom). 0, or KV_EIO when no randomness is available. */
int cf_make_id(const char *token, const char *founders, char *id);

#endif /* KV_STORAGE_CLUSTERFILE_H */
