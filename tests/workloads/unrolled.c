/* cflags: -O2
 * Writes one byte to every page of fresh anonymous memory in a loop the compiler unrolls:
 * one function, four faulting instructions.
 * usage: unrolled PAGES */
#include <sys/mman.h>
#include "common.h"

__attribute__((noinline)) void touch_unrolled(char *p, long pages) {
#pragma GCC unroll 4
    for (long i = 0; i < pages; i++) p[i * 4096] = 'A';
    __asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv) {
    long pages = argc > 1 ? atol(argv[1]) : 1024;
    char *p = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); return 1; }
    madvise(p, pages * 4096, MADV_NOHUGEPAGE);
    begin();
    touch_unrolled(p, pages);
    end();
    return 0;
}
