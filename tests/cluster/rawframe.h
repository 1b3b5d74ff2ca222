/* Frames on a plain socket, for the hand-made clients of the cluster tests
 * (rawreq.c, watch_many.c): what a client could send that the library never
 * would, without the library. */
#ifndef KV_TESTS_CLUSTER_RAWFRAME_H
#define KV_TESTS_CLUSTER_RAWFRAME_H

#include "kv/limits.h"
#include "net/frame.h"
#include "proto/kv.pb-c.h"

#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/* A connection to ai, or -1. */
static inline int raw_dial(const struct addrinfo *ai) {
    int fd = socket(ai->ai_family, ai->ai_socktype, 0);
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static inline int raw_send_frame(int fd, uint8_t type, const ProtobufCMessage *m) {
    uint8_t *buf;
    size_t len;
    if (kv_frame_pack(type, m, &buf, &len) != 0)
        return -1;
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
    free(buf);
    return n == (ssize_t)len ? 0 : -1;
}

/* len bytes into p, waiting at most wait_ms for each piece: 0 or -1. */
static inline int raw_read_full(int fd, void *p, size_t len, int wait_ms) {
    for (size_t got = 0; got < len;) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, wait_ms) != 1)
            return -1;
        ssize_t n = recv(fd, (char *)p + got, len - got, 0);
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return 0;
}

/* The next frame, which must be of type want: its checked payload
 * (malloc'd, the caller frees) and *len, or NULL. */
static inline uint8_t *raw_read_frame(int fd, uint8_t want, uint32_t *len, int wait_ms) {
    uint8_t hdr[KV_FRAME_HEADER_BYTES];
    kv_frame_header h;
    if (raw_read_full(fd, hdr, sizeof hdr, wait_ms) != 0 ||
        kv_frame_header_decode(hdr, KV_FRAME_BYTES_MAX, &h) != 0 || h.type != want)
        return NULL;
    uint8_t *p = malloc(h.length + 1u);
    if (p == NULL || raw_read_full(fd, p, h.length, wait_ms) != 0 ||
        kv_frame_payload_check(&h, p) != 0) {
        free(p);
        return NULL;
    }
    *len = h.length;
    return p;
}

#endif
