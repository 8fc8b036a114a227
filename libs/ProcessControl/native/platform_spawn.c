// platform_spawn: starts a program directly inside a cgroup v2 group, with clone3(CLONE_INTO_CGROUP), the way
// systemd and crun start services. posix_spawn cannot do it (glibc 2.36 has no posix_spawnattr_setcgroup_np), and
// without it a child must be started as a gate (/bin/sh waiting on a pipe), moved, then exec'd again: two execs and
// a shell per launch. Here the child is born in its group and exec's the program at once.
//
// Like posix_spawn, the child shares the parent's memory (CLONE_VM) on a stack of its own, and the calling thread is
// suspended until the child has exec'd or failed (CLONE_VFORK): no page tables are copied. The child runs only
// async-signal-safe system calls, with every signal blocked until it has reset their dispositions.
//
// Built by Platform.ProcessControl.csproj when gcc is there; ChildReaper falls back to the gate without it.
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

struct clone_args_v2 {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup;
};

struct child_args {
    const char *path;
    char *const *argv;
    char *const *envp;
    const int *stdio; // three descriptors for 0, 1 and 2
    const char *cwd;  // or NULL
    volatile int error;
};

static int child_main(struct child_args *a)
{
    // Default dispositions for every signal (ignored ones would survive the exec), then an empty mask.
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < 65; sig++)
        if (sig != SIGKILL && sig != SIGSTOP) syscall(SYS_rt_sigaction, sig, &dfl, NULL, 8);
    if (setsid() < 0) goto fail;
    for (int fd = 0; fd < 3; fd++)
    {
        if (a->stdio[fd] == fd)
        {
            if (fcntl(fd, F_SETFD, 0) < 0) goto fail;
        }
        else if (dup2(a->stdio[fd], fd) < 0) goto fail;
    }
    if (a->cwd && chdir(a->cwd) < 0) goto fail;
    sigset_t none;
    sigemptyset(&none);
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, 8);
    execve(a->path, a->argv, a->envp);
fail:
    a->error = errno ? errno : EIO;
    syscall(SYS_exit, 127);
    return 127;
}

// clone3 with the child on its own stack: the child calls child_main and exits; the parent gets the pid or -errno.
static long clone3_call(struct clone_args_v2 *args, struct child_args *child)
{
    long ret;
    __asm__ volatile(
        "mov %[fn], %%r12\n\t"
        "mov %[arg], %%r13\n\t"
        "mov $435, %%eax\n\t" // __NR_clone3
        "syscall\n\t"
        "test %%rax, %%rax\n\t"
        "jnz 1f\n\t"
        "xor %%ebp, %%ebp\n\t"
        "mov %%r13, %%rdi\n\t"
        "call *%%r12\n\t"
        "mov %%eax, %%edi\n\t"
        "mov $60, %%eax\n\t" // __NR_exit
        "syscall\n\t"
        "hlt\n\t"
        "1:\n\t"
        : "=a"(ret)
        : "D"(args), "S"(sizeof *args), [fn] "r"((void *)child_main), [arg] "r"(child)
        : "rcx", "r11", "r12", "r13", "memory");
    return ret;
}

// Returns 0 with *pid set; -errno when clone3 itself failed (nothing was started: the kernel cannot do it, or the
// group refuses a new member), errno when the program could not be started (the child has exited).
int platform_spawn(const char *path, char *const argv[], char *const envp[], int cgroup_fd, const int stdio[3],
                   const char *cwd, int *pid)
{
    // The child's stack: this frame's, which stays put while this thread is suspended (as musl's posix_spawn does).
    char stack[32768] __attribute__((aligned(16)));
    struct child_args child = { path, argv, envp, stdio, cwd, 0 };
    struct clone_args_v2 args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP;
    args.exit_signal = SIGCHLD;
    args.stack = (uint64_t)(uintptr_t)stack;
    args.stack_size = sizeof stack;
    args.cgroup = (uint64_t)cgroup_fd;

    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    long ret = clone3_call(&args, &child);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (ret < 0) return (int)ret;
    if (child.error) return child.error; // exited: reaped like any child of ours
    *pid = (int)ret;
    return 0;
}

#else

int platform_spawn(const char *path, char *const argv[], char *const envp[], int cgroup_fd, const int stdio[3],
                   const char *cwd, int *pid)
{
    (void)path; (void)argv; (void)envp; (void)cgroup_fd; (void)stdio; (void)cwd; (void)pid;
    return -ENOSYS;
}

#endif
