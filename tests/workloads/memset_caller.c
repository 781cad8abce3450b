/* Fills fresh anonymous memory with memset: every fault is inside the C library's memset,
 * hand-written assembly that keeps no frame pointer, so a frame-pointer walk skips the
 * function that called it.
 * usage: memset_caller PAGES [wait] */
#include <sys/mman.h>
#include "common.h"

__attribute__((noinline)) void fill_pages(char *p, long pages) {
    memset(p, 'A', pages * 4096);
    /* Not a tail call: fill_pages stays on the stack while memset runs. */
    __asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv) {
    long pages = argc > 1 ? atol(argv[1]) : 1024;
    char *p = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); return 1; }
    madvise(p, pages * 4096, MADV_NOHUGEPAGE);
    maybe_wait(argc, argv, 2);
    begin();
    fill_pages(p, pages);
    end();
    return 0;
}
