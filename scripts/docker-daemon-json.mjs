// Merges Petri's OCI runtime registrations into Docker's daemon.json, keeping whatever else
// the file already says. Prints nothing when the file is already right.
import fs from "node:fs";
import path from "node:path";

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
  runsc: { path: "/usr/bin/runsc", runtimeArgs: ["--platform=ptrace", "--network=none", "--host-uds=open"] },
  // Same sandbox, plus gVisor's own strace of the opens, execs and connects of the sandboxed program,
  // written by the sandbox's boot process to /var/log/petri/runsc/ (this runsc has no per-container
  // log name; Petri finds a run's file by the container id in it and deletes it after reading).
  "runsc-trace": {
    path: "/usr/bin/runsc",
    runtimeArgs: ["--platform=ptrace", "--network=none", "--host-uds=open", "--strace", "--strace-syscalls=open,openat,creat,execve,execveat,connect",
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
