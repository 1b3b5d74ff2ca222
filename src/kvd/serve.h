/* kvd's server mode: kvd --name N --data-dir D --listen A --cluster ... */
#ifndef KV_KVD_SERVE_H
#define KV_KVD_SERVE_H

#include <stdio.h>

void kvd_serve_usage(FILE *out);
/* Parses flags (and --config), runs the node; returns the exit code. */
int kvd_serve(int argc, char **argv);

#endif
