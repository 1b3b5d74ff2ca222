/*
 * Problem reports shared by every on-disk module, so `kvd check`, start-up
 * and tests name a fault the same way: a code word (CORRUPT, TORN, MISSING,
 * VERSION), the file, the byte offset, and what was wrong.
 *
 * Each module has a check function taking a kv_check_fn; it calls it once
 * per problem and returns 0 when it found nothing it calls corrupt (a torn
 * tail alone is reported but is not corruption), KV_ECORRUPT otherwise.
 */
#ifndef KV_STORAGE_CHECK_H
#define KV_STORAGE_CHECK_H

#include <stdint.h>

#define KV_CHECK_NO_OFFSET UINT64_MAX

typedef struct kv_check_problem {
    const char *word;   /* "CORRUPT", "TORN", "MISSING", "VERSION" */
    const char *file;   /* path of the file or directory */
    uint64_t offset;    /* byte offset, or KV_CHECK_NO_OFFSET */
    uint64_t index;     /* log index concerned, or 0 */
    const char *detail; /* what was wrong, one short phrase */
} kv_check_problem;

/* Called once per problem; the strings live only for the call. */
typedef void (*kv_check_fn)(void *arg, const kv_check_problem *p);

#endif
