/* kvd init, kvd restore and kvd recover: offline changes to a data dir, made
 * with the storage layer (src/storage, src/server/store.h) and the start-up
 * steps a node shares with them (src/server/startup.h); no node is built.
 * Each returns a kvd_exit code (server.h) and says what was wrong on stderr
 * (and in log lines for faults on disk). */
#ifndef KV_KVD_ADMIN_H
#define KV_KVD_ADMIN_H

#include "server/server.h"

/* kvd init: makes cfg->data_dir the data dir of a founding member
 * cfg->name of a new cluster cfg->cluster, with a new cluster id (derived
 * from cfg->cluster_token and the members, or cfg->cluster_id adopted, or
 * random and printed). Run once per founder; kvd then bootstraps on its
 * first start. A data dir that kvd init did not make is never bootstrapped
 * (a replaced disk must rejoin with --join). */
int kvd_init(const server_config *cfg);

/* kvd restore: prepares the empty data dir cfg->data_dir from the snapshot
 * file `from` for node cfg->name of the new cluster cfg->cluster (all its
 * founding nodes are restored from the same file): the state machine holds
 * exactly the snapshot's data, the log continues after it with the new
 * membership. Built beside the target and renamed into place, so a crash
 * leaves no half-made data dir under the target's name. */
int kvd_restore(const server_config *cfg, const char *from);

/* kvd recover: turns the data dir of a surviving node into a one-node
 * cluster of itself (after a majority was lost for good): the next log
 * entry makes it the only voter. Entries it holds that were not committed
 * become committed. */
int kvd_recover(const server_config *cfg);

#endif /* KV_KVD_ADMIN_H */
