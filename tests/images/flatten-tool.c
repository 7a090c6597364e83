/* flatten-tool SRC DST: image_flatten_to_file() for test-flatten.sh, so
 * that qemu-img can judge the result. Prints the error line and exits 1. */
#include <stdio.h>

#include "images/flatten.h"

int main(int argc, char **argv) {
        char err[1024];

        if (argc != 3) {
                fprintf(stderr, "usage: flatten-tool SRC DST\n");
                return 2;
        }
        if (image_flatten_to_file(argv[1], argv[2], err, sizeof err) < 0) {
                fprintf(stderr, "%s\n", err);
                return 1;
        }
        return 0;
}
