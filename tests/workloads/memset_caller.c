/* Fills fresh anonymous memory with memset: every fault is inside the C library's memset,
 * hand-written assembly that keeps no frame pointer, so a frame-pointer walk skips the
 * function that called it.
 * usage: memset_caller PAGES [wait] */
#include "common.h"

__attribute__((noinline)) void fill_pages(char *p, long pages) {
    memset(p, 'A', pages * 4096);
    /* Not a tail call: fill_pages stays on the stack while memset runs. */
    __asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv) {
    long pages = argc > 1 ? atol(argv[1]) : 1024;
    char *p = fresh_pages(pages);
    maybe_wait(argc, argv, 2);
    begin();
    fill_pages(p, pages);
    end();
    return 0;
}
