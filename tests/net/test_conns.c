/*
 * The network layer's limits on client connections, on a real libuv loop
 * over loopback TCP: conns_max, a client that does not read, a client that
 * sends no Hello. Split from test_loopback.c (same fixture, jobs and client
 * socket: net_test_client.h); the ports stay those test_loopback.c gave
 * them (21009-21011).
 */
#include "net_test_client.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* ---- (h) conns_max ---- */

/* The HelloReply's code for a Hello naming node `name` ("" for a client);
 * -1000 when none came. */
static int hello_code(int fd, const char *name, char *reason, size_t cap) {
    Kv__HelloReply *r = cli_hello(fd, KV_WIRE_VERSION, "", "", name);
    if (r == NULL)
        return -1000;
    int code = r->code;
    snprintf(reason, cap, "%s", r->reason);
    kv__hello_reply__free_unpacked(r, NULL);
    return code;
}

static void job_conns_max(job *j) {
    int a = cli_open(j->port), b = cli_open(j->port);
    JCHECK(j, a >= 0 && b >= 0);
    /* One client too many: a HelloReply BUSY that says why, then closed
     * (it used to be closed without a word: the client saw a reset). */
    char reason[256];
    int c = cli_connect(j->port);
    JCHECK(j, c >= 0);
    JCHECK(j, hello_code(c, "", reason, sizeof reason) == KV_EBUSY);
    JCHECK(j, strstr(reason, "2 client connections open") != NULL);
    JCHECK(j, cli_closed(c));
    close(c);
    /* A peer still gets in: the clients' limit is not the peers'. */
    int p = cli_connect(j->port);
    JCHECK(j, p >= 0);
    JCHECK(j, hello_code(p, "n2", reason, sizeof reason) == 0);
    JCHECK(j, cli_roundtrip(a, 1, "a") && cli_roundtrip(b, 2, "b"));
    /* Connections without a Hello fill the reserve (2 clients + the peer +
     * these = conns_max + KV_CONNS_RESERVE); the next one is closed at once. */
    int held[KV_CONNS_RESERVE];
    int nheld = 0;
    for (; nheld < (int)KV_CONNS_RESERVE - 1; nheld++) {
        held[nheld] = cli_connect(j->port);
        if (held[nheld] < 0)
            break;
    }
    bool all = nheld == (int)KV_CONNS_RESERVE - 1;
    int d = all ? cli_connect(j->port) : -1;
    bool closed = d >= 0 && cli_closed(d);
    if (d >= 0)
        close(d);
    for (int i = 0; i < nheld; i++)
        close(held[i]);
    JCHECK(j, all);
    JCHECK(j, closed);
    JCHECK(j, cli_roundtrip(a, 3, "a"));
    close(p);
    close(a);
    close(b);
}

START_TEST(test_conns_max) {
    fixture f;
    fixture_config(&f, 21009);
    f.cfg.conns_max = 2;
    fixture_open(&f);
    /* a known peer (its own port is never listened on: its link to it just
     * backs off) */
    ck_assert_int_eq(net_peer_add(f.n, 2, "n2", "127.0.0.1:1"), 0);
    job j = {.port = 21009};
    run_job(&f, &j, job_conns_max);
    net_stats s = stats(&f);
    ck_assert_uint_eq(s.conns_refused, 2);
    ck_assert_uint_eq(s.conns_accepted, 3 + KV_CONNS_RESERVE);
    fixture_close(&f);
}
END_TEST

/* ---- (i) a client that does not read ---- */

static void job_no_reading(job *j) {
    int fd = cli_open(j->port);
    JCHECK(j, fd >= 0);
    for (uint64_t id = 1; id <= 2000; id++)
        if (!cli_put(fd, id, "k", "v", 1))
            break; /* closed on us already */
    /* Read it all now: the server has given up on us and closes. */
    static uint8_t sink[1 << 16];
    for (;;) {
        ssize_t n = recv(fd, sink, sizeof sink, 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            break;
        JCHECK(j, n > 0); /* not a timeout */
    }
    close(fd);
    int fd2 = cli_open(j->port);
    JCHECK(j, fd2 >= 0);
    close(fd2);
}

START_TEST(test_output_overflow) {
    fixture f;
    fixture_config(&f, 21010);
    f.cfg.conn_output_max = 512 * 1024;
    f.value_echo = 64 * 1024; /* 2000 answers: 128 MiB, far past the kernel's buffers */
    fixture_open(&f);
    job j = {.port = 21010};
    run_job(&f, &j, job_no_reading);
    net_stats s = stats(&f);
    ck_assert_uint_eq(s.output_overflows, 1);
    fixture_close(&f);
}
END_TEST

/* ---- (j) no Hello ---- */

static void job_silent(job *j) {
    int fd = cli_connect(j->port);
    JCHECK(j, fd >= 0);
    struct timeval t0, t1;
    gettimeofday(&t0, NULL);
    JCHECK(j, cli_closed(fd));
    gettimeofday(&t1, NULL);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_usec - t0.tv_usec) / 1e6;
    JCHECK(j, s > 4.0 && s < 8.0);
    close(fd);
}

START_TEST(test_hello_timeout) {
    fixture f;
    fixture_config(&f, 21011);
    fixture_open(&f);
    job j = {.port = 21011};
    run_job(&f, &j, job_silent);
    ck_assert_uint_eq(stats(&f).conns_open, 0);
    fixture_close(&f);
}
END_TEST

int main(void) {
    Suite *s = suite_create("net_conns");
    TCase *tc = tcase_create("conns");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_conns_max);
    tcase_add_test(tc, test_output_overflow);
    tcase_add_test(tc, test_hello_timeout);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
