/* A stand-in for qemu-system-x86_64 in test-qemu-proc: it reports the
 * descriptors it inherited and whether it was started paused, then plays
 * QMP on fd 3 (the inherited listening socket) as QEMU 7.2 does: greeting,
 * an empty return for every command, exit at end of connection. The guest
 * name selects a misbehaviour: "die" exits before accepting. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
        const char *name = "";
        int paused = 0;
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "-name") == 0 && i + 1 < argc && strncmp(argv[i + 1], "guest=", 6) == 0)
                        name = argv[i + 1] + 6;
                if (strcmp(argv[i], "-S") == 0)
                        paused = 1;
        }
        printf("fds:");
        for (int fd = 3; fd < 64; fd++)
                if (fcntl(fd, F_GETFD) >= 0)
                        printf(" %d", fd);
        printf(" paused=%d\n", paused);
        fflush(stdout);
        if (strncmp(name, "die", 3) == 0)
                return 3;

        int c = accept(3, NULL, NULL);
        if (c < 0)
                return 4;
        static const char greeting[] =
                "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, "
                "\"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n";
        if (write(c, greeting, sizeof greeting - 1) < 0)
                return 5;
        char buf[4096];
        size_t len = 0;
        for (;;) {
                ssize_t n = read(c, buf + len, sizeof buf - 1 - len);
                if (n <= 0)
                        return 0;
                len += (size_t)n;
                buf[len] = '\0';
                char *nl;
                while ((nl = strchr(buf, '\n'))) {
                        *nl = '\0';
                        char cmd[64] = "";
                        const char *e = strstr(buf, "\"execute\":\""), *id = strstr(buf, "\"id\":");
                        if (e)
                                sscanf(e + 11, "%63[^\"]", cmd);
                        printf("cmd: %s\n", cmd);
                        fflush(stdout);
                        char reply[128];
                        int rn = snprintf(reply, sizeof reply, "{\"return\": {}, \"id\": %ld}\r\n", id ? strtol(id + 5, NULL, 10) : 0L);
                        if (write(c, reply, (size_t)rn) < 0)
                                return 6;
                        len -= (size_t)(nl + 1 - buf);
                        memmove(buf, nl + 1, len + 1);
                }
        }
}
