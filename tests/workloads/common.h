/* Shared by the workloads: ground truth from the kernel's own accounting. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static struct rusage ru_before;
static struct timespec t_before;

/* Holds the workload until its driver says go: a line on stdin when "wait" is passed,
 * so a tracer can attach with -p first. */
static void maybe_wait(int argc, char **argv, int idx) {
    if (argc > idx && strcmp(argv[idx], "wait") == 0) {
        printf("ready pid=%d\n", getpid());
        fflush(stdout);
        char buf[16];
        if (!fgets(buf, sizeof buf, stdin)) exit(3);
    }
}

/* Keeps the workload alive, its work done, until a line (or EOF) on stdin when "linger" is
 * passed: for a tool to read it live. Says "lingering" first, so a driver knows all it printed. */
static void maybe_linger(int argc, char **argv, int idx) {
    if (argc > idx && strcmp(argv[idx], "linger") == 0) {
        printf("lingering\n");
        fflush(stdout);
        char buf[16];
        if (!fgets(buf, sizeof buf, stdin)) return;
    }
}

static void begin(void) {
    getrusage(RUSAGE_THREAD, &ru_before);
    clock_gettime(CLOCK_MONOTONIC, &t_before);
}

static void end(void) {
    struct rusage ru;
    struct timespec t;
    getrusage(RUSAGE_THREAD, &ru);
    clock_gettime(CLOCK_MONOTONIC, &t);
    double secs = (t.tv_sec - t_before.tv_sec) + (t.tv_nsec - t_before.tv_nsec) / 1e9;
    printf("pid=%d minflt=%ld majflt=%ld seconds=%.6f\n", getpid(), ru.ru_minflt - ru_before.ru_minflt,
           ru.ru_majflt - ru_before.ru_majflt, secs);
    fflush(stdout);
}

/* PAGES of fresh anonymous memory, one minor fault per page written: no transparent huge
 * pages. Exits on failure. */
static char *fresh_pages(long pages) {
    char *p = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(1); }
    madvise(p, pages * 4096, MADV_NOHUGEPAGE);
    return p;
}

/* N tiny assembly functions that push and pop rbp: two rows of CFI each, each row distinct
 * from its neighbour's, for a binary whose unwind table is large. */
#define MANY_CFI_FUNCTIONS(n)                                                                  \
    __asm__(".text\n.rept " #n "\n.cfi_startproc\npush %rbp\n.cfi_def_cfa_offset 16\n"       \
            "pop %rbp\n.cfi_def_cfa_offset 8\nret\n.cfi_endproc\n.endr\n")
