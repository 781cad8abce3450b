/* PAGES minor faults taken in kernel mode, then PAGES in user mode: read() from /dev/zero
 * into fresh anonymous memory (the kernel's copy to user space faults each page in), then one
 * write to each page of another fresh mapping. Prints each phase's getrusage apart.
 * usage: kernel_then_user PAGES [wait [linger]] */
#include <fcntl.h>
#include "common.h"

static long minflt_now(void) {
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    return ru.ru_minflt;
}

int main(int argc, char **argv) {
    long pages = argc > 1 ? atol(argv[1]) : 1024;
    char *by_kernel = fresh_pages(pages), *by_user = fresh_pages(pages);
    int fd = open("/dev/zero", O_RDONLY);
    if (fd < 0) { perror("/dev/zero"); return 1; }
    maybe_wait(argc, argv, 2);
    begin();
    long before = minflt_now();
    for (long done = 0, len = pages * 4096; done < len;) {
        ssize_t n = read(fd, by_kernel + done, len - done);
        if (n <= 0) { perror("read"); return 1; }
        done += n;
    }
    long after_read = minflt_now();
    for (long i = 0; i < pages; i++) by_user[i * 4096] = 'A';
    __asm__ volatile("" ::: "memory");
    long after_writes = minflt_now();
    end();
    printf("kernel_minflt=%ld user_minflt=%ld\n", after_read - before, after_writes - after_read);
    fflush(stdout);
    maybe_linger(argc, argv, 3);
    return 0;
}
