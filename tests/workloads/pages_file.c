/* Maps a file, reads every page of it through the mapping, says where it is, and holds it
 * until a line arrives on stdin, so pfault pages can read it while it is resident.
 * usage: pages_file PATH */
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include "common.h"

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: pages_file PATH\n"); return 2; }
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) { perror(argv[1]); return 1; }
    struct stat st;
    fstat(fd, &st);
    long pages = st.st_size / 4096;
    volatile char *p = mmap(NULL, pages * 4096, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) { perror("mmap"); return 1; }
    long sum = 0;
    for (long i = 0; i < pages; i++) sum += p[i * 4096];
    printf("ready pid=%d start=%lu end=%lu sum=%ld\n", getpid(), (unsigned long)p,
           (unsigned long)p + pages * 4096, sum);
    fflush(stdout);
    char buf[16];
    if (!fgets(buf, sizeof buf, stdin)) return 3;
    return 0;
}
