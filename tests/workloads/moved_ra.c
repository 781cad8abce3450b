/* cflags: -O2 -fomit-frame-pointer
 * main -> fill_moved_ra, assembly that moves its return address 16 bytes further down its
 * frame (to CFA - 24, as a stack switch or a trampoline may) and clears the word a call left
 * it in: its CFI says where it went (DW_CFA_offset: r16 (rip) at cfa-24). It touches fresh
 * anonymous memory itself, one fault per page, with rbp cleared: only that rule leads back
 * to main (a walk that reads CFA - 8 finds 0, the end of a stack).
 * usage: moved_ra PAGES */
#include "common.h"

long fill_moved_ra(char *p, long pages);
__asm__(".text\n"
        ".globl fill_moved_ra\n"
        ".type fill_moved_ra, @function\n"
        "fill_moved_ra:\n"
        ".cfi_startproc\n"
        "    sub $24, %rsp\n"
        ".cfi_def_cfa_offset 32\n"
        "    push %rbp\n"
        ".cfi_def_cfa_offset 40\n"
        ".cfi_offset %rbp, -40\n"
        "    mov 32(%rsp), %r11\n"
        "    mov %r11, 16(%rsp)\n"
        ".cfi_offset %rip, -24\n"
        "    movq $0, 32(%rsp)\n"
        "    xor %ebp, %ebp\n"
        "1:  test %rsi, %rsi\n"
        "    jz 2f\n"
        "    movb $65, (%rdi)\n"
        "    add $4096, %rdi\n"
        "    dec %rsi\n"
        "    jmp 1b\n"
        "2:  mov 16(%rsp), %r11\n"
        "    mov %r11, 32(%rsp)\n"
        ".cfi_offset %rip, -8\n"
        "    pop %rbp\n"
        ".cfi_def_cfa_offset 32\n"
        ".cfi_restore %rbp\n"
        "    add $24, %rsp\n"
        ".cfi_def_cfa_offset 8\n"
        "    mov %rsi, %rax\n"
        "    ret\n"
        ".cfi_endproc\n"
        ".size fill_moved_ra, .-fill_moved_ra\n");

int main(int argc, char **argv) {
    long pages = argc > 1 ? atol(argv[1]) : 1024;
    char *p = fresh_pages(pages);
    begin();
    long r = fill_moved_ra(p, pages);
    end();
    return (int)r;
}
