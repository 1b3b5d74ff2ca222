/* Binary search in an array of structs sorted by a leading uint64_t id
 * (the lease tables of src/storage/sm_lease.c and src/server/server_lease.c). */
#ifndef KV_COMMON_IDSEARCH_H
#define KV_COMMON_IDSEARCH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The position of id in v[0..n), structs of stride bytes whose first member
 * is their uint64_t id, sorted by it: the first whose id is not less than
 * id (n when none). */
static inline size_t kv_id_lower_bound(const void *v, size_t n, size_t stride, uint64_t id) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint64_t x;
        memcpy(&x, (const char *)v + mid * stride, sizeof x);
        if (x < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

#endif
