/*
 * rawreq: sends a node one request the client library would never send,
 * and prints what comes back. For tests of a node's answers to requests a
 * hand-made client could send (tests/cluster/test_garbage.sh).
 *
 *   rawreq HOST PORT TYPE [KEY [VALUE]]
 *
 * TYPE: a kv.Request.Type number (proto/kv.proto). An empty KEY ("") sends
 * no key. Prints "code=WORD detail=..." for the response and exits 0, or
 * "no reply" and exits 1 when none came within 5 s, or exits 2 when it could
 * not connect or the handshake failed.
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

#define RAWREQ_WAIT_MS 5000

static int dial(const char *host, const char *port) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(host, port, &hints, &res) != 0)
        return -1;
    int fd = raw_dial(res);
    freeaddrinfo(res);
    return fd;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: rawreq HOST PORT TYPE [KEY [VALUE]]\n");
        return 2;
    }
    int fd = dial(argv[1], argv[2]);
    if (fd < 0) {
        fprintf(stderr, "rawreq: cannot connect to %s:%s\n", argv[1], argv[2]);
        return 2;
    }
    Kv__Hello hello = KV__HELLO__INIT;
    hello.version = KV_WIRE_VERSION;
    uint32_t len;
    uint8_t *p;
    if (raw_send_frame(fd, KV_FRAME_HELLO, &hello.base) != 0 ||
        (p = raw_read_frame(fd, KV_FRAME_HELLO_REPLY, &len, RAWREQ_WAIT_MS)) == NULL) {
        fprintf(stderr, "rawreq: no handshake\n");
        return 2;
    }
    free(p);
    Kv__Request q = KV__REQUEST__INIT;
    q.id = 1;
    q.type = (Kv__Request__Type)atoi(argv[3]);
    if (argc > 4) {
        q.key.data = (uint8_t *)argv[4];
        q.key.len = strlen(argv[4]);
    }
    if (argc > 5) {
        q.value.data = (uint8_t *)argv[5];
        q.value.len = strlen(argv[5]);
    }
    if (raw_send_frame(fd, KV_FRAME_REQUEST, &q.base) != 0 ||
        (p = raw_read_frame(fd, KV_FRAME_RESPONSE, &len, RAWREQ_WAIT_MS)) == NULL) {
        printf("no reply\n");
        return 1;
    }
    Kv__Response *r = kv__response__unpack(NULL, len, p);
    free(p);
    if (r == NULL) {
        printf("no reply (undecodable)\n");
        return 1;
    }
    printf("code=%s detail=%s\n", r->code == 0 ? "OK" : kv_errword(r->code), r->detail);
    kv__response__free_unpacked(r, NULL);
    close(fd);
    return 0;
}
