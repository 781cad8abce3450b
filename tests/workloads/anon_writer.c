/* Writes one byte to every page of fresh anonymous memory: one minor write fault per page.
 * usage: anon_writer PAGES [CHUNK_PAGES] [wait [linger]]
 * Memory is mapped CHUNK pages at a time (default: all), touched, then unmapped. */
#include <sys/mman.h>
#include "common.h"

__attribute__((noinline)) void touch_pages(char *p, long pages) {
    for (long i = 0; i < pages; i++) p[i * 4096] = 'A';
    __asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv) {
    long pages = argc > 1 ? atol(argv[1]) : 1024;
    long chunk = argc > 2 ? atol(argv[2]) : 0;
    if (chunk <= 0 || chunk > pages) chunk = pages;
    maybe_wait(argc, argv, 3);
    unsigned long first = 0, last = 0;
    begin();
    for (long done = 0; done < pages; done += chunk) {
        long n = pages - done < chunk ? pages - done : chunk;
        char *p = mmap(NULL, n * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) { perror("mmap"); return 1; }
        /* One page per fault: no transparent huge pages. */
        madvise(p, n * 4096, MADV_NOHUGEPAGE);
        if (done == 0) first = (unsigned long)p;
        last = (unsigned long)p + n * 4096;
        touch_pages(p, n);
        if (chunk < pages) munmap(p, n * 4096);
    }
    end();
    printf("start=%lu end=%lu\n", first, last);
    fflush(stdout);
    maybe_linger(argc, argv, 4);
    return 0;
}
