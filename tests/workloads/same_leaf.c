/* cflags: -O2 -fomit-frame-pointer
 * One leaf under two callers whose frames are the same size, taking turns eight pages at a
 * time: every fault starts from the same registers (pc, rsp, rbp), and only the return
 * address its caller left on the stack tells the two stacks apart.
 * main -> via_even|via_odd -> touch_one, one minor fault per page, half under each caller.
 * usage: same_leaf PAGES [wait] */
#include "common.h"

__attribute__((noinline)) void touch_one(char *p) {
    *(volatile char *)p = 'A';
}

/* noipa: identical bodies, which gcc would otherwise fold into one function. */
__attribute__((noipa)) void via_even(char *p) {
    touch_one(p);
    /* Work after the call keeps it from becoming a jump. */
    __asm__ volatile("" ::: "memory");
}

__attribute__((noipa)) void via_odd(char *p) {
    touch_one(p);
    __asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv) {
    long pages = argc > 1 ? atol(argv[1]) : 1024;
    char *p = fresh_pages(pages);
    maybe_wait(argc, argv, 2);
    begin();
    for (long i = 0; i < pages; i++) {
        if ((i / 8) & 1)
            via_odd(p + i * 4096);
        else
            via_even(p + i * 4096);
    }
    end();
    return 0;
}
