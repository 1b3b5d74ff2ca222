/* Fuzz target: the handshake. A Hello as the accepting node decodes and
 * checks it (net__hello_check against a node "n1" of cluster "c1" that
 * knows peer "n2"), or a HelloReply as the connecting node decodes it.
 * Input: a flags byte (bit 0: HelloReply; bit 1: a token is configured),
 * then the protobuf bytes. */
#include "fuzz.h"

#include "kv/errors.h"
#include "net/net_int.h"

#include <string.h>

static net *bare_net(bool token) {
    static net n;
    static net_peer peer;
    memset(&n, 0, sizeof n);
    memset(&peer, 0, sizeof peer);
    peer.id = 2;
    snprintf(peer.name, sizeof peer.name, "n2");
    n.node_name = "n1";
    n.cluster_id = "c1";
    n.token = token ? "secret" : "";
    n.peers = &peer;
    return &n;
}

static void hello(const uint8_t *p, size_t len, bool token) {
    Kv__Hello *h = kv__hello__unpack(NULL, len, p);
    if (h == NULL)
        return;
    FUZZ_CHECK(h->cluster_id != NULL && h->node_name != NULL && h->token != NULL);
    char reason[NET_REASON_BYTES_MAX] = "";
    int code = net__hello_check(bare_net(token), h, reason, sizeof reason);
    FUZZ_CHECK(code == 0 || code == KV_EVERSION || code == KV_ECONFIG || code == KV_EAUTH);
    FUZZ_CHECK(strlen(reason) < sizeof reason && (code == 0) == (reason[0] == '\0'));
    if (code == 0) /* accepted: a client, or the known peer */
        FUZZ_CHECK(h->node_name[0] == '\0' || strcmp(h->node_name, "n2") == 0);
    kv__hello__free_unpacked(h, NULL);
}

static void hello_reply(const uint8_t *p, size_t len) {
    Kv__HelloReply *r = kv__hello_reply__unpack(NULL, len, p);
    if (r == NULL)
        return;
    FUZZ_CHECK(r->reason != NULL && r->node_name != NULL && r->cluster_id != NULL);
    char line[512];
    snprintf(line, sizeof line, "%.200s %s %s %d", r->reason, r->node_name, r->cluster_id, r->code);
    kv__hello_reply__free_unpacked(r, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    if (data[0] & 1)
        hello_reply(data + 1, size - 1);
    else
        hello(data + 1, size - 1, (data[0] & 2) != 0);
    return 0;
}
