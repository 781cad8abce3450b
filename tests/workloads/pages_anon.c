/* Writes every page of MIB MiB of fresh anonymous memory, says where it is, and holds it until
 * a line arrives on stdin, so pfault pages can read it while it is resident.
 * usage: pages_anon MIB huge|nohuge
 * huge: the region is 2 MiB aligned and advised MADV_HUGEPAGE, so the kernel may back it with
 * transparent huge pages; nohuge: MADV_NOHUGEPAGE, one 4 KiB page per page. */
#include <sys/mman.h>
#include "common.h"

#define HUGE_SIZE (2UL << 20)

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: pages_anon MIB huge|nohuge\n"); return 2; }
    unsigned long len = strtoul(argv[1], NULL, 10) << 20;
    int huge = strcmp(argv[2], "huge") == 0;
    /* Over-allocate by one huge page so a 2 MiB aligned start fits inside. */
    char *raw = mmap(NULL, len + HUGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) { perror("mmap"); return 1; }
    char *p = (char *)(((unsigned long)raw + HUGE_SIZE - 1) & ~(HUGE_SIZE - 1));
    if (madvise(p, len, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE)) { perror("madvise"); return 1; }
    for (unsigned long off = 0; off < len; off += 4096) p[off] = 'A';
    printf("ready pid=%d start=%lu end=%lu\n", getpid(), (unsigned long)p, (unsigned long)p + len);
    fflush(stdout);
    char buf[16];
    if (!fgets(buf, sizeof buf, stdin)) return 3;
    return 0;
}
