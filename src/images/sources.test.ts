import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { hostAptSources, parseDeb822, parseOneLine, suiteSources, toMirrorArgs } from "./sources.js";

describe("host apt sources", () => {
  it("keeps only the host release's suites, from deb822 and one-line files", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-apt-"));
    try {
      fs.mkdirSync(path.join(dir, "sources.list.d"));
      fs.writeFileSync(path.join(dir, "sources.list.d", "debian.sources"),
        "Types: deb deb-src\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main contrib\n\nTypes: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n");
      fs.writeFileSync(path.join(dir, "sources.list.d", "vendor.list"), "deb [signed-by=/k.gpg] https://vendor.example/apt stable main\n");
      fs.writeFileSync(path.join(dir, "sources.list"), "# comment\ndeb http://mirror.example/debian bookworm main\n");
      const got = toMirrorArgs(hostAptSources(dir, "bookworm"));
      assert.deepEqual(got, [
        "deb http://mirror.example/debian bookworm main",
        "deb http://mirror.example/debian bookworm-updates main contrib",
        "deb http://mirror.example/debian-security bookworm-security main",
      ]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
  it("skips disabled stanzas and source-only entries", () => {
    assert.deepEqual(parseDeb822("Types: deb-src\nURIs: http://x\nSuites: s\n\nEnabled: no\nTypes: deb\nURIs: http://y\nSuites: s\n"), []);
    assert.deepEqual(parseOneLine("deb-src http://x s main\n"), []);
  });
  it("maps the host's release suites to another suite of the same mirror", () => {
    const host = parseDeb822("Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n");
    assert.deepEqual(toMirrorArgs(suiteSources(host, "bookworm", "trixie")), [
      "deb http://mirror.example/debian trixie main",
      "deb http://mirror.example/debian trixie-updates main",
      "deb http://mirror.example/debian-security trixie-security main",
    ]);
    assert.deepEqual(suiteSources(host, "bookworm", "bookworm"), host);
  });
});
