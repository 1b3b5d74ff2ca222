/*
 * watch_many: opens COUNT connections to one node, each with one WATCH
 * (prefix "zz/", from the next write), and prints how the first Response
 * of each was answered: "ok=A busy=B other=C". The connections stay open
 * until every answer is in, so A is at most the node's KV_WATCHERS_MAX
 * (tests/cluster/test_watch.sh).
 *
 *   watch_many HOST PORT COUNT
 *
 * Exits 0, or 2 when it could not connect or a handshake or answer failed.
 */
#include "kv/errors.h"
#include "proto/kv.pb-c.h"
#include "rawframe.h"

#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define WAIT_MS 10000
#define COUNT_MAX 4096

/* Hello, then the WATCH: the connection, or -1. */
static int open_watch(const struct addrinfo *ai) {
    int fd = raw_dial(ai);
    if (fd < 0)
        return -1;
    Kv__Hello hello = KV__HELLO__INIT;
    hello.version = KV_WIRE_VERSION;
    uint32_t len;
    uint8_t *p = NULL;
    Kv__Request q = KV__REQUEST__INIT;
    q.id = 1;
    q.type = KV__REQUEST__TYPE__WATCH;
    q.key.data = (uint8_t *)"zz/";
    q.key.len = 3;
    if (raw_send_frame(fd, KV_FRAME_HELLO, &hello.base) != 0 ||
        (p = raw_read_frame(fd, KV_FRAME_HELLO_REPLY, &len, WAIT_MS)) == NULL ||
        raw_send_frame(fd, KV_FRAME_REQUEST, &q.base) != 0) {
        free(p);
        close(fd);
        return -1;
    }
    free(p);
    return fd;
}

int main(int argc, char **argv) {
    int count = argc == 4 ? atoi(argv[3]) : 0;
    if (count < 1 || count > COUNT_MAX) {
        fprintf(stderr, "usage: watch_many HOST PORT COUNT (1..%d)\n", COUNT_MAX);
        return 2;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(argv[1], argv[2], &hints, &ai) != 0)
        return 2;
    static int fds[COUNT_MAX];
    int ok = 0, busy = 0, other = 0, rc = 0;
    for (int i = 0; i < count && rc == 0; i++)
        if ((fds[i] = open_watch(ai)) < 0)
            rc = 2;
    for (int i = 0; i < count && rc == 0; i++) {
        uint32_t len;
        uint8_t *p = raw_read_frame(fds[i], KV_FRAME_RESPONSE, &len, WAIT_MS);
        Kv__Response *r = p != NULL ? kv__response__unpack(NULL, len, p) : NULL;
        free(p);
        if (r == NULL) {
            rc = 2;
            break;
        }
        ok += r->code == 0;
        busy += r->code == KV_EBUSY;
        other += r->code != 0 && r->code != KV_EBUSY;
        kv__response__free_unpacked(r, NULL);
    }
    for (int i = 0; i < count; i++)
        if (fds[i] > 0)
            close(fds[i]);
    freeaddrinfo(ai);
    if (rc != 0) {
        fprintf(stderr, "watch_many: a connection, handshake or answer failed\n");
        return rc;
    }
    printf("ok=%d busy=%d other=%d\n", ok, busy, other);
    return 0;
}
