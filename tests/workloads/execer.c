/* Faults in its own code, then execs another program: the faults counted under the old image
 * must be named from the old image.
 * usage: execer PAGES PROGRAM [ARGS...] */
#include "common.h"

__attribute__((noinline)) void before_exec(char *p, long pages) {
    for (long i = 0; i < pages; i++) p[i * 4096] = 'A';
    __asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv) {
    long pages = argc > 1 ? atol(argv[1]) : 1024;
    char *p = fresh_pages(pages);
    struct rusage before, after;
    getrusage(RUSAGE_THREAD, &before);
    before_exec(p, pages);
    getrusage(RUSAGE_THREAD, &after);
    printf("before_exec=%ld\n", after.ru_minflt - before.ru_minflt);
    fflush(stdout);
    if (argc > 2) {
        execv(argv[2], argv + 2);
        perror("execv");
        return 1;
    }
    return 0;
}
