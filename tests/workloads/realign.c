/* cflags: -O2 -fomit-frame-pointer
 * main -> fill_realigned -> memset, where fill_realigned realigns its stack as gcc does for a
 * 64-byte aligned local beside a variable-length array in a function with arguments on the
 * stack: through an argument pointer (DRAP) it keeps in its frame. Its CFA is then that
 * saved pointer (DW_CFA_def_cfa_expression: DW_OP_breg6 (rbp) N; DW_OP_deref), and its
 * caller's rbp is saved at rbp (DW_OP_breg6 0).
 * usage: realign PAGES */
#include "common.h"

__attribute__((noinline)) long fill_realigned(long a, long b, long c, long d, long e, long f,
                                              char *p, long pages) {
    char vla[a];
    char line[64] __attribute__((aligned(64)));
    memset(vla, b, a);
    memset(line, c, sizeof line);
    __asm__ volatile("" ::"r"(vla), "r"(line) : "memory");
    memset(p, 'A', pages * 4096);
    /* Work after the call keeps it from becoming a jump. */
    __asm__ volatile("" ::: "memory");
    return vla[0] + line[0] + d + e + f;
}

int main(int argc, char **argv) {
    long pages = argc > 1 ? atol(argv[1]) : 1024;
    char *p = fresh_pages(pages);
    begin();
    long r = fill_realigned(16, 1, 2, 3, 4, 5, p, pages);
    end();
    return r == 15 ? 0 : 1;
}
