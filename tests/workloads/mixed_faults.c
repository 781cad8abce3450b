/* Cheap minor faults beside costly major ones, on two stacks of their own: writes one byte to
 * each of MINOR fresh anonymous pages (touch_anon), then reads one byte from each of MAJOR
 * pages of a file it writes at PATH, dropped from the page cache and read at random
 * (read_file: one major fault, one disk read, per page). Says each phase's faults.
 * usage: mixed_faults PATH MINOR MAJOR [wait [linger]] */
#include <fcntl.h>
#include "common.h"

__attribute__((noinline)) void touch_anon(char *p, long pages) {
    for (long i = 0; i < pages; i++) p[i * 4096] = 'A';
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) long read_file(volatile char *p, long pages) {
    long sum = 0;
    for (long i = 0; i < pages; i++) sum += p[i * 4096];
    return sum;
}

static long faults(void) {
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    return ru.ru_minflt + ru.ru_majflt;
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: mixed_faults PATH MINOR MAJOR [wait [linger]]\n"); return 2; }
    long minor = atol(argv[2]), major = atol(argv[3]);
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) { perror(argv[1]); return 1; }
    static char page[4096];
    memset(page, 'x', sizeof page);
    for (long i = 0; i < major; i++)
        if (write(fd, page, sizeof page) != sizeof page) { perror("write"); return 1; }
    /* Written back first: dirty pages stay in the page cache. */
    fsync(fd);
    char *file = mmap(NULL, major * 4096, PROT_READ, MAP_PRIVATE, fd, 0);
    if (file == MAP_FAILED) { perror("mmap"); return 1; }
    madvise(file, major * 4096, MADV_RANDOM);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    char *anon = fresh_pages(minor);
    maybe_wait(argc, argv, 4);
    begin();
    long before = faults();
    touch_anon(anon, minor);
    long anon_faults = faults() - before;
    long sum = read_file(file, major);
    long file_faults = faults() - before - anon_faults;
    end();
    printf("anon_faults=%ld file_faults=%ld sum=%ld\n", anon_faults, file_faults, sum);
    fflush(stdout);
    maybe_linger(argc, argv, 5);
    return 0;
}
