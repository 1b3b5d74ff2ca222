/* kvd's modes on a data dir: kvd (serve), kvd init, kvd restore, kvd recover.
 * Their flags and the config file come from one table in serve.c. */
#ifndef KV_KVD_SERVE_H
#define KV_KVD_SERVE_H

#include <stdio.h>

enum kvd_mode {
    KVD_MODE_SERVE,   /* kvd --name ...: run the node */
    KVD_MODE_RESTORE, /* kvd restore --from FILE ...: a data dir from a snapshot file */
    KVD_MODE_RECOVER, /* kvd recover ...: a one-node cluster from a survivor */
    KVD_MODE_INIT,    /* kvd init ...: a founding member's data dir of a new cluster;
                         the last mode */
};

/* Prints mode's synopsis and the flags it accepts. */
void kvd_serve_usage(FILE *out, enum kvd_mode mode);
/* Parses argv (argv[0] is the command word) and --config, checks every value
 * before anything touches the data dir, then runs mode (or prints --help or
 * --print-config). Returns a kvd_exit code: KVD_EXIT_USAGE for a bad flag,
 * config line or value, with one line on stderr naming it. */
int kvd_serve(int argc, char **argv, enum kvd_mode mode);

#endif
