/* cflags: -O2
 * Writes one byte to every page of fresh anonymous memory in a loop the compiler unrolls:
 * one function, four faulting instructions.
 * usage: unrolled PAGES */
#include "common.h"

__attribute__((noinline)) void touch_unrolled(char *p, long pages) {
#pragma GCC unroll 4
    for (long i = 0; i < pages; i++) p[i * 4096] = 'A';
    __asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv) {
    long pages = argc > 1 ? atol(argv[1]) : 1024;
    char *p = fresh_pages(pages);
    begin();
    touch_unrolled(p, pages);
    end();
    return 0;
}
