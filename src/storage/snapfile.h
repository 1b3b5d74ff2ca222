/* The snapshot formats moved to their own library: src/snapfile/snapfile.h
 * (kvsnapfile) is the contract. This header only forwards to it for the
 * files of src/server that still include it by its old name; include
 * "snapfile/snapfile.h" in new code. */
#ifndef KV_STORAGE_SNAPFILE_H
#define KV_STORAGE_SNAPFILE_H

#include "snapfile/snapfile.h"

#endif /* KV_STORAGE_SNAPFILE_H */
