/*
 * kv-jepsen: one lossyfs (lossyfs/lossyfs.c) per node, mounted at
 * RUN/nI/ with the node's data dir RUN/nI/data inside it. A crash of node
 * i is kill -9 of its kvd (nemesis.c) and then fs_crash(i): the file system
 * drops everything kvd had not synced, as a power loss would.
 *
 * The daemons are children of the main thread (PR_SET_PDEATHSIG) and mount
 * with auto_unmount, so nothing stays mounted if kv-jepsen dies;
 * fs_unmount_all() is the orderly way.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jepsen.h"

static pid_t fs_pid[NODES_MAX];

void node_data_dir(int i, char *out, size_t n) {
    if (opt.lossyfs != NULL)
        snprintf(out, n, "%s/n%d/data", run_dir, i + 1);
    else
        snprintf(out, n, "%s/n%d", run_dir, i + 1);
}

static void fs_path(int i, const char *leaf, char *out, size_t n) {
    snprintf(out, n, "%s/n%d%s", run_dir, i + 1, leaf);
}

int fs_mount(int i) {
    char mnt[4200], ctl[4300], logp[4200];
    fs_path(i, "", mnt, sizeof mnt);
    fs_path(i, "/.lossyfs-crash", ctl, sizeof ctl);
    snprintf(logp, sizeof logp, "%s/n%d-lossyfs.log", run_dir, i + 1);
    if (mkdir(mnt, 0755) != 0 && errno != EEXIST)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(opt.lossyfs, opt.lossyfs, mnt, (char *)NULL);
        _exit(127);
    }
    fs_pid[i] = pid;
    for (int tries = 0; tries < 200; tries++) {
        struct stat st;
        if (stat(ctl, &st) == 0)
            return 0;
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            fs_pid[i] = 0;
            break;
        }
        sleep_ms(25);
    }
    fprintf(stderr, "kv-jepsen: lossyfs did not mount at %s (see %s)\n", mnt, logp);
    return -1;
}

/* The harness made RUN/nI/data with kvd init: its entry in the mount's root
 * is made durable here (an operator's directory, not kvd's to sync). */
int fs_sync_root(int i) {
    char mnt[4200];
    fs_path(i, "", mnt, sizeof mnt);
    int fd = open(mnt, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int fs_crash(int i, bool torn, uint64_t seed) {
    assert(nodes[i].pid == 0); /* a crash hits a dead kvd */
    char ctl[4300], cmd[64];
    fs_path(i, "/.lossyfs-crash", ctl, sizeof ctl);
    int len =
        torn ? snprintf(cmd, sizeof cmd, "torn %" PRIu64, seed) : snprintf(cmd, sizeof cmd, "drop");
    int fd = open(ctl, O_WRONLY);
    if (fd < 0)
        return -1;
    ssize_t w = write(fd, cmd, (size_t)len);
    close(fd);
    return w == len ? 0 : -1;
}

void fs_unmount_all(void) {
    for (int i = 0; i < NODES_MAX; i++) {
        if (fs_pid[i] <= 0)
            continue;
        char mnt[4200];
        fs_path(i, "", mnt, sizeof mnt);
        kill(fs_pid[i], SIGTERM);
        int st;
        for (int tries = 0; tries < 200 && waitpid(fs_pid[i], &st, WNOHANG) == 0; tries++)
            sleep_ms(10);
        kill(fs_pid[i], SIGKILL);
        waitpid(fs_pid[i], &st, 0);
        fs_pid[i] = 0;
        pid_t p = fork();
        if (p == 0) {
            int nul = open("/dev/null", O_WRONLY);
            if (nul >= 0) {
                dup2(nul, 1);
                dup2(nul, 2);
            }
            execlp("umount", "umount", "-l", mnt, (char *)NULL);
            _exit(127);
        }
        if (p > 0)
            waitpid(p, &st, 0);
    }
}

void fs_save_all(void) {
    for (int i = 0; i < opt.nodes; i++) {
        if (fs_pid[i] <= 0)
            continue;
        char from[4200], to[4200];
        node_data_dir(i, from, sizeof from);
        snprintf(to, sizeof to, "%s/n%d-data-saved", run_dir, i + 1);
        pid_t p = fork();
        if (p == 0) {
            execlp("cp", "cp", "-a", from, to, (char *)NULL);
            _exit(127);
        }
        int st;
        if (p > 0 && waitpid(p, &st, 0) == p && WIFEXITED(st) && WEXITSTATUS(st) == 0)
            printf("kv-jepsen: n%d's data dir (on lossyfs) saved to %s\n", i + 1, to);
    }
}
