/* Writes one byte per page of fresh anonymous memory from a signal handler: the stack runs
 * through the kernel's signal frame (__restore_rt) back into the code the signal interrupted.
 * main -> deliver -> raise -> ... -> [signal] -> on_signal -> touch_in_handler
 * usage: in_signal PAGES [wait] */
#include <signal.h>
#include "common.h"

static char *mem;
static long npages;

__attribute__((noinline)) void touch_in_handler(void) {
    for (long i = 0; i < npages; i++) mem[i * 4096] = 'A';
    __asm__ volatile("" ::: "memory");
}

static void on_signal(int sig) {
    (void)sig;
    touch_in_handler();
}

__attribute__((noinline)) void deliver(void) {
    raise(SIGUSR1);
    __asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv) {
    npages = argc > 1 ? atol(argv[1]) : 1024;
    mem = fresh_pages(npages);
    signal(SIGUSR1, on_signal);
    maybe_wait(argc, argv, 2);
    begin();
    deliver();
    end();
    return 0;
}
