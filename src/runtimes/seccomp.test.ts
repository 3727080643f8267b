import { test } from "node:test";
import assert from "node:assert/strict";
import { ALLOWED_SYSCALLS, DENIED_BY_PETRI, petriSeccompProfile, seccompSecurityOpt } from "./seccomp.js";

test("nothing bwrap denies is on the Docker profile's allow-list (io_uring first of all)", () => {
  for (const name of DENIED_BY_PETRI) assert.ok(!ALLOWED_SYSCALLS.includes(name), `${name} must not be allowed`);
  const p = petriSeccompProfile("x64");
  const allowed = new Set(p.syscalls.filter((r) => r.action === "SCMP_ACT_ALLOW" && !r.args).flatMap((r) => r.names));
  for (const n of ["io_uring_setup", "io_uring_enter", "io_uring_register", "keyctl", "unshare", "clone3"]) assert.ok(!allowed.has(n), n);
  assert.equal(p.defaultAction, "SCMP_ACT_ERRNO");
  assert.deepEqual(p.architectures, ["SCMP_ARCH_X86_64"]);
});

test("clone is allowed only without namespace flags, and the profile travels as one SecurityOpt", () => {
  const p = petriSeccompProfile("x64");
  const clone = p.syscalls.find((r) => r.names.includes("clone") && r.action === "SCMP_ACT_ALLOW");
  assert.deepEqual(clone?.args, [{ index: 0, value: 0x7e020000, valueTwo: 0, op: "SCMP_CMP_MASKED_EQ" }]);
  assert.match(seccompSecurityOpt("x64"), /^seccomp=\{"defaultAction"/);
});

test("the gVisor variant allows the same calls under gVisor's names (runsc skips names it does not know)", () => {
  const names = (p: ReturnType<typeof petriSeccompProfile>) => new Set(p.syscalls.filter((r) => r.action === "SCMP_ACT_ALLOW" && !r.args).flatMap((r) => r.names));
  const linux = names(petriSeccompProfile("x64"));
  const gvisor = names(petriSeccompProfile("x64", { gvisor: true }));
  // gVisor's table calls x86_64 syscall 270 "pselect": under "pselect6" socat's wait was refused.
  assert.ok(gvisor.has("pselect") && !gvisor.has("pselect6"));
  assert.ok(linux.has("pselect6") && !linux.has("pselect"));
  // clone3 reaches gVisor's Sentry, which answers ENOSYS (this runsc turns every errnoRet into EPERM).
  assert.deepEqual([...gvisor].filter((n) => !linux.has(n)).sort(), ["clone3", "pselect"]);
  assert.deepEqual([...linux].filter((n) => !gvisor.has(n)), ["pselect6"]);
  for (const n of DENIED_BY_PETRI.filter((d) => d !== "clone3")) assert.ok(!gvisor.has(n), n);
});
