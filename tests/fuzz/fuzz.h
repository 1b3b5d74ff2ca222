/* The fuzz targets of tests/fuzz (README.md): each file defines
 * LLVMFuzzerTestOneInput; built with libFuzzer under clang (KV_FUZZ) and
 * with replay_main.c everywhere. A target returns 0 for every input and
 * aborts (FUZZ_CHECK) when a property of the decoder under test breaks;
 * sanitizers catch the rest. */
#ifndef KV_TESTS_FUZZ_H
#define KV_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, #cond);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* FUZZ_DEBUG=1 in the environment: targets print what each input reached
 * (to check that the corpus seeds get past the checksums). */
#define FUZZ_DEBUG(...)                                                                            \
    do {                                                                                           \
        static int fuzz_debug_ = -1;                                                               \
        if (fuzz_debug_ < 0)                                                                       \
            fuzz_debug_ = getenv("FUZZ_DEBUG") != NULL;                                            \
        if (fuzz_debug_)                                                                           \
            fprintf(stderr, __VA_ARGS__);                                                          \
    } while (0)

#endif
