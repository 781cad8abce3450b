/* The parent fills PAGES of private memory, then forks a child that writes every page again:
 * one copy-on-write minor fault per page in the child. usage: fork_cow PAGES */
#include <sys/mman.h>
#include <sys/wait.h>
#include "common.h"

int main(int argc, char **argv) {
    long pages = argc > 1 ? atol(argv[1]) : 1024;
    char *p = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); return 1; }
    madvise(p, pages * 4096, MADV_NOHUGEPAGE);
    for (long i = 0; i < pages; i++) p[i * 4096] = 'P';
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        begin();
        for (long i = 0; i < pages; i++) p[i * 4096] = 'C';
        end();
        _exit(0);
    }
    int status;
    waitpid(child, &status, 0);
    printf("parent=%d child=%d\n", getpid(), child);
    return 0;
}
