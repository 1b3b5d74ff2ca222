/*
 * kv-jepsen: the disk-fault nemesis ("corrupt"). A follower is stopped, one
 * byte of what it synced is flipped on its disk (a log record with others
 * after it, or a file of its newest snapshot), and it is started again: it
 * must refuse to serve (exit 4, CORRUPT) naming the file and offset; the
 * others go on meanwhile. Then the node is replaced as an operator would:
 * removed, wiped, added back as a new member. A damaged snapshot is named
 * and skipped by kvd when an older one and the log can replace it: then the
 * node serves on and the run's checks judge what it serves.
 *
 * Where the log's records end comes from `kvd check` before the flip (a
 * TORN line names the end) and from the segment's zeros (it is preallocated). The byte is in the
 * first half of that, so valid records follow it: damage with valid records
 * after it is corruption, never a torn tail (docs/rules.md).
 */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jepsen.h"

/* The byte is in the first half of the records, and the records are at
 * least this long: a record (a batch of entries) may be several KiB, and
 * damage in the last one is a torn tail by kvd's rule. */
#define FLIP_LOG_BYTES_MIN (32u * 1024u)
#define FLIP_HEAD_SKIP 64u

/* kvd check of dir into out (NUL-terminated, truncated). 0 or -1. */
static int run_check(const char *dir, char *out, size_t n) {
    char kvd[4200];
    snprintf(kvd, sizeof kvd, "%s/kvd", opt.bin);
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    pid_t p = fork();
    if (p == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        execl(kvd, kvd, "check", "--data-dir", dir, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    size_t len = 0;
    ssize_t r;
    while (len + 1 < n && (r = read(fds[0], out + len, n - 1 - len)) > 0)
        len += (size_t)r;
    out[len] = 0;
    close(fds[0]);
    int st;
    waitpid(p, &st, 0);
    return 0;
}

/* The newest entry of dir whose name ends with suffix (names sort by
 * index), into out. 0 or -1. */
static int newest(const char *dir, const char *suffix, char *out, size_t n) {
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    char best[256] = "";
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name), sl = strlen(suffix);
        if (e->d_name[0] != '.' && l >= sl && strcmp(e->d_name + l - sl, suffix) == 0 &&
            strcmp(e->d_name, best) > 0 && l < sizeof best)
            strcpy(best, e->d_name);
    }
    closedir(d);
    if (best[0] == 0)
        return -1;
    snprintf(out, n, "%s/%s", dir, best);
    return 0;
}

/* One past the last non-zero byte of file (segments are preallocated with
 * zeros past their records), at most size. */
static uint64_t data_end(const char *file, uint64_t size) {
    int fd = open(file, O_RDONLY);
    if (fd < 0)
        return 0;
    unsigned char buf[65536];
    uint64_t end = size;
    while (end > 0) {
        uint64_t from = end > sizeof buf ? end - sizeof buf : 0;
        ssize_t n = pread(fd, buf, (size_t)(end - from), (off_t)from);
        if (n != (ssize_t)(end - from))
            break;
        ssize_t k = n - 1;
        while (k >= 0 && buf[k] == 0)
            k--;
        if (k >= 0) {
            end = from + (uint64_t)k + 1;
            break;
        }
        end = from;
    }
    close(fd);
    return end;
}

/* Picks the file and offset to flip in data dir; 0 or -1 (nothing fit). */
static int pick_target(rng *r, const char *data, char *file, size_t n, uint64_t *off) {
    char dir[4300], report[8192];
    bool snap = rng_range(r, 0, 2) == 0;
    struct stat st;
    if (snap) {
        char sd[4400];
        snprintf(dir, sizeof dir, "%s/snap", data);
        if (newest(dir, "", sd, sizeof sd) != 0 || newest(sd, ".kv", file, n) != 0 ||
            stat(file, &st) != 0 || st.st_size < 16)
            return -1;
        *off = rng_range(r, 0, (uint64_t)st.st_size - 1);
        return 0;
    }
    snprintf(dir, sizeof dir, "%s/wal", data);
    if (newest(dir, ".wal", file, n) != 0 || stat(file, &st) != 0 ||
        run_check(data, report, sizeof report) != 0)
        return -1;
    uint64_t end = (uint64_t)st.st_size;
    const char *torn = strstr(report, "TORN ");
    if (torn != NULL && strncmp(torn + 5, file, strlen(file)) == 0) {
        const char *o = strstr(torn, " offset ");
        if (o != NULL)
            end = strtoull(o + 8, NULL, 10);
    }
    end = data_end(file, end);
    if (end < FLIP_LOG_BYTES_MIN)
        return -1;
    *off = rng_range(r, FLIP_HEAD_SKIP, end / 2);
    return 0;
}

/* XORs one byte at off and syncs it (through lossyfs it must be durable). */
static int flip(const char *file, uint64_t off) {
    int fd = open(file, O_RDWR);
    if (fd < 0)
        return -1;
    unsigned char b;
    int rc = -1;
    if (pread(fd, &b, 1, (off_t)off) == 1) {
        b ^= 0x5a;
        rc = pwrite(fd, &b, 1, (off_t)off) == 1 && fsync(fd) == 0 ? 0 : -1;
    }
    close(fd);
    return rc;
}

/* Whether node i's log names file (and, for the log, "offset"). */
static bool log_names(int i, const char *file, bool want_offset) {
    char logp[4200], buf[16384];
    snprintf(logp, sizeof logp, "%s/n%d.log", run_dir, i + 1);
    int fd = open(logp, O_RDONLY);
    if (fd < 0)
        return false;
    off_t size = lseek(fd, 0, SEEK_END);
    off_t from = size > (off_t)sizeof buf - 1 ? size - (off_t)sizeof buf + 1 : 0;
    ssize_t n = pread(fd, buf, sizeof buf - 1, from);
    close(fd);
    buf[n > 0 ? n : 0] = 0;
    for (const char *hit = strstr(buf, file); hit != NULL; hit = strstr(hit + 1, file)) {
        const char *bol = hit;
        while (bol > buf && bol[-1] != '\n')
            bol--;
        const char *eol = strchr(hit, '\n');
        size_t len = eol != NULL ? (size_t)(eol - bol) : strlen(bol);
        char line[1024];
        len = len < sizeof line - 1 ? len : sizeof line - 1;
        memcpy(line, bol, len);
        line[len] = 0;
        if (strstr(line, "CORRUPT") != NULL && (!want_offset || strstr(line, " offset ") != NULL))
            return true;
    }
    return false;
}

int nemesis_corrupt(rng *r) {
    int i = (int)rng_range(r, 0, (uint64_t)opt.nodes - 1);
    int leader = find_leader();
    if (i == leader)
        i = (i + 1) % opt.nodes;
    char data[4200], file[4600];
    uint64_t off;
    node_data_dir(i, data, sizeof data);
    int st = node_stop(i);
    if (st != 0)
        logf_("nemesis: n%d stopped with status 0x%x", i + 1, (unsigned)st);
    if (pick_target(r, data, file, sizeof file, &off) != 0 || flip(file, off) != 0) {
        logf_("nemesis: corrupt: nothing synced to flip on n%d; restarted as is", i + 1);
        nemesis_counts[NEM_CORRUPT]--; /* did not happen: try again later */
        return node_start(i);
    }
    bool is_log = strstr(file, ".wal") != NULL;
    logf_("nemesis: flipped the byte at %s offset %" PRIu64 " of n%d", file, off, i + 1);
    if (node_start(i) != 0)
        return -1;
    st = node_wait(i, is_log ? 15000 : 5000);
    bool refused = st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 4;
    bool named = log_names(i, file, is_log);
    if (!is_log && st == -2 && named) {
        /* kvd verifies its snapshots at start and skips a damaged one for
         * an older snapshot and the log, which it keeps: that node serves
         * on, and the run's checks cover what it serves. */
        logf_("nemesis: n%d named the damaged snapshot and fell back to an older one", i + 1);
        return 0;
    }
    if (!refused || !named) {
        logf_("nemesis: n%d DID NOT REFUSE its corrupt log as it must (status 0x%x, file and "
              "offset named: %s)",
              i + 1, (unsigned)st, named ? "yes" : "no");
        atomic_fetch_add(&unexpected_exits, 1);
    } else {
        logf_("nemesis: n%d refused to start (CORRUPT, file%s named); replacing it", i + 1,
              is_log ? " and offset" : "");
    }
    return member_replace(i);
}
