#include "helpers.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        abort();
}

char *test_tmpdir(void) {
        const char *base = getenv("TMPDIR");
        char *p = NULL;

        if (asprintf(&p, "%s/vrt-images-test.XXXXXX", base && *base ? base : "/tmp") < 0)
                die("asprintf");
        if (!mkdtemp(p))
                die("mkdtemp %s: %s", p, strerror(errno));
        return p;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void)st;
        (void)ftw;
        if (flag == FTW_DP || flag == FTW_D)
                (void)rmdir(path);
        else
                (void)unlink(path);
        return 0;
}

void test_rmtree(const char *dir) {
        if (dir)
                nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

char *test_path(const char *dir, const char *name) {
        char *p = NULL;
        if (asprintf(&p, "%s/%s", dir, name) < 0)
                die("asprintf");
        return p;
}

int test_count_entries(const char *dir) {
        DIR *d = opendir(dir);
        struct dirent *e;
        int n = 0;

        if (!d)
                return -1;
        while ((e = readdir(d)))
                if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
                        n++;
        closedir(d);
        return n;
}

int test_run(const char *const argv[], char **out) {
        int pipefd[2] = { -1, -1 }, status;
        char *buf = NULL;
        size_t len = 0, cap = 0;
        pid_t pid;

        if (pipe2(pipefd, O_CLOEXEC) < 0)
                die("pipe2: %s", strerror(errno));
        pid = fork();
        if (pid < 0)
                die("fork: %s", strerror(errno));
        if (pid == 0) {
                int devnull = open("/dev/null", O_RDONLY);
                if (devnull >= 0)
                        dup2(devnull, 0);
                dup2(pipefd[1], 1);
                execvp(argv[0], (char *const *)argv);
                fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
                _exit(127);
        }
        close(pipefd[1]);
        for (;;) {
                ssize_t n;
                if (cap - len < 4096) {
                        cap = cap ? cap * 2 : 8192;
                        buf = realloc(buf, cap);
                        if (!buf)
                                die("realloc");
                }
                n = read(pipefd[0], buf + len, cap - len - 1);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                len += (size_t)n;
        }
        buf[len] = '\0';
        close(pipefd[0]);
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        die("waitpid: %s", strerror(errno));
        if (out)
                *out = buf;
        else
                free(buf);
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void test_write_file(const char *path, const void *buf, size_t len) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || (len && write(fd, buf, len) != (ssize_t)len) || close(fd) < 0)
                die("write %s: %s", path, strerror(errno));
}

void test_patch_file(const char *path, uint64_t off, const void *buf, size_t len) {
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || pwrite(fd, buf, len, (off_t)off) != (ssize_t)len || close(fd) < 0)
                die("patch %s: %s", path, strerror(errno));
}

uint8_t *test_read_file(const char *path, size_t *len) {
        struct stat st;
        uint8_t *buf;
        size_t done = 0;
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        if (fd < 0 || fstat(fd, &st) < 0)
                die("read %s: %s", path, strerror(errno));
        buf = malloc((size_t)st.st_size + 1);
        if (!buf)
                die("malloc");
        while (done < (size_t)st.st_size) {
                ssize_t n = read(fd, buf + done, (size_t)st.st_size - done);
                if (n <= 0)
                        die("read %s: %s", path, n ? strerror(errno) : "short");
                done += (size_t)n;
        }
        close(fd);
        *len = done;
        return buf;
}

bool test_files_equal(const char *a, const char *b) {
        size_t la, lb;
        uint8_t *x = test_read_file(a, &la), *y = test_read_file(b, &lb);
        bool eq = la == lb && memcmp(x, y, la) == 0;
        free(x);
        free(y);
        return eq;
}

uint64_t test_allocated(const char *path) {
        struct stat st;
        if (stat(path, &st) < 0)
                die("stat %s: %s", path, strerror(errno));
        return (uint64_t)st.st_blocks * 512;
}

bool test_contains(const char *haystack, const char *needle) {
        if (haystack && strstr(haystack, needle))
                return true;
        fprintf(stderr, "expected to find [%s] in [%s]\n", needle, haystack ? haystack : "(null)");
        return false;
}

char *test_data_map(const char *path) {
        char *out = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&out, &len);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        off_t off = 0;

        if (!f || fd < 0)
                die("data map %s: %s", path, strerror(errno));
        for (;;) {
                off_t data = lseek(fd, off, SEEK_DATA), hole;
                if (data < 0)
                        break;
                hole = lseek(fd, data, SEEK_HOLE);
                fprintf(f, "%lld-%lld,", (long long)data, (long long)hole);
                off = hole;
        }
        close(fd);
        fclose(f);
        return out;
}
