/* cflags: -O2 -fomit-frame-pointer
 * main -> fill_saved_rsp, assembly written as OpenSSL writes its own (perlasm): it saves its
 * entry rsp in its realigned frame, and its CFA is read from there (DW_CFA_def_cfa_expression:
 * DW_OP_breg7 (rsp) 40; DW_OP_deref; DW_OP_plus_uconst 8). It touches fresh anonymous memory
 * itself, one fault per page, with rbp cleared: only its CFI leads back to main.
 * usage: saved_rsp PAGES */
#include "common.h"

long fill_saved_rsp(char *p, long pages);
__asm__(".text\n"
        ".globl fill_saved_rsp\n"
        ".type fill_saved_rsp, @function\n"
        "fill_saved_rsp:\n"
        ".cfi_startproc\n"
        "    mov %rsp, %rax\n"
        ".cfi_def_cfa_register %rax\n"
        "    push %rbx\n"
        ".cfi_offset %rbx, -16\n"
        "    push %rbp\n"
        ".cfi_offset %rbp, -24\n"
        "    sub $128, %rsp\n"
        "    and $-64, %rsp\n"
        "    mov %rax, 40(%rsp)\n"
        /* DW_CFA_def_cfa_expression, 5 bytes: DW_OP_breg7 40; DW_OP_deref; DW_OP_plus_uconst 8 */
        ".cfi_escape 0x0f, 0x05, 0x77, 0x28, 0x06, 0x23, 0x08\n"
        "    xor %ebp, %ebp\n"
        "1:  test %rsi, %rsi\n"
        "    jz 2f\n"
        "    movb $65, (%rdi)\n"
        "    add $4096, %rdi\n"
        "    dec %rsi\n"
        "    jmp 1b\n"
        "2:  mov 40(%rsp), %rax\n"
        "    mov -16(%rax), %rbp\n"
        "    mov -8(%rax), %rbx\n"
        "    mov %rax, %rsp\n"
        ".cfi_def_cfa %rsp, 8\n"
        "    mov %rsi, %rax\n"
        "    ret\n"
        ".cfi_endproc\n"
        ".size fill_saved_rsp, .-fill_saved_rsp\n");

int main(int argc, char **argv) {
    long pages = argc > 1 ? atol(argv[1]) : 1024;
    char *p = fresh_pages(pages);
    begin();
    long r = fill_saved_rsp(p, pages);
    end();
    return (int)r;
}
