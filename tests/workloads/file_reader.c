/* Reads one byte per page of a file through mmap after dropping it from the page cache:
 * one major read fault per page. usage: file_reader PATH [wait [linger]] */
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include "common.h"

__attribute__((noinline)) long read_pages(volatile char *p, long pages) {
    long sum = 0;
    for (long i = 0; i < pages; i++) sum += p[i * 4096];
    return sum;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: file_reader PATH [wait [linger]]\n"); return 2; }
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) { perror(argv[1]); return 1; }
    struct stat st;
    fstat(fd, &st);
    long pages = st.st_size / 4096;
    char *p = mmap(NULL, pages * 4096, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) { perror("mmap"); return 1; }
    madvise(p, pages * 4096, MADV_RANDOM);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    maybe_wait(argc, argv, 2);
    begin();
    long sum = read_pages(p, pages);
    end();
    printf("start=%lu end=%lu sum=%ld\n", (unsigned long)p, (unsigned long)p + pages * 4096, sum);
    fflush(stdout);
    maybe_linger(argc, argv, 3);
    return 0;
}
