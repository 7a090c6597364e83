/* Helpers shared by the libFuzzer harnesses: a private scratch directory
 * and writing an input to a file in it, for the loaders that read files. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* The harness's scratch directory (created once, under /dev/shm when it
 * exists, else /tmp; removed at exit). Aborts when it cannot be made. */
const char *fuzz_dir(void);

/* Writes len bytes to DIR/name (replacing it) and returns the path in a
 * static buffer that the next call overwrites. Aborts on failure. */
const char *fuzz_write(const char *name, const void *data, size_t len);

/* Removes DIR/name and everything under it; a missing one is fine. */
void fuzz_remove(const char *name);

/* Splits data at the first occurrence of sep (which is not part of either
 * half): (a, alen) before it, (b, blen) after it, empty without sep. */
void fuzz_split(const uint8_t *data, size_t len, const char *sep,
                const uint8_t **a, size_t *alen, const uint8_t **b, size_t *blen);

/* The harness entry point libFuzzer calls. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
