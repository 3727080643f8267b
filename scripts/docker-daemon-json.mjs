// Merges Petri's OCI runtime registrations into Docker's daemon.json, keeping whatever else
// the file already says. Prints nothing when the file is already right.
//
// With --running-matches FILE it writes nothing: it reads `docker info --format '{{json .Runtimes}}'`
// on stdin and exits 0 only when the running engine has FILE's runtimes with the same path and
// arguments (a file that is right but was never reloaded, e.g. --oci-seccomp added by hand).
import fs from "node:fs";
import path from "node:path";

if (process.argv[2] === "--running-matches") {
  const wanted = JSON.parse(fs.readFileSync(process.argv[3] ?? "/etc/docker/daemon.json", "utf8") || "{}").runtimes ?? {};
  const running = JSON.parse(fs.readFileSync(0, "utf8") || "{}");
  const same = (a, b) => a !== undefined && a.path === b.path && JSON.stringify(a.runtimeArgs ?? []) === JSON.stringify(b.runtimeArgs ?? []);
  const stale = Object.keys(wanted).filter((name) => !same(running[name], wanted[name]));
  if (stale.length > 0) console.error(`[setup] dockerd runs an older registration of: ${stale.join(", ")}`);
  process.exit(stale.length > 0 ? 1 : 0);
}

const file = process.argv[2] ?? "/etc/docker/daemon.json";
let cfg = {};
if (fs.existsSync(file)) {
  const text = fs.readFileSync(file, "utf8").trim();
  cfg = text ? JSON.parse(text) : {};
}
const want = {
  crun: { path: "/usr/bin/crun" },
  // --host-uds=open: code may connect to (never create) host Unix sockets bind-mounted into the
  // sandbox — the vault's brokers in /petri/broker; without it gVisor resets those connections.
  // --oci-seccomp: gVisor's Sentry applies the container's seccomp profile (Petri's, which Docker
  // passes in the spec) to the sandboxed program; without it the profile is ignored under runsc.
  runsc: { path: "/usr/bin/runsc", runtimeArgs: ["--platform=ptrace", "--network=none", "--host-uds=open", "--oci-seccomp"] },
  // Same sandbox, plus gVisor's own strace of the opens, execs and connects of the sandboxed program,
  // written by the sandbox's boot process to /var/log/petri/runsc/ (this runsc has no per-container
  // log name; Petri finds a run's file by the container id in it and deletes it after reading).
  // access/faccessat: a warm interpreter's hand-over mark (docs/warm.md), where the program starts;
  // the list is gvisor-trace.ts's GVISOR_STRACE_SYSCALLS, as runsc-direct passes it.
  "runsc-trace": {
    path: "/usr/bin/runsc",
    runtimeArgs: ["--platform=ptrace", "--network=none", "--host-uds=open", "--oci-seccomp", "--strace", "--strace-syscalls=open,openat,creat,execve,execveat,connect,access,faccessat",
      "--debug-log=/var/log/petri/runsc/", "--debug-command=boot"],
  },
};
const before = JSON.stringify(cfg);
cfg.runtimes = { ...(cfg.runtimes ?? {}) };
for (const [name, spec] of Object.entries(want)) {
  if (fs.existsSync(spec.path)) cfg.runtimes[name] = spec;
}
if (JSON.stringify(cfg) !== before) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(cfg, null, 2) + "\n");
  console.error(`[setup] registered OCI runtimes in ${file}: ${Object.keys(cfg.runtimes).join(", ")}`);
  // Tells setup.sh that a running dockerd must reload (SIGHUP re-reads the runtimes).
  process.exitCode = 10;
}
