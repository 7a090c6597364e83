/* Unit tests for the archive writer (images/archive.c): a complete archive
 * reads back with the archive reader, and a writer freed with a member
 * still open (a cancelled or failed export) writes nothing more: no zero
 * padding up to the member's declared size. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "images/archive.h"

#define CHUNK (1024 * 1024)

static int tmp_fd(void) {
        char path[] = "/tmp/vrt-test-archive-XXXXXX";
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        unlink(path);
        return fd;
}

static off_t file_size(int fd) {
        struct stat st;
        assert_int_equal(fstat(fd, &st), 0);
        return st.st_size;
}

static void test_complete_archive(void **state) {
        (void)state;
        int fd = tmp_fd();
        struct archive_writer *w = NULL;
        char err[512] = "", hex[ARCHIVE_SHA256_HEX];
        uint8_t *buf = malloc(CHUNK);
        assert_non_null(buf);
        memset(buf, 0x5a, CHUNK);

        assert_int_equal(archive_writer_open(fd, &w, err, sizeof err), 0);
        assert_int_equal(archive_writer_begin(w, "disk.qcow2", 2 * CHUNK, err, sizeof err), 0);
        assert_int_equal(archive_writer_data(w, buf, CHUNK, err, sizeof err), 0);
        assert_int_equal(archive_writer_data(w, buf, CHUNK, err, sizeof err), 0);
        assert_int_equal(archive_writer_end(w, hex, err, sizeof err), 0);
        assert_int_equal(strlen(hex), 64);
        assert_int_equal(archive_writer_close(w, err, sizeof err), 0);
        archive_writer_free(w);
        assert_true(file_size(fd) >= 2 * CHUNK + 1024);
        free(buf);
        close(fd);
}

/* A member that declares 1 GiB, cut short after 1 MiB: freeing the writer
 * must not fill the remaining 1023 MiB with zeros. */
static void test_free_with_member_open(void **state) {
        (void)state;
        int fd = tmp_fd();
        struct archive_writer *w = NULL;
        char err[512] = "";
        uint8_t *buf = calloc(1, CHUNK);
        assert_non_null(buf);

        assert_int_equal(archive_writer_open(fd, &w, err, sizeof err), 0);
        assert_int_equal(archive_writer_begin(w, "disk.qcow2", 1024ull * CHUNK, err, sizeof err), 0);
        assert_int_equal(archive_writer_data(w, buf, CHUNK, err, sizeof err), 0);
        assert_int_not_equal(archive_writer_close(w, err, sizeof err), 0);
        assert_non_null(strstr(err, "a member is incomplete"));
        archive_writer_free(w);
        assert_true(file_size(fd) < 8 * CHUNK);
        free(buf);
        close(fd);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_complete_archive),
                cmocka_unit_test(test_free_with_member_open),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
