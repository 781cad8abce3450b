/* Writes one byte to every 4 KiB page of MIB MiB of anonymous memory, 2 MiB aligned, with
 * transparent huge pages asked for (MADV_HUGEPAGE: one fault maps 2 MiB) or refused
 * (MADV_NOHUGEPAGE: one fault per 4 KiB page). Says what the kernel mapped, from its own
 * /proc/self/smaps: rss_kib (the region's resident size) and huge_kib (of it, in THPs).
 * usage: thp_writer MIB huge|small [wait] */
#include <stdint.h>
#include "common.h"

__attribute__((noinline)) void touch_region(char *p, long bytes) {
    for (long i = 0; i < bytes; i += 4096) p[i] = 'A';
    __asm__ volatile("" ::: "memory");
}

/* A field (in kB) of the smaps entry of the mapping that starts at `start`. */
static long smaps_kib(unsigned long start, const char *field) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) { perror("smaps"); exit(1); }
    char line[512];
    int in = 0;
    long v = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f)) {
        unsigned long a, b;
        if (sscanf(line, "%lx-%lx ", &a, &b) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            in = a == start;
            continue;
        }
        if (in && strncmp(line, field, n) == 0 && line[n] == ':') { v = atol(line + n + 1); break; }
    }
    fclose(f);
    return v;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: thp_writer MIB huge|small\n"); return 2; }
    long bytes = atol(argv[1]) << 20;
    int huge = strcmp(argv[2], "huge") == 0;
    /* 2 MiB more than needed, to start on a 2 MiB boundary. */
    char *raw = mmap(NULL, bytes + (2 << 20), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) { perror("mmap"); return 1; }
    char *p = (char *)(((uintptr_t)raw + (2 << 20) - 1) & ~(uintptr_t)((2 << 20) - 1));
    /* Its own mapping, so that smaps shows the region alone. */
    if (p != raw) munmap(raw, p - raw);
    munmap(p + bytes, (raw + bytes + (2 << 20)) - (p + bytes));
    if (madvise(p, bytes, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE)) { perror("madvise"); return 1; }
    maybe_wait(argc, argv, 3);
    begin();
    touch_region(p, bytes);
    end();
    printf("start=%lu end=%lu rss_kib=%ld huge_kib=%ld\n", (unsigned long)p, (unsigned long)p + bytes,
           smaps_kib((unsigned long)p, "Rss"), smaps_kib((unsigned long)p, "AnonHugePages"));
    fflush(stdout);
    return 0;
}
