/* The strict tar reader of vrt import (images/archive.h). The input is
 * written to a file and read member by member to the end, as import does.
 * Checks: every error comes with a message and a known code; a member the
 * reader accepts has a name archive_check_name() accepts, and never yields
 * more bytes than its header declares. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "images/archive.h"
#include "tools/fuzz/fuzz.h"

static void bad_code(int r, const char *err) {
        if ((r != -EINVAL && r != -EIO && r != -ENOMEM && r != -EFBIG && r != -E2BIG) || !err[0])
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct archive_reader *ar = NULL;
        char err[1024] = "", name_err[256], sha[ARCHIVE_SHA256_HEX];
        static char buf[65536];
        const char *path = fuzz_write("in.tar", data, size);
        int r = archive_reader_open(path, &ar, err, sizeof err);
        if (r < 0) {
                bad_code(r, err);
                return 0;
        }
        for (unsigned n = 0; n < 1000; n++) {
                struct archive_member m;
                err[0] = '\0';
                r = archive_reader_next(ar, &m, err, sizeof err);
                if (r == 0)
                        break;
                if (r < 0) {
                        bad_code(r, err);
                        break;
                }
                if (strnlen(m.name, sizeof m.name) == sizeof m.name ||
                    archive_check_name(m.name, name_err, sizeof name_err) < 0)
                        abort();
                uint64_t got = 0;
                ssize_t k;
                while ((k = archive_reader_read(ar, buf, sizeof buf, err, sizeof err)) > 0)
                        got += (uint64_t)k;
                if (got > m.size)
                        abort();
                if (k < 0) {
                        bad_code((int)k, err);
                        break;
                }
                if (got != m.size)
                        abort();        /* a complete member has its declared size */
                archive_reader_sha256(ar, sha);
                if (strlen(sha) != 64)
                        abort();
        }
        archive_reader_free(ar);
        return 0;
}
