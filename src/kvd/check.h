/* kvd check: verifies a data dir offline. */
#ifndef KV_KVD_CHECK_H
#define KV_KVD_CHECK_H

#include "server/server.h" /* enum kvd_exit */

#include <stdio.h>

/* Verifies every log record, both hard-state slots, every snapshot manifest
 * and the RocksDB state of the data dir `dir`, printing one line per problem
 * to out ("CODEWORD file offset N index I: detail"). Returns KVD_EXIT_OK when
 * the data is clean or has only a torn tail, KVD_EXIT_CORRUPT otherwise. */
int kvd_check(const char *dir, FILE *out);

#endif
