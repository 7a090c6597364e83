/* Shared helpers for the images tests: scratch directories, running the
 * qemu-img/qemu-io oracles, file comparisons. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A new empty directory under $TMPDIR (or /tmp); aborts the test on failure. */
char *test_tmpdir(void);
/* Removes a directory tree; accepts NULL. */
void test_rmtree(const char *dir);
/* dir/name as a new string. */
char *test_path(const char *dir, const char *name);
/* Number of entries in dir other than . and ..; -1 on error. */
int test_count_entries(const char *dir);
/* Runs argv (PATH lookup) with stdin from /dev/null. stdout is returned in
 * *out if out is non-NULL (else discarded); stderr goes to the test log.
 * Returns the exit status, or -1 if the child did not exit normally. */
int test_run(const char *const argv[], char **out);
/* Writes len bytes of buf to path (created or truncated). */
void test_write_file(const char *path, const void *buf, size_t len);
/* pwrite into an existing file. */
void test_patch_file(const char *path, uint64_t off, const void *buf, size_t len);
/* Reads the whole file; *len receives its size. */
uint8_t *test_read_file(const char *path, size_t *len);
/* True if the two files have the same size and content. */
bool test_files_equal(const char *a, const char *b);
/* st_blocks * 512 */
uint64_t test_allocated(const char *path);
/* The data extents of a file as "start-end,..." (SEEK_DATA/SEEK_HOLE). */
char *test_data_map(const char *path);
/* True if haystack contains needle; prints both otherwise. */
bool test_contains(const char *haystack, const char *needle);
