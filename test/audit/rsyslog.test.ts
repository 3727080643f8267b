/**
 * The syslog sink against a real rsyslogd (Debian packages rsyslog and rsyslog-gnutls), plain TCP
 * and TLS, started by the test with its own configuration on loopback ports.
 */
import assert from "node:assert/strict";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { AuditLog, parseSinkConfig, verifyAuditLog, type AuditRecord } from "../../src/audit/index.js";

const RSYSLOGD = "/usr/sbin/rsyslogd";
const haveRsyslog =
  fs.existsSync(RSYSLOGD) &&
  ["/usr/lib/rsyslog", ...fs.readdirSync("/usr/lib").map((d) => `/usr/lib/${d}/rsyslog`)].some((d) => fs.existsSync(`${d}/lmnsd_gtls.so`));

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

function sh(cmd: string, args: string[], cwd: string): void {
  execFileSync(cmd, args, { cwd, stdio: "pipe", timeout: 20_000 });
}

/** A throw-away CA and a server certificate for 127.0.0.1, made with the openssl CLI. */
function makeCerts(dir: string): { ca: string; cert: string; key: string; otherCa: string } {
  const subj = (cn: string) => ["-subj", `/CN=${cn}`];
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  sh("openssl", ["req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", ...subj("Petri Test CA")], dir);
  sh("openssl", ["req", "-x509", ...ec, "-keyout", "other.key", "-out", "other.pem", "-days", "2", ...subj("Some Other CA")], dir);
  sh("openssl", ["req", ...ec, "-keyout", "srv.key", "-out", "srv.csr", ...subj("127.0.0.1")], dir);
  fs.writeFileSync(path.join(dir, "ext.cnf"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n");
  sh("openssl", ["x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf"], dir);
  return { ca: path.join(dir, "ca.pem"), cert: path.join(dir, "srv.pem"), key: path.join(dir, "srv.key"), otherCa: path.join(dir, "other.pem") };
}

class Rsyslog {
  private child: ChildProcess | undefined;
  private stderr = "";
  readonly conf: string;
  readonly tcpOut: string;
  readonly tlsOut: string;

  constructor(readonly dir: string, readonly tcpPort: number, readonly tlsPort: number, certs: { ca: string; cert: string; key: string }) {
    const work = path.join(dir, "work");
    fs.mkdirSync(work, { recursive: true });
    this.conf = path.join(dir, "rsyslog.conf");
    this.tcpOut = path.join(dir, "received-tcp.log");
    this.tlsOut = path.join(dir, "received-tls.log");
    // Tab-separated so the test can take the fields apart; JSON in MSG never holds a raw tab.
    fs.writeFileSync(
      this.conf,
      `global(workDirectory="${work}" maxMessageSize="256k")
module(load="imtcp" maxSessions="50")
template(name="petri" type="string" string="%msgid%\\t%structured-data%\\t%msg%\\n")
input(type="imtcp" address="127.0.0.1" port="${tcpPort}" ruleset="tcp")
input(type="imtcp" address="127.0.0.1" port="${tlsPort}" ruleset="tls"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon"
      streamDriver.CAFile="${certs.ca}" streamDriver.CertFile="${certs.cert}" streamDriver.KeyFile="${certs.key}")
ruleset(name="tcp") { action(type="omfile" file="${this.tcpOut}" template="petri") }
ruleset(name="tls") { action(type="omfile" file="${this.tlsOut}" template="petri") }
`,
    );
  }

  async start(): Promise<void> {
    const pidFile = path.join(this.dir, "rsyslogd.pid");
    fs.rmSync(pidFile, { force: true });
    this.stderr = "";
    const child = spawn(RSYSLOGD, ["-n", "-f", this.conf, "-i", pidFile], { stdio: ["ignore", "pipe", "pipe"] });
    child.stdout!.on("data", (d: Buffer) => (this.stderr += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (this.stderr += d.toString()));
    this.child = child;
    const deadline = Date.now() + 10_000;
    for (const port of [this.tcpPort, this.tlsPort]) {
      for (;;) {
        if (child.exitCode !== null) throw new Error(`rsyslogd exited: ${this.stderr}`);
        const ok = await new Promise<boolean>((resolve) => {
          const s = net.connect(port, "127.0.0.1", () => {
            s.destroy();
            resolve(true);
          });
          s.on("error", () => resolve(false));
        });
        if (ok) break;
        if (Date.now() > deadline) throw new Error(`rsyslogd did not listen on ${port}: ${this.stderr}`);
        await sleep(50);
      }
    }
  }

  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill(signal);
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(timer);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

interface Received {
  msgid: string;
  sd: string;
  record: AuditRecord;
}

function readReceived(file: string): Received[] {
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((line) => {
      const [msgid, sd, msg] = line.split("\t");
      assert.ok(msg!.startsWith("\uFEFF"), "RFC 5424 §6.4: a UTF-8 MSG starts with the BOM");
      return { msgid: msgid!, sd: sd!, record: JSON.parse(msg!.slice(1)) as AuditRecord };
    });
}

async function waitForLines(file: string, n: number, ms: number): Promise<Received[]> {
  const deadline = Date.now() + ms;
  let got = readReceived(file);
  while (got.length < n && Date.now() < deadline) {
    await sleep(50);
    got = readReceived(file);
  }
  return got;
}

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "petri-rsyslog-"));
}

const MULTILINE = "first line\nsecond line\r\n\ttabbed third";
const UTF8 = "Grüße, 日本語, emoji 🎉, RTL עברית";

describe("syslog sink against a real rsyslogd", { skip: haveRsyslog ? false : "rsyslog / rsyslog-gnutls not installed" }, () => {
  it("delivers over TCP and TLS: exact counts, multi-line and UTF-8 intact, survives a receiver restart", { timeout: 90_000 }, async (t) => {
    const dir = tmpDir();
    const rs = new Rsyslog(dir, await freePort(), await freePort(), makeCerts(dir));
    let log: AuditLog | undefined;
    try {
      await rs.start();
      const certs = { ca: path.join(dir, "ca.pem"), other: path.join(dir, "other.pem") };
      const sinks = parseSinkConfig(
        [
          `syslog+tcp://127.0.0.1:${rs.tcpPort}?name=tcp&retry_min_ms=50&retry_max_ms=400`,
          `syslog+tls://127.0.0.1:${rs.tlsPort}?name=tls&ca=${certs.ca}&format=ocsf&retry_min_ms=50&retry_max_ms=400`,
          `syslog+tls://127.0.0.1:${rs.tlsPort}?name=untrusted&ca=${certs.other}&retry_min_ms=50&retry_max_ms=400`,
        ].join(","),
      );
      log = AuditLog.open({ dir: path.join(dir, "audit"), sinks, checkpointIntervalMs: 0, checkpointEvery: 25, flushTimeoutMs: 3000 });

      // Phase 1: a steady stream, receiver up.
      const sent: AuditRecord[] = [];
      for (let i = 1; i <= 60; i++) {
        sent.push(log.append({ kind: "exec", action: "exec.finish", outcome: i % 7 ? "success" : "failure", sandbox_id: "sb_1", exec_id: `ex_${i}`, detail: { i, note: i % 2 ? MULTILINE : UTF8, argv: ["python3", "main.py"] } }));
      }
      assert.equal(await log.waitForSinks(1), false, "the untrusted sink cannot deliver");
      const expectedCount = log.query({ limit: 1000 }).length; // records plus checkpoints
      const deadline = Date.now() + 20_000;
      while (Date.now() < deadline && log.sinkStatus().filter((s) => s.name !== "untrusted").some((s) => s.lag > 0)) await sleep(50);
      let tcp = await waitForLines(rs.tcpOut, expectedCount, 10_000);
      let tls = await waitForLines(rs.tlsOut, expectedCount, 10_000);
      assert.equal(tcp.length, expectedCount, "TCP: exactly one message per record");
      assert.equal(tls.length, expectedCount, "TLS: exactly one message per record");
      for (const r of sent) {
        const viaTcp = tcp.find((m) => m.record.id === r.id)!;
        assert.deepEqual(viaTcp.record, r, "the Petri JSON record arrives byte-for-byte equal");
        assert.equal(viaTcp.msgid, "exec.finish");
        assert.ok(viaTcp.sd.includes(`id="${r.id}"`) && viaTcp.sd.includes(`seq="${r.seq}"`), viaTcp.sd);
        const viaTls = tls.find((m) => (m.record as unknown as { metadata: { uid: string } }).metadata.uid === r.id)!;
        const ocsf = viaTls.record as unknown as { class_uid: number; unmapped: { detail: { note: string } } };
        assert.equal(ocsf.class_uid, 1007);
        assert.equal(ocsf.unmapped.detail.note, r.detail.note);
      }
      assert.ok(tcp.some((m) => m.record.detail.note === MULTILINE) && tcp.some((m) => m.record.detail.note === UTF8));
      const untrusted = log.sinkStatus().find((s) => s.name === "untrusted")!;
      assert.equal(untrusted.delivered_seq, 0);
      assert.match(untrusted.last_error ?? "", /certificate/i);

      // Phase 2: stop the receiver mid-stream, keep appending, start it again.
      let next = 61;
      const appendOne = () =>
        sent.push(log!.append({ kind: "file", action: "file.create", outcome: "success", sandbox_id: "sb_1", exec_id: `ex_${next}`, detail: { path: `/workspace/f${next++}.txt`, note: UTF8 } }));
      const ticker = setInterval(appendOne, 10);
      try {
        await sleep(300);
        const beforeStop = sent.length;
        await rs.stop();
        await sleep(1000); // appends continue while nothing listens
        assert.ok(sent.length - beforeStop >= 20, "records were appended while the receiver was down");
        for (const s of log.sinkStatus().filter((x) => x.name !== "untrusted")) {
          assert.ok(s.consecutive_failures > 0, `${s.name} noticed the outage`);
          assert.ok(s.lag > 0, `${s.name} is behind during the outage`);
        }
        await rs.start();
        await sleep(300);
      } finally {
        clearInterval(ticker);
      }
      for (let i = 0; i < 10; i++) appendOne();

      const all = log.query({ limit: 1000 });
      const deadline2 = Date.now() + 30_000;
      while (Date.now() < deadline2 && log.sinkStatus().filter((s) => s.name !== "untrusted").some((s) => s.lag > 0)) await sleep(50);
      tcp = await waitForLines(rs.tcpOut, all.length, 10_000);
      tls = await waitForLines(rs.tlsOut, all.length, 10_000);
      for (const [name, got, idOf, seqOf] of [
        ["tcp", tcp, (m: Received) => m.record.id, (m: Received) => m.record.seq],
        ["tls", tls, (m: Received) => (m.record as any).metadata.uid as string, (m: Received) => (m.record as any).metadata.sequence as number], // eslint-disable-line @typescript-eslint/no-explicit-any
      ] as const) {
        const seqById = new Map<string, number>();
        for (const m of got) {
          const prev = seqById.get(idOf(m));
          assert.ok(prev === undefined || prev === seqOf(m), `${name}: a duplicate must carry the same id and seq`);
          seqById.set(idOf(m), seqOf(m));
        }
        for (const r of all) assert.equal(seqById.get(r.id), r.seq, `${name}: record ${r.seq} lost`);
        const firstSeen: number[] = [];
        const seen = new Set<number>();
        for (const m of got) if (!seen.has(seqOf(m))) (seen.add(seqOf(m)), firstSeen.push(seqOf(m)));
        assert.deepEqual(firstSeen, [...firstSeen].sort((a, b) => a - b), `${name}: out of order`);
        t.diagnostic(`${name}: ${all.length} records, ${got.length} messages received (${got.length - seqById.size} re-deliveries with the same id)`);
      }

      // A graceful close is answered by rsyslog closing its side: that confirms the tail, so the
      // durable cursors end at the last record (the final checkpoint) and nothing is re-sent later.
      await log.close();
      log = undefined;
      const v = verifyAuditLog(path.join(dir, "audit"));
      assert.equal(v.ok, true);
      assert.equal(v.unsignedTail, 0, "close() signed the tail");
      for (const name of ["tcp", "tls"]) {
        const cursor = JSON.parse(fs.readFileSync(path.join(dir, "audit", "sinks", `${name}.cursor.json`), "utf8")) as { seq: number };
        assert.equal(cursor.seq, v.records, `${name} cursor after close`);
      }
      const final = await waitForLines(rs.tcpOut, v.records + (tcp.length - all.length), 5000);
      assert.equal(final[final.length - 1]!.record.seq, v.records);
      assert.equal(final[final.length - 1]!.record.action, "audit.checkpoint");
    } finally {
      await log?.close();
      await rs.stop("SIGKILL");
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
