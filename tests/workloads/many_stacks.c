/* Faults once on each of 2^16 distinct call paths: path P walks 16 levels, going through
 * left() or right() at level L as bit L of P says, and writes one fresh page at the bottom.
 * usage: many_stacks */
#include <sys/mman.h>
#include "common.h"

#define LEVELS 16
static char *mem;

void walk(unsigned path, int level);

__attribute__((noinline)) void left(unsigned path, int level) {
    walk(path, level + 1);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void right(unsigned path, int level) {
    walk(path, level + 1);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void walk(unsigned path, int level) {
    if (level == LEVELS) {
        mem[(unsigned long)path * 4096] = 1;
        return;
    }
    if (path >> level & 1)
        right(path, level);
    else
        left(path, level);
    __asm__ volatile("" ::: "memory");
}

int main(void) {
    unsigned long n = 1ul << LEVELS;
    mem = mmap(NULL, n * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) { perror("mmap"); return 1; }
    madvise(mem, n * 4096, MADV_NOHUGEPAGE);
    begin();
    for (unsigned p = 0; p < n; p++) walk(p, 0);
    end();
    printf("paths=%lu\n", n);
    return 0;
}
