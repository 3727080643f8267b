/**
 * Petri's own seccomp profile for the Docker runtimes (runc, crun), in the OCI/Docker JSON form
 * the Engine API takes inline (`SecurityOpt: ["seccomp=<json>"]`).
 *
 * Why not Docker's default: the engine's built-in profile depends on the engine's version, and
 * Docker 20.10's allows io_uring (`io_uring_setup/enter/register`), a large and often-exploited
 * kernel surface that bwrap's deny-list already closes. This profile is an allow-list written for
 * what untrusted programs need with every capability dropped: anything not listed fails with
 * EPERM. Of what bwrap denies (src/runtimes/bwrap.ts DENIED_SYSCALLS), none is allowed here:
 * io_uring, keyrings, bpf, perf, userfaultfd, module and kexec loading, the mount API, namespaces
 * (unshare, setns, clone with namespace flags; clone3 answers ENOSYS so libc falls back to clone,
 * whose flags can be checked), clock and time setting, swap, reboot, quotactl, syslog, kcmp,
 * file handles, ioperm/iopl, acct, uselib, ustat, sysfs, _sysctl, nfsservctl, lookup_dcookie.
 * Other architectures than the host's are not listed, so their syscalls (e.g. 32-bit int 0x80
 * on x86_64) kill the process, as bwrap's filter does.
 *
 * gVisor (runsc) implements syscalls in its own kernel and applies this profile there only when
 * runsc runs with --oci-seccomp (setup.sh's registration, RUNSC_FLAGS for runsc-direct).
 */

const ALLOWED = [
  "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "capget", "capset", "chdir", "chmod", "chown",
  "clock_getres", "clock_gettime", "clock_nanosleep", "close", "close_range", "connect", "copy_file_range", "creat",
  "dup", "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_pwait", "epoll_pwait2", "epoll_wait",
  "eventfd", "eventfd2", "execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64",
  "fallocate", "fchdir", "fchmod", "fchmodat", "fchown", "fchownat", "fcntl", "fdatasync", "fgetxattr", "flistxattr",
  "flock", "fork", "fremovexattr", "fsetxattr", "fstat", "fstatfs", "fsync", "ftruncate", "futex", "futex_waitv",
  "futimesat", "getcpu", "getcwd", "getdents", "getdents64", "getegid", "geteuid", "getgid", "getgroups", "getitimer",
  "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrandom", "getresgid", "getresuid",
  "getrlimit", "get_robust_list", "getrusage", "getsid", "getsockname", "getsockopt", "get_thread_area", "gettid",
  "gettimeofday", "getuid", "getxattr", "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch",
  "io_cancel", "ioctl", "io_destroy", "io_getevents", "io_pgetevents", "ioprio_get", "ioprio_set", "io_setup",
  "io_submit", "kill", "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "lchown", "lgetxattr",
  "link", "linkat", "listen", "listxattr", "llistxattr", "lremovexattr", "lseek", "lsetxattr", "lstat", "madvise",
  "membarrier", "memfd_create", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall",
  "mmap", "mprotect", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedsend", "mq_unlink",
  "mremap", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap", "nanosleep",
  "newfstatat", "open", "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2",
  "pkey_alloc", "pkey_free", "pkey_mprotect", "poll", "ppoll", "prctl", "pread64", "preadv", "preadv2", "prlimit64",
  "process_mrelease", "process_vm_readv", "process_vm_writev", "pselect6", "ptrace", "pwrite64", "pwritev", "pwritev2",
  "read", "readahead", "readlink", "readlinkat", "readv", "recvfrom", "recvmmsg", "recvmsg", "remap_file_pages",
  "removexattr", "rename", "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction",
  "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
  "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr", "sched_getparam", "sched_get_priority_max",
  "sched_get_priority_min", "sched_getscheduler", "sched_rr_get_interval", "sched_setaffinity", "sched_setattr",
  "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl", "semget", "semop",
  "semtimedop", "sendfile", "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsuid", "setgid", "setgroups",
  "setitimer", "setpgid", "setpriority", "setregid", "setresgid", "setresuid", "setreuid", "setrlimit",
  "set_robust_list", "setsid", "setsockopt", "set_thread_area", "set_tid_address", "setuid", "setxattr", "shmat",
  "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd", "signalfd4", "socketpair", "splice", "stat",
  "statfs", "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time",
  "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime", "timer_settime", "timerfd_create",
  "timerfd_gettime", "timerfd_settime", "times", "tkill", "truncate", "umask", "uname", "unlink", "unlinkat", "utime",
  "utimensat", "utimes", "vfork", "vmsplice", "wait4", "waitid", "write", "writev",
];

/** Syscalls that must never be allowed (what bwrap denies); the unit test holds the list to it. */
export const DENIED_BY_PETRI = [
  "io_uring_setup", "io_uring_enter", "io_uring_register", "acct", "add_key", "bpf", "clock_adjtime", "clock_settime",
  "create_module", "delete_module", "finit_module", "init_module", "get_kernel_syms", "query_module", "kexec_file_load",
  "kexec_load", "keyctl", "request_key", "lookup_dcookie", "mount", "umount2", "move_mount", "open_tree", "fsopen",
  "fsconfig", "fsmount", "fspick", "mount_setattr", "pivot_root", "name_to_handle_at", "open_by_handle_at",
  "nfsservctl", "perf_event_open", "quotactl", "quotactl_fd", "reboot", "setns", "unshare", "settimeofday", "swapon",
  "swapoff", "sysfs", "_sysctl", "uselib", "userfaultfd", "ustat", "iopl", "ioperm", "syslog", "kcmp", "clone3",
];

/** Namespace flags of clone(2): CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET. */
const CLONE_NS_FLAGS = 0x7e020000;
const AF_VSOCK = 40;

const ARCH: Record<string, string> = { x64: "SCMP_ARCH_X86_64", arm64: "SCMP_ARCH_AARCH64" };

/**
 * runsc --oci-seccomp resolves a profile's names through gVisor's own syscall table, not
 * libseccomp's, and skips a name it does not know (a warning in its debug log only). That table
 * calls x86_64 syscall 270 "pselect", so "pselect6" was dropped and the call refused: socat (the
 * vault's in-sandbox forwarder) waits in pselect6, got EPERM and spun until the run timed out.
 * The other names runsc skips (futex_waitv, landlock_*, openat2, process_mrelease) are calls
 * this gVisor does not implement, so nothing is lost: they fail with EPERM instead of ENOSYS.
 */
const GVISOR_NAMES: Record<string, string> = { pselect6: "pselect" };

export interface SeccompProfile {
  defaultAction: string;
  defaultErrnoRet: number;
  architectures: string[];
  syscalls: { names: string[]; action: string; errnoRet?: number; args?: { index: number; value: number; valueTwo?: number; op: string }[] }[];
}

/**
 * gvisor: the profile as runsc --oci-seccomp applies it in the Sentry, under gVisor's names for
 * the calls (GVISOR_NAMES). This gVisor answers every SCMP_ACT_ERRNO with EPERM whatever its
 * errnoRet, and glibc does not fall back from clone3 to clone on EPERM (threads fail), so clone3
 * is passed to the Sentry, which does not implement it and answers ENOSYS itself; any namespace
 * it could make would be gVisor's, not the host's.
 */
export function petriSeccompProfile(arch: string = process.arch, opts: { gvisor?: boolean } = {}): SeccompProfile {
  const host = ARCH[arch];
  const extra = arch === "x64" ? ["arch_prctl"] : [];
  return {
    defaultAction: "SCMP_ACT_ERRNO",
    defaultErrnoRet: 1, // EPERM, as bwrap's filter answers
    architectures: host ? [host] : [],
    syscalls: [
      { names: [...ALLOWED, ...extra].map((n) => (opts.gvisor ? GVISOR_NAMES[n] ?? n : n)), action: "SCMP_ACT_ALLOW" },
      // Threads and processes, never new namespaces.
      { names: ["clone"], action: "SCMP_ACT_ALLOW", args: [{ index: 0, value: CLONE_NS_FLAGS, valueTwo: 0, op: "SCMP_CMP_MASKED_EQ" }] },
      // clone3 passes its flags in memory a filter cannot read: ENOSYS makes libc use clone.
      opts.gvisor ? { names: ["clone3"], action: "SCMP_ACT_ALLOW" } : { names: ["clone3"], action: "SCMP_ACT_ERRNO", errnoRet: 38 },
      { names: ["socket"], action: "SCMP_ACT_ALLOW", args: [{ index: 0, value: AF_VSOCK, op: "SCMP_CMP_NE" }] },
      // personality: only the harmless personas and the query (0xffffffff).
      ...[0, 8, 0x20000, 0x20008, 0xffffffff].map((v) => ({ names: ["personality"], action: "SCMP_ACT_ALLOW", args: [{ index: 0, value: v, op: "SCMP_CMP_EQ" }] })),
    ],
  };
}

/** The profile as Docker's SecurityOpt entry. */
export function seccompSecurityOpt(arch: string = process.arch, opts: { gvisor?: boolean } = {}): string {
  return `seccomp=${JSON.stringify(petriSeccompProfile(arch, opts))}`;
}

export const ALLOWED_SYSCALLS: readonly string[] = ALLOWED;
