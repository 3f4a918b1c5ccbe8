/*
 * vmtest-debug-exit VALUE
 *
 * Writes the byte VALUE (decimal, 0-255) to I/O port 0xf4, where the tests place QEMU's
 * `-device isa-debug-exit,iobase=0xf4,iosize=0x04`; QEMU then exits with status
 * (VALUE << 1) | 1. Without that device the write is ignored and the program exits 0.
 *
 * It exists because the guest kernel (linux-image-cloud-amd64) is built without
 * CONFIG_DEVPORT, so there is no /dev/port to write to from the shell. Freestanding x86-64
 * code (no libc), assembled with `as` and linked with `ld -static` by build.sh.
 * Exit status: 0 written, 1 bad usage, 2 ioperm() failed (e.g. kernel lockdown).
 */
        .globl  _start
        .text
_start:
        mov     (%rsp), %rcx            /* argc */
        cmp     $2, %rcx
        jne     usage
        mov     16(%rsp), %rsi          /* argv[1] */
        xor     %eax, %eax              /* value */
        movzbl  (%rsi), %edx
        test    %edx, %edx
        jz      usage                   /* empty string */
1:      movzbl  (%rsi), %edx
        test    %edx, %edx
        jz      2f
        sub     $'0', %edx
        cmp     $9, %edx
        ja      usage
        imul    $10, %eax, %eax
        add     %edx, %eax
        cmp     $255, %eax
        ja      usage
        inc     %rsi
        jmp     1b
2:      mov     %eax, %r12d
        mov     $173, %eax              /* ioperm(0xf4, 4, 1) */
        mov     $0xf4, %edi
        mov     $4, %esi
        mov     $1, %edx
        syscall
        test    %rax, %rax
        jnz     noperm
        mov     %r12d, %eax
        mov     $0xf4, %dx
        outb    %al, %dx
        mov     $60, %eax               /* exit(0) */
        xor     %edi, %edi
        syscall
usage:
        mov     $60, %eax
        mov     $1, %edi
        syscall
noperm:
        mov     $60, %eax
        mov     $2, %edi
        syscall
        .section .note.GNU-stack,"",@progbits
