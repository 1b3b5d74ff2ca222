/*
 * Crash points: named steps of a multi-step durable operation (a snapshot
 * install) at which a test can make the code stop as if the machine died
 * there, then run the start-up path on what is left (tests/server
 * test_store.c loops over every point).
 *
 * Compiled in, off by default: with no hook set kv_crashpoint() is one load
 * and returns false. A code path that calls kv_crashpoint(P) and gets true
 * must return at once with KV_EIO, doing no more writes, as a dead process
 * would; the test then drops what the fake file layer did not sync
 * (fsf_crash) and reopens.
 *
 * Threads: set the hook only while no other thread runs a crash point.
 */
#ifndef KV_COMMON_CRASHPOINT_H
#define KV_COMMON_CRASHPOINT_H

#include <stdbool.h>

/* true: "die here". point is a static string naming the step. */
typedef bool (*kv_crashpoint_fn)(void *arg, const char *point);

/* Tests only: arms fn (NULL disarms). */
void kv_crashpoint_set(kv_crashpoint_fn fn, void *arg);

/* true when the test wants the machine to die at point. */
bool kv_crashpoint(const char *point);

#endif /* KV_COMMON_CRASHPOINT_H */
