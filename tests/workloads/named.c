/* Takes the name NAME (prctl PR_SET_NAME: any bytes but NUL, so a name may hold a newline or
 * an escape sequence), writes PAGES fresh anonymous pages, stays MS milliseconds (0 if not
 * given: a live view such as top then has time to draw it) and exits: run many times, many
 * short-lived processes with distinct names.
 * usage: named NAME PAGES [MS] */
#include <sys/mman.h>
#include <sys/prctl.h>
#include "common.h"

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    prctl(PR_SET_NAME, argv[1]);
    long pages = atol(argv[2]);
    char *p = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 1;
    for (long i = 0; i < pages; i++) p[i * 4096] = 1;
    if (argc > 3) usleep(atol(argv[3]) * 1000);
    return 0;
}
