/* Touches fresh anonymous memory DEPTH calls deep: main -> recurse x DEPTH -> touch_pages,
 * a stack longer than the 127 frames kept once DEPTH passes about 120.
 * usage: deep_recursion PAGES DEPTH */
#include "common.h"

__attribute__((noinline)) void touch_pages(char *p, long pages) {
    for (long i = 0; i < pages; i++) p[i * 4096] = 'A';
}

__attribute__((noinline)) long recurse(char *p, long pages, int depth) {
    if (depth == 0) {
        touch_pages(p, pages);
        return 0;
    }
    long r = recurse(p, pages, depth - 1);
    /* Work after the call keeps it from becoming a jump. */
    __asm__ volatile("" : "+r"(r));
    return r + 1;
}

int main(int argc, char **argv) {
    long pages = argc > 1 ? atol(argv[1]) : 1024;
    int depth = argc > 2 ? atoi(argv[2]) : 200;
    char *p = fresh_pages(pages);
    begin();
    long r = recurse(p, pages, depth);
    end();
    return r == depth ? 0 : 2;
}
