import { test } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import https from "node:https";
import tls from "node:tls";
import { RunCa } from "./x509.js";

test("run CA issues leaves that a standard TLS client accepts for names and IPs", async () => {
  const ca = new RunCa("ex_test");
  const caCert = new X509Certificate(ca.cert.certPem);
  assert.ok(caCert.ca);
  for (const host of ["localhost", "127.0.0.1"]) {
    const leaf = ca.leafFor(host);
    const cert = new X509Certificate(leaf.certPem);
    assert.ok(cert.checkIssued(caCert));
    assert.ok(cert.verify(caCert.publicKey));
    assert.equal(host === "localhost" ? cert.checkHost("localhost") : cert.checkIP("127.0.0.1"), host);
    const server = https.createServer({ cert: leaf.certPem, key: leaf.keyPem }, (_req, res) => res.end("ok"));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const port = (server.address() as { port: number }).port;
    try {
      const body = await new Promise<string>((resolve, reject) => {
        https
          .get({ host: "127.0.0.1", servername: host === "localhost" ? "localhost" : undefined, port, ca: ca.cert.certPem, checkServerIdentity: (_h, c) => tls.checkServerIdentity(host, c) }, (res) => {
            let s = "";
            res.on("data", (d) => (s += d));
            res.on("end", () => resolve(s));
          })
          .on("error", reject);
      });
      assert.equal(body, "ok");
    } finally {
      server.close();
    }
  }
});
