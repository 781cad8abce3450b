/* cflags: -shared -fPIC -O2 -fomit-frame-pointer
 * A library that late_table loads with dlopen and at once touches fresh pages through:
 * its .eh_frame holds about 40,000 rows (20,000 tiny assembly functions, as big_cfi's), so
 * its table is still being built while the touches run, and lib_touch keeps no frame
 * pointer: a frame-pointer step from it skips its caller. */
#include "common.h"

MANY_CFI_FUNCTIONS(20000);

void lib_touch(char *p, long pages) {
    for (long i = 0; i < pages; i++) p[i * 4096] = 'A';
}
