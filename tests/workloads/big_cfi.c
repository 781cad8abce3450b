/* Touches fresh anonymous memory (main -> touch_pages) from a binary whose .eh_frame holds
 * about 200,000 rows: 100,000 tiny assembly functions that push and pop rbp, each row
 * distinct from its neighbour's. Its table does not fit in `--unwind-mb 1` (131,072 rows).
 * usage: big_cfi PAGES */
#include "common.h"

MANY_CFI_FUNCTIONS(100000);

__attribute__((noinline)) void touch_pages(char *p, long pages) {
    for (long i = 0; i < pages; i++) p[i * 4096] = 'A';
}

int main(int argc, char **argv) {
    long pages = argc > 1 ? atol(argv[1]) : 1024;
    char *p = fresh_pages(pages);
    begin();
    touch_pages(p, pages);
    end();
    return 0;
}
