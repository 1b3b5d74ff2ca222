/*
 * kv-jepsen: the network of a --netns run (netns.sh does the work): node i
 * in namespace PREFIXn<i+1> at 10.77.0.<i+1>, the whole kv-jepsen process
 * (clients, status probes, the final read) in PREFIXc, all on one bridge.
 * Without --netns the nodes share loopback and there are no partitions.
 *
 * A partition is a matrix: drop[i] is the set of nodes whose packets node i
 * throws away on input (nftables in its own namespace). Clients are never
 * cut off: a partition is between nodes, as in Jepsen.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jepsen.h"

static char prefix[32];
static bool up;

void node_host(int i, char *out, size_t n) {
    if (opt.netns != NULL)
        snprintf(out, n, "10.77.0.%d", i + 1);
    else
        snprintf(out, n, "127.0.0.1");
}

void node_addr(int i, char *out, size_t n) {
    char host[32];
    node_host(i, host, sizeof host);
    snprintf(out, n, "%s:%d", host, node_port(i));
}

/* Runs netns.sh with args; its exit code, or -1. */
static int netns_sh(const char *const *args) {
    const char *argv[16] = {"bash", opt.netns};
    int argc = 2;
    for (int i = 0; args[i] != NULL && argc < 15; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;
    pid_t p = fork();
    if (p < 0)
        return -1;
    if (p == 0) {
        execvp("bash", (char *const *)argv);
        _exit(127);
    }
    int st;
    if (waitpid(p, &st, 0) != p || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

static int enter_ns(const char *name) {
    char path[128];
    snprintf(path, sizeof path, "/run/netns/%s", name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = setns(fd, CLONE_NEWNET);
    close(fd);
    return rc;
}

/* Every peer link through its proxy (proxy.c): DNAT in each node's
 * namespace. 0 or -1. */
static int net_proxy_up(void) {
    if (proxy_start() != 0)
        return -1;
    for (int i = 0; i < opt.nodes; i++) {
        char node[16], maps[NODES_MAX][64];
        const char *args[NODES_MAX + 4] = {"nat", prefix, node};
        int argc = 3;
        snprintf(node, sizeof node, "%d", i + 1);
        for (int j = 0; j < opt.nodes; j++) {
            if (j == i)
                continue;
            char host[32];
            node_host(j, host, sizeof host);
            snprintf(maps[j], sizeof maps[j], "%s:%d:%d", host, node_port(j), proxy_port(i, j));
            args[argc++] = maps[j];
        }
        args[argc] = NULL;
        if (netns_sh(args) != 0)
            return -1;
    }
    logf_("network: every peer link goes through its frame-aware proxy");
    return 0;
}

int net_up(void) {
    if (opt.netns == NULL)
        return 0;
    snprintf(prefix, sizeof prefix, "kvj%d", (int)getpid());
    char n[8];
    snprintf(n, sizeof n, "%d", opt.nodes);
    netns_sh((const char *[]){"sweep", NULL});
    int rc = netns_sh((const char *[]){"up", prefix, n, NULL});
    if (rc != 0) {
        fprintf(stderr, "kv-jepsen: netns.sh up failed (%d)\n", rc);
        return rc == 77 ? 77 : -1;
    }
    up = true;
    char cns[48];
    snprintf(cns, sizeof cns, "%sc", prefix);
    if (enter_ns(cns) != 0) {
        fprintf(stderr, "kv-jepsen: setns %s: %s\n", cns, strerror(errno));
        return -1;
    }
    logf_("network: namespaces %s*, nodes 10.77.0.1-%d, clients 10.77.0.100", prefix, opt.nodes);
    return (opt.nemeses & (1u << NEM_WIRE)) != 0 ? net_proxy_up() : 0;
}

void net_enter_node(int i) {
    if (opt.netns == NULL)
        return;
    char ns[48];
    snprintf(ns, sizeof ns, "%sn%d", prefix, i + 1);
    if (enter_ns(ns) != 0) {
        dprintf(2, "kv-jepsen: setns %s: %s\n", ns, strerror(errno));
        _exit(126);
    }
}

int net_drop(int i, uint32_t srcs) {
    if (!up)
        return -1;
    char node[16], ids[NODES_MAX][16];
    const char *args[NODES_MAX + 4] = {"drop", prefix, node};
    int argc = 3;
    snprintf(node, sizeof node, "%d", i + 1);
    for (int j = 0; j < opt.nodes; j++)
        if (srcs & (1u << j)) {
            snprintf(ids[j], sizeof ids[j], "%d", j + 1);
            args[argc++] = ids[j];
        }
    args[argc] = NULL;
    return netns_sh(args) == 0 ? 0 : -1;
}

int net_heal(void) {
    int rc = 0;
    for (int i = 0; up && i < opt.nodes; i++)
        rc |= net_drop(i, 0);
    if (up && opt.heal_reset) {
        /* A workaround of a known kv bug (README): kvd keeps a peer link
         * through a partition and then waits out the kernel's retransmission
         * backoff. Destroying the links makes kvd dial afresh. */
        char n[8];
        snprintf(n, sizeof n, "%d", opt.nodes);
        rc |= netns_sh((const char *[]){"reset", prefix, n, NULL}) == 0 ? 0 : -1;
    }
    return rc;
}

void net_down(void) {
    if (!up)
        return;
    up = false;
    netns_sh((const char *[]){"down", prefix, NULL});
}
