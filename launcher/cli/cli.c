#include "launcher/cli/cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void cli_error(const char *fmt, ...) {
        va_list ap;
        fputs("vrt: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

int cli_status_for(int r) {
        switch (r) {
        case 0:
                return CLI_OK;
        case -EINVAL:
        case -ENOENT:
        case -ENAMETOOLONG:
        case -ELOOP:
        case -EEXIST:
                return CLI_INVALID;
        default:
                return CLI_FAILED;
        }
}

void cli_print_shell_quoted(const char *s) {
        if (*s && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-./:,=+@%") == strlen(s)) {
                fputs(s, stdout);
                return;
        }
        putchar('\'');
        for (const char *p = s; *p; p++) {
                if (*p == '\'')
                        fputs("'\\''", stdout);
                else
                        putchar(*p);
        }
        putchar('\'');
}

int cli_usage_error(const char *usage) {
        cli_error("%s", usage);
        return CLI_INVALID;
}
