import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { strategyFor } from "../src/runtimes/detect.js";
import { createSandbox, exec, startTestServer, TEST_DOCKER_SOCKET, type TestServer } from "./helpers.js";

// Each call would succeed for an unprivileged process without a filter (io_uring_setup returns
// an fd, keyctl/add_key use the session keyring, userfaultfd with UFFD_USER_MODE_ONLY, unshare
// of a user namespace), so a failure here is the filter's doing. getpid and pselect6 are the
// controls: allowed calls must still work (under runsc the profile's names go through gVisor's
// own table, which calls pselect6 "pselect"; a name it skips is refused, and socat spun on it).
const PROBE = String.raw`
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    return "ok" if r >= 0 else os.strerror(ctypes.get_errno())
params = ctypes.create_string_buffer(120)
zero = ctypes.create_string_buffer(16)  # struct timespec {0, 0}: poll and return at once
out = {
  "getpid": call(39),
  "pselect6": call(270, 0, None, None, None, zero, None),
  "io_uring_setup": call(425, 8, params),
  "keyctl": call(250, 0, -3, 1),
  "add_key": call(248, b"user", b"petri", b"v", 1, -3),
  "userfaultfd": call(323, 1),
  "unshare_user": call(272, 0x10000000),
  "personality_noaslr": call(135, 0x0040000),
}
print(json.dumps(out))
`;

// runsc too: gVisor answers these syscalls from its own user-space kernel (it implements
// io_uring_setup and user namespaces itself), so the host's filter never sees them; runsc is
// started with --oci-seccomp (setup.sh's registration, RUNSC_FLAGS for runsc-direct) so that the
// Sentry applies Petri's profile to the sandboxed program itself.
const RUNTIMES = ["runc", "crun", "runsc", "bwrap", "runc-direct", "crun-direct", "runsc-direct"];

describe("seccomp: what bwrap denies is denied on every runtime (io_uring above all)", () => {
  let t: TestServer;
  before(async () => { t = await startTestServer({ PETRI_RUNTIMES: RUNTIMES.join(","), PETRI_RUNTIME: "runc", PETRI_WARM_IDLE_MS: "0" }); });
  after(async () => { await t?.close(); });

  for (const runtime of RUNTIMES) {
    test(runtime, async (ctx) => {
      const offered = (await t.api("GET", "/v1/runtimes")).json.runtimes.map((r: { name: string }) => r.name);
      if (!offered.includes(runtime)) {
        // Why, in the output: e.g. runsc registered with Docker without --oci-seccomp is refused.
        const probe = await strategyFor(runtime, { dockerSocket: TEST_DOCKER_SOCKET }).probe();
        ctx.skip(`SKIPPED: ${runtime} is not available on this host: ${probe.reason}`);
        return;
      }
      const sb = await createSandbox(t, { language: "python", runtime });
      const r = await exec(t, sb, { code: PROBE });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.exit_code, 0, r.json.stderr);
      const got = JSON.parse(r.json.stdout) as Record<string, string>;
      assert.equal(got.getpid, "ok", "the control call works");
      assert.equal(got.pselect6, "ok", `an allowed call is refused: ${JSON.stringify(got)}`);
      for (const name of ["io_uring_setup", "keyctl", "add_key", "userfaultfd", "unshare_user", "personality_noaslr"]) {
        if (runtime === "bwrap" && name === "personality_noaslr") continue; // bwrap's deny-list does not cover personality
        assert.notEqual(got[name], "ok", `${runtime}: ${name} must be refused, got ${JSON.stringify(got)}`);
      }
      assert.equal(got.io_uring_setup, "Operation not permitted", `the filter, not the kernel, refused io_uring: ${JSON.stringify(got)}`);
      await t.api("DELETE", `/v1/sandboxes/${sb}`);
    });
  }
});
