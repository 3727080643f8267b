/**
 * How a run's pids limit is kept under gVisor (runsc).
 *
 * Docker hands the OCI pids limit to runsc, which puts it on the host cgroup of the whole
 * sandbox: the Sentry's own Go threads, the gofer, and, on the ptrace platform, the stub
 * processes that back every guest address space (one host thread per Sentry thread that ran it).
 * An idle sandbox already holds ~60 host tasks and each guest process costs another 3–25, so a
 * limit of 128 was reached by about a dozen guest processes (a few socat connections of the
 * credential broker, or `go build`'s compilers). The Sentry cannot fail a host clone gracefully:
 * it panics ("error initializing first thread: resource temporarily unavailable") and the run
 * ends with exit status 2 (a Go panic) after printing whatever it had, or with no status at all.
 *
 * So the guest's limit is RLIMIT_NPROC instead, which the Sentry enforces on its own tasks
 * (threads included, like the pids controller) and answers with EAGAIN, as Linux does. Under
 * runc/crun RLIMIT_NPROC would count every host process of the sandbox uid, across sandboxes,
 * so it is only used here, where the Sentry is the kernel. The host cgroup keeps a limit scaled
 * to what that many guest tasks can cost the Sentry: a backstop against the Sentry itself, not
 * the program's limit.
 */

/** Host tasks of an idle runsc sandbox and a guest task's worst measured cost, with headroom. */
const SENTRY_BASE_TASKS = 256;
const HOST_TASKS_PER_GUEST_TASK = 16;

export function isGvisor(ociRuntime: string): boolean {
  return ociRuntime.startsWith("runsc");
}

/** The host cgroup's pids limit for a runsc sandbox whose guest may run `pids` tasks. */
export function gvisorHostPidsLimit(pids: number): number {
  return SENTRY_BASE_TASKS + HOST_TASKS_PER_GUEST_TASK * pids;
}
