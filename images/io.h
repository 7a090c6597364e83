/* Positioned reads and writes that finish what a short transfer left. */
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/types.h>
#include <unistd.h>

/* Reads up to len bytes at offset; fewer only at end of file. Returns the
 * count or a negative errno. */
static inline ssize_t pread_full(int fd, void *buf, size_t len, off_t offset) {
        size_t done = 0;

        while (done < len) {
                ssize_t n = pread(fd, (uint8_t *)buf + done, len - done, offset + (off_t)done);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                done += (size_t)n;
        }
        return (ssize_t)done;
}

/* Writes all of buf at offset. Returns 0 or a negative errno. */
static inline int pwrite_full(int fd, const void *buf, size_t len, off_t offset) {
        size_t done = 0;

        while (done < len) {
                ssize_t n = pwrite(fd, (const uint8_t *)buf + done, len - done, offset + (off_t)done);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                done += (size_t)n;
        }
        return 0;
}

/* Bytes a writer lets pile up before it starts their writeback. */
#define WRITEBACK_STEP (8 * 1024 * 1024)

/* Starts writing back fd's dirty pages without waiting for them, so that
 * a file fsynced at the end is written while the next data is produced
 * and the final fsync waits less. Best effort: where the file system
 * cannot, the fsync does it all. */
static inline void start_writeback(int fd) {
        (void)sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
}
