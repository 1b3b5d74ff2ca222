/* Helpers shared by the src/net tests that run a libuv loop or a Raft
 * leader of their own. Header-only (each test is one program). */
#ifndef KV_TESTS_NET_LOOP_H
#define KV_TESTS_NET_LOOP_H

#include "raft/raft.h"

#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

static inline void nt__wake_cb(uv_timer_t *t) {
    (void)t;
}

/* Runs the loop until pred(arg) or timeout_ms; pred's last answer. */
static inline bool nt_run_until(uv_loop_t *loop, bool (*pred)(void *), void *arg,
                                uint64_t timeout_ms) {
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, nt__wake_cb, 5, 5); /* pred is checked every 5 ms at least */
    uint64_t deadline = uv_now(loop) + timeout_ms;
    while (!pred(arg) && uv_now(loop) < deadline)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return pred(arg);
}

/* Node 1 leading voters {1, 2}, with node 2 having acknowledged everything
 * (REPLICATE) and every Ready handled, entries persisted. Owned by the
 * caller: raft_free(). */
static inline raft *nt_leader(void) {
    raft_config cfg;
    raft_config_init(&cfg, 1);
    cfg.pre_vote = false;
    cfg.bootstrap.voters_count = 2;
    cfg.bootstrap.voters[0] = 1;
    cfg.bootstrap.voters[1] = 2;
    raft *r;
    ck_assert_int_eq(raft_new(&cfg, &r), 0);
    ck_assert_int_eq(raft_campaign(r), 0);
    struct raft_ready rd;
    for (int i = 0; i < 3; i++) {
        if (i == 1) {
            raft_msg v = {.type = RAFT_MSG_VOTE_RESP, .from = 2, .to = 1, .term = raft_term(r)};
            ck_assert_int_eq(raft_step(r, &v), 0);
        } else if (i == 2) {
            raft_msg a = {.type = RAFT_MSG_APPEND_RESP, .from = 2, .to = 1, .term = raft_term(r)};
            a.index = raft_last_index(r);
            ck_assert_int_eq(raft_step(r, &a), 0);
        }
        while (raft_has_ready(r)) {
            ck_assert_int_eq(raft_ready(r, &rd), 0);
            uint64_t last = rd.entries_count ? rd.entries[rd.entries_count - 1].index : 0;
            uint64_t term = rd.entries_count ? rd.entries[rd.entries_count - 1].term : 0;
            raft_advance(r, &rd);
            if (last != 0)
                raft_persisted(r, last, term);
        }
    }
    ck_assert_int_eq(raft_state_role(r), RAFT_LEADER);
    return r;
}

#endif
