/* Replays fuzz inputs without libFuzzer, so every build (gcc included)
 * runs each target over its checked-in corpus (ctest fuzz_<target>):
 *   fuzz-<target>-replay DIR_OR_FILE...
 * Files of a directory run in name order. Exit 0 when every input ran;
 * 1 when an argument cannot be read or holds no input (a lost corpus must
 * not pass as an empty one). A crash is the target's: it aborts. */
#include "fuzz.h"

#include <dirent.h>
#include <string.h>
#include <sys/stat.h>

#define REPLAY_INPUT_BYTES_MAX (64u * 1024u * 1024u)

static int run_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        return -1;
    }
    uint8_t *buf = malloc(REPLAY_INPUT_BYTES_MAX);
    size_t n = buf != NULL ? fread(buf, 1, REPLAY_INPUT_BYTES_MAX, f) : 0;
    int bad = buf == NULL || ferror(f) || !feof(f);
    fclose(f);
    if (bad) {
        fprintf(stderr, "replay: cannot read %s (or over %u bytes)\n", path,
                REPLAY_INPUT_BYTES_MAX);
        free(buf);
        return -1;
    }
    /* an exact-size copy, so ASan sees reads past the input */
    uint8_t *in = malloc(n > 0 ? n : 1);
    memcpy(in, buf, n);
    free(buf);
    LLVMFuzzerTestOneInput(in, n);
    free(in);
    return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b) {
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int run_dir(const char *dir, size_t *count) {
    struct dirent **names;
    int n = scandir(dir, &names, NULL, by_name);
    if (n < 0) {
        fprintf(stderr, "replay: cannot list %s\n", dir);
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
        if (names[i]->d_name[0] != '.' && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            if (run_file(path) != 0)
                rc = -1;
            else
                (*count)++;
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv) {
    size_t count = 0;
    int rc = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: no such file or directory: %s\n", argv[i]);
            rc = 1;
        } else if (S_ISDIR(st.st_mode) ? run_dir(argv[i], &count) != 0 : run_file(argv[i]) != 0) {
            rc = 1;
        } else if (!S_ISDIR(st.st_mode)) {
            count++;
        }
    }
    printf("replayed %zu inputs\n", count);
    return rc != 0 || count == 0 ? 1 : 0;
}
