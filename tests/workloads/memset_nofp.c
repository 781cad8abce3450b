/* cflags: -O2 -fomit-frame-pointer
 * Fills fresh anonymous memory with the C library's memset from code built as most C is (-O2,
 * no frame pointers): every fault is in memset, under main -> fill_with_memset, and only the
 * binaries' CFI (its own and the C library's) walks from memset back to main.
 * usage: memset_nofp PAGES [wait] */
#include "common.h"

__attribute__((noinline)) void fill_with_memset(char *p, long pages) {
    memset(p, 'A', pages * 4096);
    /* Not a tail call: fill_with_memset stays on the stack while memset runs. */
    __asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv) {
    long pages = argc > 1 ? atol(argv[1]) : 1024;
    char *p = fresh_pages(pages);
    maybe_wait(argc, argv, 2);
    begin();
    fill_with_memset(p, pages);
    end();
    return 0;
}
