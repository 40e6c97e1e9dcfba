/*
 * Make this process see an x86 CPU with AVX2 but without AVX-512, VNNI (AVX-512 or AVX)
 * or AMX, so that the libraries it loads (ONNX Runtime's MLAS, oneDNN in OpenVINO and
 * PyTorch, numpy, OpenBLAS) pick the kernels such a CPU runs. Built and preloaded by
 * as_avx2_only.py (LD_PRELOAD); see that tool for its use.
 *
 * How: Linux can make the CPUID instruction fault in a process (arch_prctl
 * ARCH_SET_CPUID, on CPUs with CPUID faulting; the setting survives fork and threads,
 * and LD_PRELOAD brings this library back after each exec). The SIGSEGV handler below
 * runs the real CPUID with faulting briefly lifted for its thread, clears the feature bits
 * of leaf 7 that name AVX-512, VNNI and AMX, writes the four registers and steps over the
 * two-byte instruction. Libraries decide on those bits before the OS-support bits of
 * XCR0, which stay as they are.
 *
 * The handler must stay installed for the life of the process, yet programs install
 * SIGSEGV handlers of their own (Python's faulthandler, PyTorch's DataLoader workers). So
 * this library also defines sigaction() and signal(): for SIGSEGV they record the program's
 * handler, report it back as the current one, and leave this one in place; a SIGSEGV that
 * is not a faulting CPUID goes to the program's handler (or, for the default action, kills
 * the process as it would have).
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#ifndef ARCH_SET_CPUID
#define ARCH_SET_CPUID 0x1012
#endif

#define BIT(n) (1u << (n))

/* CPUID leaf 7, sub-leaf 0. EBX: AVX512F 16, AVX512DQ 17, AVX512_IFMA 21, AVX512PF 26,
 * AVX512ER 27, AVX512CD 28, AVX512BW 30, AVX512VL 31. ECX: AVX512_VBMI 1,
 * AVX512_VBMI2 6, AVX512_VNNI 11, AVX512_BITALG 12, AVX512_VPOPCNTDQ 14. EDX:
 * AVX512_4VNNIW 2, AVX512_4FMAPS 3, AVX512_VP2INTERSECT 8, AMX_BF16 22, AVX512_FP16 23,
 * AMX_TILE 24, AMX_INT8 25. */
static const uint32_t LEAF7_EBX_HIDDEN = BIT(16) | BIT(17) | BIT(21) | BIT(26) | BIT(27) |
                                         BIT(28) | BIT(30) | BIT(31);
static const uint32_t LEAF7_ECX_HIDDEN = BIT(1) | BIT(6) | BIT(11) | BIT(12) | BIT(14);
static const uint32_t LEAF7_EDX_HIDDEN = BIT(2) | BIT(3) | BIT(8) | BIT(22) | BIT(23) |
                                         BIT(24) | BIT(25);
/* Leaf 7, sub-leaf 1. EAX: AVX_VNNI 4, AVX512_BF16 5, AMX_FP16 21, AVX_IFMA 23. EDX:
 * AVX_VNNI_INT8 4, AVX_NE_CONVERT 5, AMX_COMPLEX 8, AVX_VNNI_INT16 10, AVX10 19. */
static const uint32_t LEAF7_1_EAX_HIDDEN = BIT(4) | BIT(5) | BIT(21) | BIT(23);
static const uint32_t LEAF7_1_EDX_HIDDEN = BIT(4) | BIT(5) | BIT(8) | BIT(10) | BIT(19);

static const unsigned char CPUID_OPCODE[2] = {0x0F, 0xA2};

typedef int (*sigaction_function)(int, const struct sigaction *, struct sigaction *);
static sigaction_function libc_sigaction;
/* The SIGSEGV action the program asked for last (the default one until it asks). */
static struct sigaction program_action;
static int handler_installed;

static int call_libc_sigaction(int number, const struct sigaction *action,
                               struct sigaction *old) {
    if (!libc_sigaction) {
        libc_sigaction = (sigaction_function)dlsym(RTLD_NEXT, "sigaction");
    }
    return libc_sigaction(number, action, old);
}

static long set_cpuid_faulting(int faulting) {
    return syscall(SYS_arch_prctl, ARCH_SET_CPUID, faulting ? 0L : 1L);
}

static void hide_features(uint32_t leaf, uint32_t subleaf, uint32_t registers[4]) {
    if (leaf == 7 && subleaf == 0) {
        registers[1] &= ~LEAF7_EBX_HIDDEN;
        registers[2] &= ~LEAF7_ECX_HIDDEN;
        registers[3] &= ~LEAF7_EDX_HIDDEN;
    } else if (leaf == 7 && subleaf == 1) {
        registers[0] &= ~LEAF7_1_EAX_HIDDEN;
        registers[3] &= ~LEAF7_1_EDX_HIDDEN;
    }
}

/* A SIGSEGV that is not ours, handled as the program asked. */
static void pass_to_program(int number, siginfo_t *info, void *context) {
    if (program_action.sa_flags & SA_SIGINFO) {
        program_action.sa_sigaction(number, info, context);
    } else if (program_action.sa_handler != SIG_DFL && program_action.sa_handler != SIG_IGN) {
        program_action.sa_handler(number);
    } else {
        /* The default action: a fault repeats when the instruction runs again, a signal
         * sent by a process is raised again; either then meets the default action. */
        struct sigaction default_action;
        memset(&default_action, 0, sizeof default_action);
        default_action.sa_handler = SIG_DFL;
        call_libc_sigaction(SIGSEGV, &default_action, NULL);
        if (info->si_code <= 0) {
            raise(SIGSEGV);
        }
    }
}

static void on_sigsegv(int number, siginfo_t *info, void *context) {
    greg_t *gregs = ((ucontext_t *)context)->uc_mcontext.gregs;
    /* A faulting CPUID is a general-protection fault: SI_KERNEL, at a readable RIP. */
    if (info->si_code == SI_KERNEL &&
        memcmp((const void *)gregs[REG_RIP], CPUID_OPCODE, sizeof CPUID_OPCODE) == 0) {
        uint32_t leaf = (uint32_t)gregs[REG_RAX], subleaf = (uint32_t)gregs[REG_RCX];
        uint32_t registers[4];
        set_cpuid_faulting(0);
        __asm__ volatile("cpuid"
                         : "=a"(registers[0]), "=b"(registers[1]), "=c"(registers[2]),
                           "=d"(registers[3])
                         : "a"(leaf), "c"(subleaf));
        set_cpuid_faulting(1);
        hide_features(leaf, subleaf, registers);
        /* CPUID writes 32-bit registers, which clears their upper halves. */
        gregs[REG_RAX] = registers[0];
        gregs[REG_RBX] = registers[1];
        gregs[REG_RCX] = registers[2];
        gregs[REG_RDX] = registers[3];
        gregs[REG_RIP] += sizeof CPUID_OPCODE;
        return;
    }
    pass_to_program(number, info, context);
}

int sigaction(int number, const struct sigaction *action, struct sigaction *old) {
    if (number != SIGSEGV || !handler_installed) {
        return call_libc_sigaction(number, action, old);
    }
    if (old) {
        *old = program_action;
    }
    if (action) {
        program_action = *action;
    }
    return 0;
}

sighandler_t signal(int number, sighandler_t handler) {
    struct sigaction action, old;
    memset(&action, 0, sizeof action);
    action.sa_handler = handler;
    action.sa_flags = SA_RESTART;
    sigemptyset(&action.sa_mask);
    return sigaction(number, &action, &old) == 0 ? old.sa_handler : SIG_ERR;
}

__attribute__((constructor)) static void hide_avx512_vnni_amx(void) {
    static const char refused[] =
        "avx2_only: this CPU or kernel cannot make CPUID fault (arch_prctl "
        "ARCH_SET_CPUID); an AVX2-only CPU cannot be emulated here\n";
    struct sigaction handler;
    memset(&handler, 0, sizeof handler);
    handler.sa_sigaction = on_sigsegv;
    handler.sa_flags = SA_SIGINFO;
    sigemptyset(&handler.sa_mask);
    if (call_libc_sigaction(SIGSEGV, &handler, &program_action) != 0 ||
        set_cpuid_faulting(1) != 0) {
        (void)!write(STDERR_FILENO, refused, sizeof refused - 1);
        _exit(3);
    }
    handler_installed = 1;
}
