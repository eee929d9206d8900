/* f5build ISA view: hide AVX-512 and VNNI from a process, on a CPU that has them.

   Loaded with LD_PRELOAD. Its constructor turns on CPUID faulting for the process (Linux
   arch_prctl(ARCH_SET_CPUID, 0): the CPUID instruction then raises SIGSEGV instead of running),
   and its SIGSEGV handler runs the real CPUID with faulting briefly off, clears the feature bits
   of AVX-512, AVX-VNNI and AVX512-BF16, writes the result into the faulting thread's registers and
   steps over the instruction. Every library that picks its kernels from CPUID after the program
   starts (ONNX Runtime's MLAS, PyTorch's cpuinfo, oneDNN, MKL, OpenBLAS) then takes its AVX2 +
   FMA path, running natively. glibc chooses its own string functions before any constructor
   runs: GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX512F,... covers those (f5build.isa_view sets it).
   The setting survives fork and clone and is reset by execve, where LD_PRELOAD loads this again.

   A program's own SIGSEGV handler is kept behind this one (sigaction and signal are wrapped):
   faults other than CPUID go to it, or to the default action. */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
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

typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);

static struct sigaction program_segv; /* the program's own SIGSEGV disposition */
static sigaction_fn real_sigaction;
static volatile unsigned long emulated;

static void real_cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
}

static void hide(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    if (leaf == 7 && sub == 0) {
        /* EBX: AVX512F 16, DQ 17, IFMA 21, PF 26, ER 27, CD 28, BW 30, VL 31 */
        r[1] &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) | (1u << 30) | (1u << 31));
        /* ECX: VBMI 1, VBMI2 6, VNNI 11, BITALG 12, VPOPCNTDQ 14 */
        r[2] &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
        /* EDX: 4VNNIW 2, 4FMAPS 3, VP2INTERSECT 8, FP16 23 */
        r[3] &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 23));
    } else if (leaf == 7 && sub == 1) {
        r[0] &= ~((1u << 4) | (1u << 5)); /* AVX-VNNI, AVX512-BF16 */
    } else if (leaf == 0xD && sub == 0) {
        r[0] &= ~0xE0u; /* XSAVE components: opmask, ZMM_Hi256, Hi16_ZMM */
    }
}

static void on_segv(int sig, siginfo_t *info, void *uctx) {
    ucontext_t *ctx = (ucontext_t *)uctx;
    greg_t *g = ctx->uc_mcontext.gregs;
    const uint8_t *ip = (const uint8_t *)g[REG_RIP];
    if (info->si_code == SI_KERNEL && ip[0] == 0x0f && ip[1] == 0xa2) { /* a faulted CPUID */
        uint32_t r[4];
        uint32_t leaf = (uint32_t)g[REG_RAX], sub = (uint32_t)g[REG_RCX];
        real_cpuid(leaf, sub, r);
        hide(leaf, sub, r);
        g[REG_RAX] = r[0];
        g[REG_RBX] = r[1];
        g[REG_RCX] = r[2];
        g[REG_RDX] = r[3];
        g[REG_RIP] += 2;
        emulated++;
        return;
    }
    if (program_segv.sa_flags & SA_SIGINFO) {
        program_segv.sa_sigaction(sig, info, uctx);
    } else if (program_segv.sa_handler != SIG_DFL && program_segv.sa_handler != SIG_IGN) {
        program_segv.sa_handler(sig);
    } else { /* the default action: stop handling, and the instruction faults again */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        real_sigaction(SIGSEGV, &dfl, NULL);
    }
}

int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (sig != SIGSEGV || real_sigaction == NULL) return real_sigaction(sig, act, old);
    if (old) *old = program_segv;
    if (act) program_segv = *act;
    return 0;
}

sighandler_t signal(int sig, sighandler_t handler) {
    struct sigaction act, old;
    memset(&act, 0, sizeof act);
    act.sa_handler = handler;
    act.sa_flags = SA_RESTART;
    sigemptyset(&act.sa_mask);
    return sigaction(sig, &act, &old) == 0 ? old.sa_handler : SIG_ERR;
}

/* How many CPUID instructions were answered: a check that the view is in force. */
unsigned long f5_isa_view_emulated(void) { return emulated; }

__attribute__((constructor)) static void start(void) {
    static const char refused[] =
        "f5build isa view: this CPU or kernel has no CPUID faulting (arch_prctl ARCH_SET_CPUID); "
        "the AVX2 view cannot be made here: run on an AVX2-only CPU instead\n";
    struct sigaction sa;
    real_sigaction = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    real_sigaction(SIGSEGV, &sa, &program_segv);
    if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
        (void)!write(2, refused, sizeof refused - 1);
        _exit(86);
    }
}
