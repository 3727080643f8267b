/**
 * The bpftrace program of the host tracer (runc, crun, bwrap). One program serves every run:
 * compiling one takes about a second, so it is started once with the server and events are
 * sorted to runs by cgroup in TracerService.
 *
 * Scope, decided in the kernel so other processes cost next to nothing: the task is in a pid
 * namespace other than the host's, and its cgroup v2 ancestry is `/petri-…/<run>` (bwrap: the
 * run's cgroup, level 2) or `/petri-…/<run>/<container>` (Docker: level 3). Each event carries
 * the kernfs id of the run's cgroup (level 2), which is the inode number of its directory.
 *
 * Output (bpftrace -f json wraps each printf in one JSON object, so a path holding a newline
 * cannot forge a record). Fields are space separated and the one untrusted string is always
 * last, so it needs no quoting:
 *   F <ns> <parent tgid> <child pid> <run>                     fork/clone
 *   E <ns> <tid> <run> <uid> <path>                            execve/execveat entered
 *   A <tid> <i> <arg>                                          its argv[i] (i < MAX_ARGS)
 *   M <tid>                                                    argv had more than MAX_ARGS entries
 *   X <ns> <tid> <run> <ret> <exec id> <tgid>                  execve returned (0: the program runs);
 *                                                              tid is the thread that entered, tgid its
 *                                                              process (a non-leader's exec: see execProbe)
 *   N <ns> <tgid> <run> <op> <ret> <family> <port> <addr…>     connect/bind/sendto with an address
 *   U <ns> <tgid> <run> <op> <ret> <path>                      the same for an AF_UNIX address
 *   D <ns> <tgid> <run> <name>                                 getaddrinfo(name) (uprobe on libc)
 *   H <ns> <tgid> <run> <uid> <exec id> <interpreter>          a warm unit's hand-over mark
 *   B <n>                                                      barrier n (see TracerService.flush)
 *   Z <run>                                                    an open whose arguments could not be read (openExitProbe)
 * <ns> is the kernel's monotonic clock (nsecs) when the event happened. It is what puts a run's
 * events back in order: each CPU has its own buffer and bpftrace reads them one after the other,
 * so an exec's return can be read before its entry (execve moves a task to another CPU), a fork
 * after its child's events, a connect before the exec that made its process the program.
 * where op is c (connect), b (bind), s (sendto). Opens (open/openat/openat2/creat, not ENOENT)
 * are counted in the kernel instead, in map @o0 or @o1 keyed by (run, tgid, self_exec_id,
 * result (0 or -errno), flags, path), and printed as one JSON map when drained (DRAIN_BASE).
 * Successful read-only opens of shared libraries (LIBRARY_PREFIXES) go there too, up to
 * LIB_PATHS_PER_DRAIN per process image between two drains; past that they are only counted, per
 * process image, in @lc0 / @lc1 keyed by (run, tgid, exec id): the audit sums library opens in one
 * record anyway, and a run walking /usr/lib would otherwise make the drained map thousands of
 * entries long (bpftrace printing it, and the server parsing it, cost more than the run's opens).
 */
export const MAX_ARGS = 12;
// Read-only opens under these are the interpreter and its libraries loading: summed, not listed.
export const LIBRARY_PREFIXES = ["/usr/lib/", "/usr/lib64/", "/lib/", "/lib64/", "/usr/local/lib/", "/usr/share/", "/etc/ld.so.cache", "/usr/libexec/"];
/** Library opens of one process image listed by path between two drains; the rest are only counted. */
export const LIB_PATHS_PER_DRAIN = 512;
/** Longest string read from a run (paths, arguments), bytes; bpftrace's own limit is 200. */
export const STRLEN = 200;
export const BARRIER_BASE = 1_000_000_000;
/**
 * Barrier numbers from DRAIN_BASE on also switch which of the two open-count maps (@o0, @o1) the
 * probes fill, and print and clear the one they left. Opens are counted in the kernel this way
 * (one map update each, nothing handed to user space per open). Print and clear happen in user
 * space, well after the switch: updates that were in flight on other CPUs have landed by then,
 * and later ones go to the other map, so no count is lost to a clear.
 */
export const DRAIN_BASE = 100_000_000;
/**
 * Commands from the server, each a kill(-(BARRIER_BASE + n), tag) the probe on kill() catches
 * only from the server's pid with this tracer's own tag (a second server in the same process has
 * another): n < DRAIN_BASE is a barrier, n < ID_LO_BASE a drain, then a run's cgroup id in two
 * halves: ID_LO_BASE + its low ID_LO_BITS bits, then REGISTER_BASE (follow the run) or
 * UNREGISTER_BASE (stop) + the rest. The probes follow only the runs registered so.
 */
export const ID_LO_BASE = 200_000_000;
export const ID_LO_BITS = 29;
export const REGISTER_BASE = 740_000_000;
export const UNREGISTER_BASE = 940_000_000;
/** High parts of a cgroup id (id / 2^29) the commands can carry: ids up to about 10^17. */
export const ID_HI_SPAN = 200_000_000;
/**
 * The hand-over mark of a warm interpreter (warm-python.ts): access(interpreter, HANDOVER_MODE),
 * which the kernel refuses (EINVAL: mode has bits beyond R|W|X) without looking at the path. From
 * that call on, the process is the run's program: the run's registration says the mark was made
 * (@mine's value 2), so the opens of the run's processes from then on are counted in the other
 * half of the exec id (exec id * 2 + 1), and the mark is printed as an exec of the run's argv would
 * be. (Only the marking process's halves matter: the server attributes other processes' opens by
 * exec and fork, for which both halves count.)
 */
export const HANDOVER_MODE = 0x7e7e0;
/**
 * The same mark for interpreters that cannot make that call (Node validates access()'s mode):
 * openat(interpreter, HANDOVER_OPEN_FLAGS) — O_WRONLY|O_CREAT|O_EXCL|O_TRUNC|O_DIRECTORY on an
 * existing file, refused (EINVAL for O_CREAT|O_DIRECTORY, else EEXIST) before anything is created
 * or truncated; O_CLOEXEC (which libuv adds) is ignored. Not counted as an open.
 */
export const HANDOVER_OPEN_FLAGS = 0o1 | 0o100 | 0o200 | 0o1000 | 0o200000;
const ENOENT = 2;
const O_LARGEFILE = 0o100000;
/** O_ACCMODE | O_CREAT | O_TRUNC: a read-only open has none of these bits. */
const NOT_READ_ONLY = 0o3 | 0o100 | 0o1000;

/**
 * "The path starts with a library prefix", on the path's first 16 bytes read as two little-endian
 * words ($w0, $w1): no string copy or strncmp per prefix. A read that fails gives 0: no match,
 * and the open is listed by path as any other (the server classifies paths again).
 */
function libraryTest(): string {
  const word = (b: Buffer) => { let v = 0n; for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]); return v; };
  const part = (w: string, b: Buffer) => b.length === 0 ? null : b.length === 8 ? `${w} == ${word(b)}` : `(${w} & ${(1n << BigInt(8 * b.length)) - 1n}) == ${word(b)}`;
  return LIBRARY_PREFIXES.map((p) => {
    const b = Buffer.from(p, "latin1");
    if (b.length > 16) throw new Error(`library prefix ${p} is longer than 16 bytes`);
    return `(${[part("$w0", b.subarray(0, 8)), part("$w1", b.subarray(8, 16))].filter(Boolean).join(" && ")})`;
  }).join(" || ");
}

// The run key and the scope test, inlined into every probe (bpftrace 0.17 has no macros).
// A task is in scope when its cgroup (level 2: bwrap and direct OCI runs) or its cgroup's parent
// (level 3: the container's cgroup under a Docker run's) is a run this server registered in @mine.
// Cheapest first: the task's own cgroup id is one helper call and one lookup (registered ids are
// runs' cgroups, level 2, so a hit means level 2); only a miss at level 3 reads the parent's id
// through the task's cgroup pointers (casts: without them bpftrace 0.17 does not resolve
// kernfs_node's fields). $in is @mine's value: 0 (not ours), 1 (ours), 2 (ours, and its warm
// hand-over mark was made): the same lookup says both.
const SCOPE = `
  $run = cgroup;
  $in = @mine[$run];
  if ($in == 0 && curtask->cgroups->dfl_cgrp->level == 3) {
    $run = ((struct kernfs_node *)((struct kernfs_node *)curtask->cgroups->dfl_cgrp->kn)->__parent)->id;
    $in = @mine[$run];
  }`;

const NS = "/curtask->thread_pid->level > 0/";

function argvLoop(): string {
  // unroll needs a constant; $stop keeps us from reading past argv's NULL.
  return `
    $i = 0; $stop = 0;
    unroll(${MAX_ARGS}) {
      if ($stop == 0) {
        $a = *(uint64 *)uptr((uint64)args->argv + $i * 8);
        if ($a == 0) { $stop = 1; } else { printf("A %d %d %s\\n", tid, $i, str($a)); }
      }
      $i++;
    }
    if ($stop == 0 && *(uint64 *)uptr((uint64)args->argv + ${MAX_ARGS} * 8) != 0) { printf("M %d\\n", tid); }`;
}

/**
 * An exec in flight is keyed by its thread (@ex[tid] = (run, tid)). A thread other than the
 * leader that executes a program takes the leader's pid in the kernel's de_thread() (the process
 * keeps its pid; the other threads die): sched_process_exec, which fires then with the old and
 * the new pid, moves the entry, so the return finds it and names the thread that entered (the
 * key of its E and A records) and the process it is now.
 */
function execProbe(sys: "execve" | "execveat"): string {
  return `
tracepoint:syscalls:sys_enter_${sys} ${NS} {${SCOPE}
  if ($in) {
    @ex[tid] = ($run, tid);
    printf("E %llu %d %llu %d %s\\n", nsecs, tid, $run, uid, str(args->filename));${argvLoop()}
  }
}
tracepoint:syscalls:sys_exit_${sys} /@ex[tid].0/ {
  $e = @ex[tid];
  printf("X %llu %d %llu %d %llu %d\\n", nsecs, $e.1, $e.0, args->ret, curtask->self_exec_id, pid);
  delete(@ex[tid]);
}`;
}

/**
 * Counts one finished open in the kernel (see the header): $f the user's path pointer, $fl its
 * flags, $r the result, with $run and $in (the scope, 2 once the run's hand-over mark was made)
 * set. Map operations are what an open costs here; each one below is needed.
 */
function countOpen(): string {
  return `
  if ($r != -${ENOENT}) {
    if ($r > 0) { $r = 0; }
    $ph = curtask->self_exec_id * 2 + $in - 1;
    $lib = 0;
    if ($r == 0 && ($fl & ${NOT_READ_ONLY}) == 0) {
      $w0 = *(uint64 *)uptr($f);
      $w1 = *(uint64 *)uptr($f + 8);
      if (${libraryTest()}) { $lib = 1; }
    }
    // @lnN bounds the listing (one lookup and one update per library open; ++ would look up again).
    $n = 0;
    if (@gen == 0) {
      if ($lib) { $n = @ln0[$run, pid, $ph]; }
      if ($n >= ${LIB_PATHS_PER_DRAIN}) {
        @lc0[$run, pid, $ph] = count();
      } else {
        if ($lib) { @ln0[$run, pid, $ph] = $n + 1; }
        @o0[$run, pid, $ph, $r, $fl, str(uptr((uint8 *)$f))] = count();
      }
    } else {
      if ($lib) { $n = @ln1[$run, pid, $ph]; }
      if ($n >= ${LIB_PATHS_PER_DRAIN}) {
        @lc1[$run, pid, $ph] = count();
      } else {
        if ($lib) { @ln1[$run, pid, $ph] = $n + 1; }
        @o1[$run, pid, $ph, $r, $fl, str(uptr((uint8 *)$f))] = count();
      }
    }
  }`;
}

/** The warm Node bootstrap's mark (HANDOVER_OPEN_FLAGS): the run's scope says so from now on; not an open. */
function openMark(path: string): string {
  return `
  if ($in && ($fl & ${(~(0o2000000 | O_LARGEFILE) >>> 0)}) == ${HANDOVER_OPEN_FLAGS}) {
    @mine[$run] = 2;
    printf("H %llu %d %llu %d %llu %s\\n", nsecs, pid, $run, uid, curtask->self_exec_id, str(${path}));
    $in = 0;
  }`;
}

/**
 * Opens through the syscall tracepoints: the path and flags at the entry, kept per thread (one map
 * entry) until the exit gives the result. (An fexit probe on do_sys_openat2 would see both at once,
 * with no tracepoint and no map entry per open; bpftrace 0.17 refuses to attach one where
 * tracefs's available_filter_functions cannot be read, as on the host this was measured on.)
 */
function openProbe(sys: "open" | "openat" | "openat2" | "creat"): string {
  const flags = sys === "creat" ? "0x241" /* O_CREAT|O_WRONLY|O_TRUNC */ : sys === "openat2" ? "*(uint64 *)args->how" : "args->flags";
  const file = sys === "creat" ? "args->pathname" : "args->filename";
  return `
tracepoint:syscalls:sys_enter_${sys} ${NS} {${SCOPE}
  $fl = (uint64)${flags};${sys === "openat" ? openMark("args->filename") : ""}
  if ($in) { @op[tid] = ((uint64)${file}, $fl, (uint64)$run, (uint64)$in); }
}
tracepoint:syscalls:sys_exit_${sys} /@op[tid].2/ {
  // A lookup in the predicate and one here: the same test in the body instead (one lookup) makes
  // bpftrace 0.17's program exceed the 512-byte BPF stack (the path key alone is 240 bytes).
  $t = @op[tid];
  $f = $t.0; $fl = $t.1; $run = $t.2; $in = $t.3;
  $r = args->ret;${countOpen()}
  delete(@op[tid]);
}`;
}

/**
 * x86_64: opens seen at the syscall's exit only, its arguments read from the registers the task
 * entered the kernel with (its pt_regs, at the top of its kernel stack; the kernel does not change
 * an open's argument registers), so no probe runs at the entry and nothing is kept per open in
 * flight. The saved syscall number is checked against the tracepoint's own on every open: a
 * kernel whose stack layout differs (another THREAD_SIZE, FRED's padding) prints a Z record instead of
 * counting, and the run says it is incomplete (aggregate.ts), never silently short.
 * Registers: di, si, dx are the first three arguments.
 */
export const PT_REGS_FROM_STACK = 16384 - 168;
function openExitProbe(sys: "open" | "openat" | "openat2" | "creat"): string {
  const file = sys === "open" || sys === "creat" ? "$g->di" : "$g->si";
  const flags = sys === "creat" ? "0x241" /* O_CREAT|O_WRONLY|O_TRUNC */ : sys === "open" ? "$g->si" : sys === "openat" ? "$g->dx" : "*(uint64 *)uptr($g->dx)";
  return `
tracepoint:syscalls:sys_exit_${sys} ${NS} {${SCOPE}
  if ($in) {
    $g = (struct pt_regs *)((uint64)curtask->stack + ${PT_REGS_FROM_STACK});
    if ($g->orig_ax != args->__syscall_nr) {
      printf("Z %llu\\n", $run);
    } else {
      $f = (uint64)${file};
      $fl = (uint64)${flags};${sys === "openat" ? openMark("uptr($f)") : ""}
      if ($in) {
        $r = args->ret;${countOpen()}
      }
    }
  }
}`;
}

function netProbe(sys: "connect" | "bind" | "sendto", op: string, addrArg: string): string {
  return `
tracepoint:syscalls:sys_enter_${sys} ${NS} {${SCOPE}
  if ($in && args->${addrArg} != 0) { @na[tid] = (uint64)args->${addrArg}; @nrun[tid] = $run; }
}
tracepoint:syscalls:sys_exit_${sys} /@nrun[tid]/ {
  $a = (uint8 *)uptr(@na[tid]);
  $fam = *(uint16 *)uptr($a);
  $port = (*(uint8 *)uptr($a + 2) << 8) | *(uint8 *)uptr($a + 3);
  if ($fam == 2) {
    printf("N %llu %d %llu ${op} %d 4 %d %s\\n", nsecs, pid, @nrun[tid], args->ret, $port, ntop(2, *(uint32 *)uptr($a + 4)));
  } else if ($fam == 10) {
    printf("N %llu %d %llu ${op} %d 6 %d %x %x %x %x\\n", nsecs, pid, @nrun[tid], args->ret, $port,
      *(uint32 *)uptr($a + 8), *(uint32 *)uptr($a + 12), *(uint32 *)uptr($a + 16), *(uint32 *)uptr($a + 20));
  } else if ($fam == 1) {
    printf("U %llu %d %llu ${op} %d %s\\n", nsecs, pid, @nrun[tid], args->ret, str(uptr($a + 2)));
  }
  delete(@na[tid]); delete(@nrun[tid]);
}`;
}

function handoverProbe(sys: "access" | "faccessat" | "faccessat2"): string {
  return `
tracepoint:syscalls:sys_enter_${sys} /args->mode == ${HANDOVER_MODE} && curtask->thread_pid->level > 0/ {${SCOPE}
  if ($in) {
    @mine[$run] = 2;
    printf("H %llu %d %llu %d %llu %s\\n", nsecs, pid, $run, uid, curtask->self_exec_id, str(args->filename));
  }
}`;
}

function dnsProbe(libc: string): string {
  return `
uprobe:${libc}:getaddrinfo ${NS} {${SCOPE}
  if ($in && arg0 != 0) { printf("D %llu %d %llu %s\\n", nsecs, pid, $run, str(arg0)); }
}`;
}

export interface ProgramOptions {
  /** Host pid of the server: its kill(-(BARRIER_BASE + n), tag) calls are commands (barriers, registrations). */
  serverPid: number;
  /** This tracer's tag (the signal number of its commands; ≥ 65, so never a real signal). */
  tag: number;
  /** libc files (host paths) of the run images, for the getaddrinfo uprobe. */
  libcs?: string[];
  /**
   * How an open's path and flags are had: "exit" (x86_64 only: read from the task's saved
   * registers at the syscall's exit, openExitProbe) or "entry" (kept from the syscall's entry,
   * openProbe). Default: "exit" on x86_64.
   */
  opens?: "exit" | "entry";
}

export function tracerProgram(o: ProgramOptions): string {
  const opens = o.opens ?? (process.arch === "x64" ? "exit" : "entry");
  return [
    // The types of @mine and @lnN, before the probes that read them into a variable (bpftrace 0.17 types a map by
    // its first assignment in the program's order; the command probe that fills it must stay last).
    `BEGIN {
  @mine[(uint64)0] = 0; delete(@mine[(uint64)0]);
  @ln0[(uint64)0, pid, (uint64)0] = 0; delete(@ln0[(uint64)0, pid, (uint64)0]);
  @ln1[(uint64)0, pid, (uint64)0] = 0; delete(@ln1[(uint64)0, pid, (uint64)0]);
}`,
    `tracepoint:sched:sched_process_fork ${NS} {${SCOPE}
  if ($in) { printf("F %llu %d %d %llu\\n", nsecs, pid, args->child_pid, $run); }
}`,
    execProbe("execve"), execProbe("execveat"),
    ...(["open", "openat", "openat2", "creat"] as const).map(opens === "exit" ? openExitProbe : openProbe),
    netProbe("connect", "c", "uservaddr"), netProbe("bind", "b", "umyaddr"), netProbe("sendto", "s", "addr"),
    ...(o.libcs ?? []).map(dnsProbe),
    handoverProbe("access"), handoverProbe("faccessat"), handoverProbe("faccessat2"),
    // de_thread(): a thread that executes a program takes the leader's pid (see execProbe).
    `tracepoint:sched:sched_process_exec /args->old_pid != args->pid/ {
  $e = @ex[(uint64)args->old_pid];
  if ($e.0) { @ex[(uint64)args->pid] = $e; delete(@ex[(uint64)args->old_pid]); }
}`,
    `tracepoint:syscalls:sys_enter_kill /pid == ${o.serverPid} && args->sig == ${o.tag} && (int32)args->pid < -${BARRIER_BASE}/ {
  $n = -(int32)args->pid - ${BARRIER_BASE};
  if ($n >= ${REGISTER_BASE}) {
    $hi = ($n - ${REGISTER_BASE}) % ${ID_HI_SPAN};
    $id = ((uint64)$hi << ${ID_LO_BITS}) | @idlo;
    if ($n < ${UNREGISTER_BASE}) { @mine[$id] = 1; } else { delete(@mine[$id]); }
  } else if ($n >= ${ID_LO_BASE}) {
    @idlo = (uint64)($n - ${ID_LO_BASE});
  } else {
    if ($n >= ${DRAIN_BASE}) {
      @gen = 1 - @gen;
      if (@gen == 1) { print(@o0); print(@lc0); clear(@o0); clear(@lc0); clear(@ln0); } else { print(@o1); print(@lc1); clear(@o1); clear(@lc1); clear(@ln1); }
    }
    printf("B %d\\n", $n);
  }
}`,
    // bpftrace prints every map at exit; there is nothing in them worth printing.
    `END { clear(@mine); clear(@idlo); clear(@ex); ${opens === "entry" ? "clear(@op); " : ""}clear(@na); clear(@nrun); clear(@o0); clear(@o1); clear(@lc0); clear(@lc1); clear(@ln0); clear(@ln1); clear(@gen); }`,
  ].join("\n");
}
