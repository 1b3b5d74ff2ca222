/* kv_watch against a scripted node (one thread, one connection at a time):
 * the revision it asks for at each reconnection, an entry's events split
 * between Responses and resent whole after a lost connection (delivered
 * once), CANCELED and a progress Response (resumed from the right place),
 * COMPACTED (returned, the oldest revision named), the callback's return,
 * and bad arguments. */
#include "kv/client.h"
#include "kv/errors.h"
#include "net/frame.h"
#include "proto/kv.pb-c.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* One event a script sends: type 'P' or 'D', key, revision. */
typedef struct sev {
    char type;
    const char *key;
    uint64_t rev;
} sev;

/* One Response of a script: events (up to 4), revision, code (0, or a
 * final code); `close` ends the connection after it instead. */
typedef struct sresp {
    sev ev[4];
    int n;
    uint64_t revision;
    int code;
    bool close;
} sresp;

#define CONNS_MAX 8
typedef struct script {
    sresp resp[CONNS_MAX][4]; /* per connection, ended by one with close or code */
    int conns;
    uint64_t asked[CONNS_MAX]; /* the WATCH rev of each connection */
    char prefix[CONNS_MAX][16];
    int lfd;
    int port;
    pthread_t th;
} script;

static void send_frame(int fd, uint8_t type, const ProtobufCMessage *m) {
    uint8_t *buf;
    size_t len;
    ck_assert_int_eq(kv_frame_pack(type, m, &buf, &len), 0);
    ck_assert_int_eq(send(fd, buf, len, MSG_NOSIGNAL), (ssize_t)len);
    free(buf);
}

static bool read_all(int fd, void *p, size_t n) {
    for (size_t off = 0; off < n;) {
        ssize_t r = recv(fd, (uint8_t *)p + off, n - off, 0);
        if (r <= 0)
            return false;
        off += (size_t)r;
    }
    return true;
}

/* The next frame's payload (malloc'd) or NULL. */
static uint8_t *read_frame(int fd, uint8_t *type, uint32_t *len) {
    uint8_t h[KV_FRAME_HEADER_BYTES];
    kv_frame_header fh;
    if (!read_all(fd, h, sizeof h) || kv_frame_header_decode(h, KV_FRAME_BYTES_MAX, &fh) != 0)
        return NULL;
    uint8_t *p = malloc(fh.length + 1);
    if (!read_all(fd, p, fh.length)) {
        free(p);
        return NULL;
    }
    *type = fh.type;
    *len = fh.length;
    return p;
}

static void send_resp(int fd, uint64_t id, const sresp *r) {
    Kv__WatchEvent ev[4], *ptrs[4];
    Kv__KeyValue kv[4];
    for (int i = 0; i < r->n; i++) {
        kv__key_value__init(&kv[i]);
        kv[i].key.data = (uint8_t *)r->ev[i].key;
        kv[i].key.len = strlen(r->ev[i].key);
        kv[i].value.data = (uint8_t *)"v";
        kv[i].value.len = r->ev[i].type == 'P' ? 1 : 0;
        kv[i].mod_rev = r->ev[i].rev;
        kv__watch_event__init(&ev[i]);
        ev[i].type =
            r->ev[i].type == 'P' ? KV__WATCH_EVENT__TYPE__PUT : KV__WATCH_EVENT__TYPE__DELETE;
        ev[i].kv = &kv[i];
        ptrs[i] = &ev[i];
    }
    Kv__Response resp = KV__RESPONSE__INIT;
    resp.id = id;
    resp.code = r->code;
    resp.revision = r->revision;
    resp.events = ptrs;
    resp.n_events = (size_t)r->n;
    send_frame(fd, KV_FRAME_RESPONSE, &resp.base);
}

/* One connection: Hello, WATCH (recorded), the script's Responses. */
static void serve_conn(script *s, int fd, int k) {
    uint8_t type;
    uint32_t len;
    uint8_t *p = read_frame(fd, &type, &len);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(type, KV_FRAME_HELLO);
    free(p);
    Kv__HelloReply hr = KV__HELLO_REPLY__INIT;
    send_frame(fd, KV_FRAME_HELLO_REPLY, &hr.base);
    p = read_frame(fd, &type, &len);
    ck_assert_ptr_nonnull(p);
    Kv__Request *q = kv__request__unpack(NULL, len, p);
    free(p);
    ck_assert_ptr_nonnull(q);
    ck_assert_int_eq(q->type, KV__REQUEST__TYPE__WATCH);
    s->asked[k] = q->rev;
    snprintf(s->prefix[k], sizeof s->prefix[k], "%.*s", (int)q->key.len, (char *)q->key.data);
    for (int i = 0; i < 4; i++) {
        const sresp *r = &s->resp[k][i];
        if (r->close)
            break;
        send_resp(fd, q->id, r);
        if (r->code != 0)
            break;
    }
    kv__request__free_unpacked(q, NULL);
    usleep(20000); /* let the client read before the close */
}

/* kv_client_open's own connection: Hello answered, then left open. */
static int serve_main_conn(script *s) {
    int fd = accept(s->lfd, NULL, NULL);
    ck_assert_int_ge(fd, 0);
    uint8_t type;
    uint32_t len;
    uint8_t *p = read_frame(fd, &type, &len);
    ck_assert_ptr_nonnull(p);
    free(p);
    Kv__HelloReply hr = KV__HELLO_REPLY__INIT;
    send_frame(fd, KV_FRAME_HELLO_REPLY, &hr.base);
    return fd;
}

static void *serve(void *arg) {
    script *s = arg;
    int main_fd = serve_main_conn(s);
    for (int k = 0; k < s->conns; k++) {
        int fd = accept(s->lfd, NULL, NULL);
        ck_assert_int_ge(fd, 0);
        serve_conn(s, fd, k);
        close(fd);
    }
    close(main_fd);
    return NULL;
}

static void script_start(script *s) {
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(s->lfd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(s->lfd, 4), 0);
    socklen_t alen = sizeof a;
    getsockname(s->lfd, (struct sockaddr *)&a, &alen);
    s->port = ntohs(a.sin_port);
    ck_assert_int_eq(pthread_create(&s->th, NULL, serve, s), 0);
}

static kv_client *client_for(script *s) {
    char ep[64];
    snprintf(ep, sizeof ep, "127.0.0.1:%d", s->port);
    kv_client *c = NULL;
    ck_assert_int_eq(kv_client_open(&c, ep, NULL), 0);
    return c;
}

/* What the callback saw, "P key rev" lines; stops (returns stop_rc) after
 * stop_after events. */
typedef struct got {
    char text[1024];
    size_t len;
    int events, stop_after, stop_rc;
} got;

static int on_event(void *arg, const kv_event *ev) {
    got *g = arg;
    if (ev == NULL)
        return 0;
    g->len += (size_t)snprintf(g->text + g->len, sizeof g->text - g->len, "%c %.*s %llu\n",
                               ev->type == KV_EVENT_PUT ? 'P' : 'D', (int)ev->key_len,
                               (const char *)ev->key, (unsigned long long)ev->revision);
    g->events++;
    return g->stop_after > 0 && g->events >= g->stop_after ? g->stop_rc : 0;
}

/* Revision 6 has two events on the prefix; the first connection sends one
 * of them and is lost; CANCELED, a progress Response, then COMPACTED. */
START_TEST(test_resume_split_cancel_compacted) {
    static script s;
    memset(&s, 0, sizeof s);
    s.conns = 4;
    s.resp[0][0] = (sresp){.ev = {{'P', "a1", 5}, {'P', "a2", 6}}, .n = 2, .revision = 5};
    s.resp[0][1] = (sresp){.close = true};
    s.resp[1][0] =
        (sresp){.ev = {{'P', "a2", 6}, {'P', "a3", 6}, {'D', "a1", 8}}, .n = 3, .revision = 8};
    s.resp[1][1] = (sresp){.code = KV_ECANCELED, .revision = 8};
    s.resp[2][0] = (sresp){.revision = 20}; /* progress: nothing on the prefix through 20 */
    s.resp[2][1] = (sresp){.close = true};
    s.resp[3][0] = (sresp){.code = KV_ECOMPACTED, .revision = 30};
    script_start(&s);
    kv_client *c = client_for(&s);
    got g = {0};
    int rc = kv_watch(c, "a", 1, 5, on_event, &g);
    pthread_join(s.th, NULL);
    close(s.lfd);
    ck_assert_int_eq(rc, KV_ECOMPACTED);
    ck_assert_msg(strstr(kv_errstr(), "30") != NULL, "kv_errstr: %s", kv_errstr());
    ck_assert_str_eq(g.text, "P a1 5\nP a2 6\nP a3 6\nD a1 8\n");
    ck_assert_uint_eq(s.asked[0], 5);
    ck_assert_uint_eq(s.asked[1], 6);  /* revision 6 again, its first event skipped */
    ck_assert_uint_eq(s.asked[2], 9);  /* after revision 8, complete */
    ck_assert_uint_eq(s.asked[3], 21); /* after the progress */
    ck_assert_str_eq(s.prefix[3], "a");
    kv_client_close(c);
}
END_TEST

/* from_rev 0 asks for the node's next write; the callback's return ends
 * kv_watch, which returns it; a repeated event is never delivered twice. */
START_TEST(test_from_now_and_callback_stop) {
    static script s;
    memset(&s, 0, sizeof s);
    s.conns = 1;
    s.resp[0][0] = (sresp){.revision = 41};
    s.resp[0][1] =
        (sresp){.ev = {{'P', "k", 42}, {'P', "k", 42}, {'P', "j", 43}}, .n = 3, .revision = 43};
    s.resp[0][2] = (sresp){.ev = {{'D', "k", 44}}, .n = 1, .revision = 44};
    script_start(&s);
    kv_client *c = client_for(&s);
    got g = {.stop_after = 3, .stop_rc = 7};
    int rc = kv_watch(c, NULL, 0, 0, on_event, &g);
    pthread_join(s.th, NULL);
    close(s.lfd);
    ck_assert_int_eq(rc, 7);
    ck_assert_uint_eq(s.asked[0], 0);
    /* the second "k 42" is a node's repeat within one revision: it counts
     * as that revision's second event, so it is delivered (a node never
     * sends one twice on one stream) */
    ck_assert_str_eq(g.text, "P k 42\nP k 42\nP j 43\n");
    kv_client_close(c);
}
END_TEST

START_TEST(test_bad_arguments) {
    static script s;
    memset(&s, 0, sizeof s);
    script_start(&s);
    kv_client *c = client_for(&s);
    pthread_join(s.th, NULL);
    close(s.lfd);
    got g = {0};
    ck_assert_int_eq(kv_watch(NULL, "a", 1, 0, on_event, &g), KV_EINVAL);
    ck_assert_int_eq(kv_watch(c, "a", 1, 0, NULL, &g), KV_EINVAL);
    ck_assert_int_eq(kv_watch(c, NULL, 1, 0, on_event, &g), KV_EINVAL);
    static char big[4097];
    ck_assert_int_eq(kv_watch(c, big, sizeof big, 0, on_event, &g), KV_ETOOBIG);
    kv_client_close(c);
}
END_TEST

int main(void) {
    Suite *s = suite_create("client_watch");
    TCase *t = tcase_create("watch");
    tcase_set_timeout(t, 20);
    tcase_add_test(t, test_resume_split_cancel_compacted);
    tcase_add_test(t, test_from_now_and_callback_stop);
    tcase_add_test(t, test_bad_arguments);
    suite_add_tcase(s, t);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
