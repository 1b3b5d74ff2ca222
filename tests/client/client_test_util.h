/* Helpers shared by the client tests (test_client.c, test_client_ops.c). */
#ifndef KV_TESTS_CLIENT_TEST_UTIL_H
#define KV_TESTS_CLIENT_TEST_UTIL_H

#include "fake_server.h"

#include "kv/client.h"

#include <check.h>
#include <stdint.h>

#define MS 1000000ull

/* A client with a short timeout and connect timeout, opened or the test fails. */
static inline kv_client *open_short(const char *eps, uint32_t timeout_ms) {
    struct kv_client_options o;
    kv_client_options_init(&o);
    o.timeout_ms = timeout_ms;
    o.connect_timeout_ms = 200;
    kv_client *c = NULL;
    int rc = kv_client_open(&c, eps, &o);
    ck_assert_msg(rc == 0, "open %s: %s", eps, kv_errword(rc));
    return c;
}

/* A fake node, started or the test fails. */
static inline fake_server *start(const fake_config *cfg) {
    fake_server *f = fake_start(cfg);
    ck_assert_ptr_nonnull(f);
    return f;
}

#endif /* KV_TESTS_CLIENT_TEST_UTIL_H */
