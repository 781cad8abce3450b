/* Dies of SIGSEGV writing to an address no mapping holds. */
#include <stdio.h>
int main(void) {
    volatile char *bad = (volatile char *)0x10000;
    printf("addr=%lu\n", (unsigned long)bad);
    fflush(stdout);
    *bad = 1;
    return 0;
}
