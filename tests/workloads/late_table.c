/* Loads a library with dlopen and at once touches fresh pages through it (main -> via_lib ->
 * lib_touch, in late_lib.c): a tracer meets the library as it is mapped, and its first faults'
 * stacks before the library's unwind table can be built.
 * usage: late_table LIBRARY PAGES */
#include "common.h"
#include <dlfcn.h>

typedef void (*touch_fn)(char *, long);

__attribute__((noinline)) void via_lib(touch_fn touch, char *p, long pages) {
    touch(p, pages);
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: late_table LIBRARY PAGES\n"); return 2; }
    long pages = atol(argv[2]);
    char *p = fresh_pages(pages);
    void *lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) { fprintf(stderr, "%s\n", dlerror()); return 1; }
    touch_fn touch = (touch_fn)dlsym(lib, "lib_touch");
    if (!touch) { fprintf(stderr, "%s\n", dlerror()); return 1; }
    begin();
    via_lib(touch, p, pages);
    end();
    return 0;
}
