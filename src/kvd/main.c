/*
 * kvd: the kv node.
 *
 *   kvd --name N --data-dir DIR --listen HOST:PORT --cluster ...   run a node
 *   kvd init --name N --data-dir DIR --cluster ... [--cluster-token T]
 *                                a founding member's data dir of a new cluster
 *   kvd restore --from FILE --data-dir DIR --name N --cluster ...   a data dir
 *                                from a snapshot file (kvcli snapshot save)
 *   kvd recover --data-dir DIR --name N   a one-node cluster from a survivor
 *   kvd ... --print-config       the resolved flags and config file; touches nothing
 *   kvd check --data-dir DIR     verify a data dir offline (exit 0 clean or
 *                                torn tail only, 4 corrupt, 2 usage)
 *   kvd version
 *
 * Exit codes are shared by every mode: 0 done, 2 usage or config error,
 * 3 data dir in use, 4 corrupt data, 5 fatal I/O error.
 */
#include "common/logging.h"
#include "kvd/check.h"
#include "kvd/serve.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define KVD_VERSION "0.1.0"

static void usage(FILE *out) {
    kvd_serve_usage(out, KVD_MODE_SERVE);
    fprintf(out,
            "\n"
            "other commands:\n"
            "       kvd init --name N --data-dir DIR --cluster N1=HOST:PORT,...\n"
            "                [--cluster-token TOKEN | --cluster-id HEX32] [--listen HOST:PORT]\n"
            "                [--config FILE]\n"
            "       kvd restore --from FILE --data-dir DIR --name N --cluster N1=HOST:PORT,...\n"
            "       kvd recover --data-dir DIR --name N\n"
            "       kvd check --data-dir DIR\n"
            "       kvd version\n"
            "\n"
            "  init      makes DIR the data dir of a founding member of a new\n"
            "            cluster (run once on each founder, with the same --cluster\n"
            "            and --cluster-token, before the first start);\n"
            "            a data dir kvd init did not make is never bootstrapped:\n"
            "            a node whose disk was replaced rejoins with --join after\n"
            "            kvcli member remove/add.\n"
            "  restore   a data dir of a new cluster from a snapshot file.\n"
            "  recover   a one-node cluster from a survivor's data dir.\n"
            "  check     verify every log record, both hard-state slots, every\n"
            "            snapshot and the RocksDB state of a data dir; one line\n"
            "            per problem (CORRUPT, TORN, MISSING, VERSION) naming the\n"
            "            file and byte offset. Exit 0 clean (a torn tail is\n"
            "            reported but harmless), 4 corrupt, 2 usage error.\n"
            "\n"
            "kvd init --help, kvd restore --help, kvd recover --help list their flags.\n");
}

static int cmd_check(int argc, char **argv) {
    static const struct option opts[] = {{"data-dir", required_argument, NULL, 'd'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *dir = NULL;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            dir = optarg;
            break;
        case 'h':
            usage(stdout);
            return KVD_EXIT_OK;
        default:
            fprintf(stderr, "kvd check: unknown or incomplete flag '%s'\n", argv[optind - 1]);
            usage(stderr);
            return KVD_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "kvd check: unexpected argument '%s'\n", argv[optind]);
        return KVD_EXIT_USAGE;
    }
    if (dir == NULL) {
        fprintf(stderr, "kvd check: --data-dir DIR is required\n");
        return KVD_EXIT_USAGE;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "kvd check: %s: no such directory\n", dir);
        return KVD_EXIT_USAGE;
    }
    return kvd_check(dir, stdout);
}

int main(int argc, char **argv) {
    kv_log_daemon(); /* timestamps, or priorities under the journal */
    if (argc < 2) {
        usage(stderr);
        return KVD_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strncmp(cmd, "--", 2) == 0 && strcmp(cmd, "--help") != 0 && strcmp(cmd, "--version") != 0)
        return kvd_serve(argc, argv, KVD_MODE_SERVE);
    if (strcmp(cmd, "init") == 0)
        return kvd_serve(argc - 1, argv + 1, KVD_MODE_INIT);
    if (strcmp(cmd, "restore") == 0)
        return kvd_serve(argc - 1, argv + 1, KVD_MODE_RESTORE);
    if (strcmp(cmd, "recover") == 0)
        return kvd_serve(argc - 1, argv + 1, KVD_MODE_RECOVER);
    if (strcmp(cmd, "check") == 0)
        return cmd_check(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("kvd %s\n", KVD_VERSION);
        return KVD_EXIT_OK;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return KVD_EXIT_OK;
    }
    fprintf(stderr, "kvd: unknown command '%s'\n", cmd);
    usage(stderr);
    return KVD_EXIT_USAGE;
}
