/* Crash points for tests (crashpoint.h). */
#include "common/crashpoint.h"

#include <assert.h>
#include <stddef.h>

static kv_crashpoint_fn crash_fn;
static void *crash_arg;

void kv_crashpoint_set(kv_crashpoint_fn fn, void *arg) {
    crash_fn = fn;
    crash_arg = arg;
}

bool kv_crashpoint(const char *point) {
    assert(point != NULL && point[0] != '\0');
    return crash_fn != NULL && crash_fn(crash_arg, point);
}
