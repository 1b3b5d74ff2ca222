/* kvd's server mode: kvd --name N --data-dir D --listen A --cluster ... */
#ifndef KV_KVD_SERVE_H
#define KV_KVD_SERVE_H

#include <stdio.h>

enum kvd_mode {
    KVD_MODE_SERVE,   /* kvd --name ...: run the node */
    KVD_MODE_RESTORE, /* kvd restore --from FILE ...: a data dir from a snapshot file */
    KVD_MODE_RECOVER, /* kvd recover ...: a one-node cluster from a survivor */
    KVD_MODE_INIT,    /* kvd init ...: a founding member's data dir of a new cluster */
};

void kvd_serve_usage(FILE *out);
/* Parses flags (and --config), then runs mode; returns the exit code. */
int kvd_serve(int argc, char **argv, enum kvd_mode mode);

#endif
