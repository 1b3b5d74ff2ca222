/*
 * kv-jepsen: the kvd processes (see jepsen.h).
 *
 * Every fork and every waitpid of a node happens on the main thread. A node
 * is "expected up" while nodes[i].pid != 0; the nemesis clears pid when it
 * kills or stops one (and reaps it itself), so any other exit seen by
 * nodes_reap is one nobody asked for: it fails the run.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jepsen.h"
#include "kv/client.h"

node nodes[NODES_MAX];
atomic_int unexpected_exits;

int node_port(int i) {
    return opt.port_base + 1 + i;
}

/* kvd init of a founder of this run's cluster before its first start; its
 * output goes to fd. 0 when it succeeded. */
static int node_init(int fd, const char *kvd, const char *name, const char *data,
                     const char *listen_) {
    char token[64];
    snprintf(token, sizeof token, "jepsen-%d", (int)getpid());
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        net_enter_node(atoi(name + 1) - 1);
        execl(kvd, kvd, "init", "--name", name, "--data-dir", data, "--listen", listen_,
              "--cluster", cluster_arg, "--cluster-token", token, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "kv-jepsen: kvd init of %s failed (see its log)\n", name);
        return -1;
    }
    return 0;
}

static void node_exec(int i, const char *kvd, const char *name, const char *data,
                      const char *listen_) {
    char snap[16], via[64];
    snprintf(snap, sizeof snap, "%d", opt.snapshot_entries);
    const char *argv[16] = {kvd,        "--name", name,        "--data-dir", data,
                            "--listen", listen_,  "--cluster", cluster_arg,  "--snapshot-entries",
                            snap};
    int argc = 11;
    if (nodes[i].joined) { /* a new member: through any other member */
        node_addr((i + 1) % opt.nodes, via, sizeof via);
        argv[5] = "--join";
        argv[6] = via;
        argv[7] = "--listen";
        argv[8] = listen_;
    }
    if (opt.control == CONTROL_NO_FSYNC)
        argv[argc++] = "--unsafe-no-fsync";
    if (opt.read_lease)
        argv[argc++] = "--read-lease";
    argv[argc] = NULL;
    execv(kvd, (char *const *)argv);
    dprintf(2, "kv-jepsen: exec %s: %s\n", kvd, strerror(errno));
    _exit(127);
}

int node_start(int i) {
    char name[16], data[4200], listen_[64], logp[4200], kvd[4200];
    snprintf(name, sizeof name, "n%d", i + 1);
    node_data_dir(i, data, sizeof data);
    node_addr(i, listen_, sizeof listen_);
    snprintf(logp, sizeof logp, "%s/n%d.log", run_dir, i + 1);
    snprintf(kvd, sizeof kvd, "%s/kvd", opt.bin);
    int fd = open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "kv-jepsen: %s: %s\n", logp, strerror(errno));
        return -1;
    }
    if (nodes[i].starts == 0 && opt.lossyfs != NULL && fs_mount(i) != 0) {
        close(fd);
        return -1;
    }
    if (nodes[i].starts == 0 && (node_init(fd, kvd, name, data, listen_) != 0 ||
                                 (opt.lossyfs != NULL && fs_sync_root(i) != 0))) {
        close(fd);
        return -1;
    }
    nodes[i].starts++;
    dprintf(fd, "=== kv-jepsen: start %d of %s at t=%.3f\n", nodes[i].starts, name,
            (double)(now_ns() - t0_ns) / 1e9);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "kv-jepsen: fork: %s\n", strerror(errno));
        close(fd);
        return -1;
    }
    if (pid == 0) {
        /* Dies with the thread that forked it (always the main thread). */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1)
            _exit(127);
        dup2(fd, 1);
        dup2(fd, 2);
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0)
            dup2(nul, 0);
        net_enter_node(i);
        node_exec(i, kvd, name, data, listen_);
    }
    close(fd);
    nodes[i].pid = pid;
    nodes[i].paused = false;
    return 0;
}

int node_start_join(int i) {
    nodes[i].joined = true;
    return node_start(i);
}

int node_wipe(int i) {
    char data[4200];
    if (nodes[i].pid > 0)
        return -1;
    node_data_dir(i, data, sizeof data);
    return rm_rf(data);
}

int node_wait(int i, uint64_t ms) {
    uint64_t deadline = now_ns() + ms * 1000000u;
    for (;;) {
        int st;
        pid_t r = waitpid(nodes[i].pid, &st, WNOHANG);
        if (r == nodes[i].pid) {
            nodes[i].pid = 0;
            return st;
        }
        if (r < 0) {
            nodes[i].pid = 0;
            return -1;
        }
        if (now_ns() >= deadline)
            return -2;
        sleep_ms(10);
    }
}

void node_kill9(int i) {
    if (nodes[i].pid <= 0)
        return;
    kill(nodes[i].pid, SIGKILL);
    int st = node_wait(i, 10000);
    /* Killed by us, or it had exited before the signal landed. */
    if (st >= 0 && !(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)) {
        logf_("n%d: had exited on its own before kill -9 (status 0x%x)", i + 1, (unsigned)st);
        atomic_fetch_add(&unexpected_exits, 1);
    }
}

void node_pause(int i) {
    if (nodes[i].pid > 0 && kill(nodes[i].pid, SIGSTOP) == 0)
        nodes[i].paused = true;
}

void node_resume(int i) {
    if (nodes[i].pid > 0)
        kill(nodes[i].pid, SIGCONT);
    nodes[i].paused = false;
}

int node_stop(int i) {
    if (nodes[i].pid <= 0)
        return 0;
    kill(nodes[i].pid, SIGCONT);
    kill(nodes[i].pid, SIGTERM);
    int st = node_wait(i, 10000);
    if (st == -2) {
        logf_("nemesis: n%d did not stop within 10 s of SIGTERM: SIGKILL", i + 1);
        kill(nodes[i].pid, SIGKILL);
        st = node_wait(i, 10000);
    }
    return st;
}

void nodes_kill_all(void) {
    for (int i = 0; i < opt.nodes; i++)
        if (nodes[i].pid > 0) {
            kill(nodes[i].pid, SIGKILL);
            node_wait(i, 5000);
        }
}

void nodes_reap(void) {
    for (int i = 0; i < opt.nodes; i++) {
        if (nodes[i].pid <= 0)
            continue;
        int st;
        pid_t r = waitpid(nodes[i].pid, &st, WNOHANG);
        if (r == nodes[i].pid) {
            nodes[i].pid = 0;
            atomic_fetch_add(&unexpected_exits, 1);
            if (WIFEXITED(st))
                logf_("n%d: EXITED UNEXPECTEDLY with code %d (see n%d.log)", i + 1, WEXITSTATUS(st),
                      i + 1);
            else
                logf_("n%d: EXITED UNEXPECTEDLY on signal %d (see n%d.log)", i + 1,
                      WIFSIGNALED(st) ? WTERMSIG(st) : -1, i + 1);
        }
    }
}

void nodes_sleep(uint64_t ms) {
    uint64_t end = now_ns() + ms * 1000000u;
    for (;;) {
        nodes_reap();
        uint64_t now = now_ns();
        if (now >= end)
            return;
        uint64_t left = (end - now) / 1000000u;
        sleep_ms(left < 50 ? left : 50);
    }
}

/* kv_node_status of node i: its line (kv_free) or NULL. */
static char *node_status(int i, int timeout_ms) {
    struct kv_client_options o;
    kv_client_options_init(&o);
    o.timeout_ms = timeout_ms;
    o.connect_timeout_ms = 200;
    char ep[64];
    node_addr(i, ep, sizeof ep);
    kv_client *c;
    if (kv_client_open(&c, ep, &o) != 0)
        return NULL;
    char *line = NULL;
    if (kv_node_status(c, ep, &line) != 0)
        line = NULL;
    kv_client_close(c);
    return line;
}

/* The number after key= in a status line, or 0. */
static uint64_t status_u64(const char *line, const char *key) {
    const char *p = strstr(line, key);
    return p != NULL ? strtoull(p + strlen(key), NULL, 10) : 0;
}

int node_indexes(int i, uint64_t *commit, uint64_t *applied) {
    char *line = node_status(i, 500);
    if (line == NULL)
        return -1;
    *commit = status_u64(line, " commit=");
    *applied = status_u64(line, " applied=");
    kv_free(line);
    return 0;
}

int find_leader(void) {
    int found = -1;
    for (int i = 0; i < opt.nodes && found < 0; i++) {
        if (nodes[i].pid <= 0 || nodes[i].paused)
            continue;
        char *line = node_status(i, 500);
        if (line != NULL && strstr(line, "role=leader") != NULL)
            found = i;
        kv_free(line);
    }
    return found;
}

int nodes_check_up(uint64_t ms) {
    uint64_t deadline = now_ns() + ms * 1000000u;
    int down = 0;
    for (int i = 0; i < opt.nodes; i++) {
        char *line = NULL;
        while (nodes[i].pid > 0 && (line = node_status(i, 500)) == NULL && now_ns() < deadline)
            nodes_sleep(100);
        if (line == NULL) {
            logf_("n%d: did not come back (no status answer%s)", i + 1,
                  nodes[i].pid > 0 ? "" : "; not running");
            down++;
        }
        kv_free(line);
    }
    return down == 0 ? 0 : -1;
}
