/* cflags: -shared -fPIC -O2 -fomit-frame-pointer
 * A library that late_table loads with dlopen and at once touches fresh pages through:
 * its .eh_frame holds about 200,000 rows (100,000 tiny assembly functions, as big_cfi's), so
 * its table is still being built while the touches run, and lib_touch keeps no frame
 * pointer: a frame-pointer step from it skips its caller. */
__asm__(".text\n"
        ".rept 20000\n"
        ".cfi_startproc\n"
        "push %rbp\n"
        ".cfi_def_cfa_offset 16\n"
        "pop %rbp\n"
        ".cfi_def_cfa_offset 8\n"
        "ret\n"
        ".cfi_endproc\n"
        ".endr\n");

void lib_touch(char *p, long pages) {
    for (long i = 0; i < pages; i++) p[i * 4096] = 'A';
}
