import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { ConfigError } from "../config.js";
import { describeSink, parseSinkConfig } from "./sinks/config.js";

let dir: string;
let ca: string;
let secretFile: string;

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-sinkcfg-"));
  ca = path.join(dir, "ca.pem");
  secretFile = path.join(dir, "secret");
  fs.writeFileSync(ca, "not really a cert");
  fs.writeFileSync(secretFile, "s3cret\n");
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

describe("parseSinkConfig", () => {
  it("is empty for an empty string", () => {
    assert.deepEqual(parseSinkConfig("  "), []);
  });

  it("parses the URL form, several sinks at once", () => {
    const sinks = parseSinkConfig(
      `syslog+tls://127.0.0.1:6514?ca=${ca}&format=ocsf&facility=local3, syslog+tcp://[::1]?name=plain` +
        ` webhook+https://hooks.example.com/petri?secret_file=${secretFile}&team=a,b&batch_size=50,` +
        `splunk+https://splunk.example.com:8088?token=abc&index=main,file:///var/log/petri/audit.jsonl`,
    );
    assert.equal(sinks.length, 5);
    const [tls, tcp, hook, splunk, file] = sinks;
    assert.deepEqual(
      { type: tls!.type, transport: (tls as any).transport, host: (tls as any).host, port: (tls as any).port, ca: (tls as any).ca, format: tls!.format, facility: (tls as any).facility },
      { type: "syslog", transport: "tls", host: "127.0.0.1", port: 6514, ca, format: "ocsf", facility: 19 },
    );
    assert.match(tls!.name, /^syslog-[0-9a-f]{12}$/);
    assert.equal(tcp!.name, "plain");
    assert.equal((tcp as any).host, "::1");
    assert.equal((tcp as any).port, 514);
    assert.equal((hook as any).url, "https://hooks.example.com/petri?team=a%2Cb");
    assert.equal((hook as any).secret_file, secretFile);
    assert.equal(hook!.batch_size, 50);
    assert.equal((splunk as any).url, "https://splunk.example.com:8088/services/collector/event");
    assert.equal((splunk as any).token, "abc");
    assert.equal((splunk as any).index, "main");
    assert.equal((file as any).path, "/var/log/petri/audit.jsonl");
    assert.equal(file!.format, "json");
  });

  it("parses the JSON form with the same validation", () => {
    const [s] = parseSinkConfig(JSON.stringify([{ type: "webhook", url: "http://127.0.0.1:9/x", secret: "k", name: "hook", retry_max_ms: 1000 }]));
    assert.equal(s!.name, "hook");
    assert.equal(s!.retry_max_ms, 1000);
    assert.equal(s!.retry_min_ms, 500);
  });

  it("keeps secrets out of describeSink", () => {
    const [s] = parseSinkConfig("splunk+https://splunk:8088?token=topsecret");
    assert.ok(!describeSink(s!).includes("topsecret"));
    assert.ok(!s!.name.includes("topsecret"));
  });

  it("rejects bad input with a message naming the problem", () => {
    const bad: [string, RegExp][] = [
      ["ftp://x", /unknown sink scheme/],
      ["syslog+tcp://h?format=xml", /format/],
      ["syslog+tcp://h?bogus=1", /unknown parameter "bogus"/],
      ["syslog+tcp://h:99999", /not a sink URL|port/],
      ["syslog+tls://h?ca=/nonexistent/ca.pem", /not readable/],
      ["webhook+https://h/x", /exactly one of secret or secret_file/],
      ["splunk+https://h?token=a&token_file=" + secretFile, /exactly one of token/],
      ["file://relative", /absolute path|not a sink URL/],
      ['[{"type":"carrier-pigeon"}]', /unknown sink type/],
      ["[1,2]", /array of objects/],
      ["syslog+tcp://a?name=x, syslog+tcp://b?name=x", /share the name/],
    ];
    for (const [spec, re] of bad) {
      assert.throws(() => parseSinkConfig(spec), (e: unknown) => e instanceof ConfigError && re.test(e.message), spec);
    }
  });
});
