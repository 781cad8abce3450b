/* cflags: -O2 -fomit-frame-pointer -fstack-clash-protection
 * main -> big_frame -> memset, where big_frame's frame is 200 KiB: its CFA is rsp plus more
 * than 32 KiB. Its stack-clash probes (gcc's default on Debian, Ubuntu and Fedora) fault on
 * the fresh stack pages the frame takes, while the CFA is kept in r11; then memset faults on
 * fresh anonymous memory.
 * usage: big_frame PAGES */
#include "common.h"

__attribute__((noinline)) long big_frame(char *p, long pages) {
    volatile char buf[200 << 10];
    buf[0] = 1;
    memset(p, 'A', pages * 4096);
    return buf[0];
}

int main(int argc, char **argv) {
    long pages = argc > 1 ? atol(argv[1]) : 1024;
    char *p = fresh_pages(pages);
    begin();
    long r = big_frame(p, pages);
    end();
    return r == 1 ? 0 : 1;
}
