#include "images/template.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

int image_template_protect(const char *path) {
        struct stat st;
        int fd = -1, r;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0) {
                r = -errno;
                goto fail;
        }
        if (fstat(fd, &st) < 0) {
                r = -errno;
                goto fail;
        }
        if (!S_ISREG(st.st_mode)) {
                r = -EINVAL;
                goto fail;
        }
        /* A second name of another file: chmod would change that one. */
        if (st.st_nlink != 1) {
                r = -EMLINK;
                goto fail;
        }
        r = fchmod(fd, 0444) < 0 ? -errno : 0;
fail:
        if (fd >= 0)
                close(fd);
        return r;
}
