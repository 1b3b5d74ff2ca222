/*
 * raft-scenario [--trace] FILE: runs one scenario script against the Raft
 * core. Exit 0 when every command and expectation held; 1 (after printing
 * file:line, the command and what was expected and found) otherwise; 2 on
 * usage errors.
 */
#include <stdio.h>
#include <string.h>

#include "script.h"

int main(int argc, char **argv) {
    bool trace = argc == 3 && strcmp(argv[1], "--trace") == 0;
    if (argc != 2 + (trace ? 1 : 0)) {
        fprintf(stderr, "usage: raft-scenario [--trace] FILE\n");
        return 2;
    }
    const char *file = argv[argc - 1];
    FILE *f = fopen(file, "r");
    if (f == NULL) {
        perror(file);
        return 2;
    }
    int rc = sc_run_script(f, file, trace);
    fclose(f);
    if (rc == 0) {
        printf("%s: ok\n", file);
    }
    return rc == 0 ? 0 : 1;
}
