/* Writes one byte per page of fresh anonymous memory from machine code it copied into an
 * anonymous executable mapping, as a JIT would: code no file's CFI describes. With `perfmap`,
 * it names that code `pfault_jit_store` in /tmp/perf-PID.map before running it, as runtimes
 * do as they compile; with `perfmap-at-exit`, as it exits, as some write theirs.
 * usage: jit_writer PAGES [wait|perfmap|perfmap-at-exit] */
#include "common.h"

typedef void (*store_fn)(char *);

static void write_perf_map(const void *code, size_t size) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/perf-%d.map", getpid());
    FILE *map = fopen(path, "w");
    if (!map) { perror(path); exit(1); }
    fprintf(map, "%lx %zx pfault_jit_store\n", (unsigned long)code, size);
    fclose(map);
}

int main(int argc, char **argv) {
    long pages = argc > 1 ? atol(argv[1]) : 1024;
    /* mov byte ptr [rdi], 0x41; ret */
    static const unsigned char code[] = {0xc6, 0x07, 0x41, 0xc3};
    unsigned char *jit = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (jit == MAP_FAILED) { perror("mmap"); return 1; }
    char *p = fresh_pages(pages);
    memcpy(jit, code, sizeof code);
    store_fn store = (store_fn)jit;
    const char *mode = argc > 2 ? argv[2] : "";
    if (strcmp(mode, "perfmap") == 0) write_perf_map(jit, sizeof code);
    maybe_wait(argc, argv, 2);
    /* Where the store runs: its faults are told from the process's others by this leaf. */
    printf("jit=%lu\n", (unsigned long)jit);
    begin();
    for (long i = 0; i < pages; i++) store(p + i * 4096);
    end();
    if (strcmp(mode, "perfmap-at-exit") == 0) {
        /* A runtime lives a while past its last compile; a tracer finds a container's /tmp
         * when it reads the process's exec notice, which a starved host delays by tens of ms
         * (seen: the whole process, a few ms long, gone before it, its map never found). */
        usleep(300 * 1000);
        write_perf_map(jit, sizeof code);
    }
    return 0;
}
