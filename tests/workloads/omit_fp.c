/* cflags: -O2 -fomit-frame-pointer
 * Touches fresh anonymous memory from code built as most C is (-O2, no frame pointers):
 * main -> walk_pages -> touch_pages_nofp, one minor fault per page.
 * usage: omit_fp PAGES [wait] */
#include "common.h"

__attribute__((noinline)) long touch_pages_nofp(char *p, long pages) {
    long sum = 0;
    for (long i = 0; i < pages; i++) {
        p[i * 4096] = 'A';
        sum += i;
    }
    __asm__ volatile("" : "+r"(sum) :: "memory");
    return sum;
}

__attribute__((noinline)) long walk_pages(char *p, long pages) {
    long sum = touch_pages_nofp(p, pages);
    /* Work after the call keeps it from becoming a jump. */
    __asm__ volatile("" : "+r"(sum));
    return sum + 1;
}

int main(int argc, char **argv) {
    long pages = argc > 1 ? atol(argv[1]) : 1024;
    char *p = fresh_pages(pages);
    maybe_wait(argc, argv, 2);
    begin();
    long sum = walk_pages(p, pages);
    end();
    return sum == 0 ? 2 : 0;
}
