/**
 * Dependency benchmark (`npm run build && npm run bench:deps`; docs/dependencies.md):
 * - detection: detectImports() over a 500-line Python file and a 500-line TypeScript file in a
 *   workspace directory (read through the same O_NOFOLLOW reader runs use);
 * - cached dependencies: the same `print(1)` snippet, interleaved, with `dependencies` whose
 *   environment is already installed and without any, through HTTP; the difference of medians is
 *   what a cached environment costs a run.
 *
 * Settings (environment): BENCH_DEPS_N (pairs, default 60), BENCH_DETECT_N (default 300),
 * BENCH_DEPS_IMAGE (an image with pip; default the configured python image), BENCH_DEPS_RUNTIME
 * (default runc), BENCH_DEPS_OUT (JSON, default bench/results/deps.json).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import pino from "pino";
import { loadConfig } from "../src/config.js";
import { createServer } from "../src/server.js";
import { detectImports } from "../src/deps/detect.js";
import { initJsScanner } from "../src/deps/js-imports.js";
import { workspaceReader } from "../src/deps/workspace-reader.js";
import { startPythonIndex } from "../test/deps/registries.js";
import { intEnv, machine, request, round1, summarize, type Summary } from "./lib.js";

const N = intEnv("BENCH_DEPS_N", 60, 1, 10_000);
const DETECT_N = intEnv("BENCH_DETECT_N", 300, 1, 100_000);
const RUNTIME = process.env.BENCH_DEPS_RUNTIME || "runc";
const OUT = process.env.BENCH_DEPS_OUT || path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "bench", "results", "deps.json");
const log = (msg: string) => process.stderr.write(`[bench:deps ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);

/** A 500-line module of the kind an agent writes: imports, functions, docstrings, strings, comments. */
export function pythonFile(lines = 500): string {
  const head = [
    "import os, sys, json", "import numpy as np", "import pandas as pd", "from sklearn.model_selection import train_test_split",
    "from matplotlib import pyplot as plt", "import requests", "from dateutil import parser as dparser", "import yaml",
  ];
  const body: string[] = [];
  for (let i = 0; body.length + head.length < lines; i++) {
    body.push(`def step_${i}(df, threshold=${i}):`, `    """Step ${i}: filter rows above the threshold (import nothing here)."""`,
      `    # keep rows where value > ${i}`, `    out = df[df["value"] > threshold]`, `    label = f"step {i}: {len(out)} rows, 'import os' is text"`,
      "    return out, label", "");
  }
  return [...head, ...body].slice(0, lines).join("\n") + "\n";
}

export function tsFile(lines = 500): string {
  const head = [
    'import _ from "lodash";', 'import dayjs from "dayjs";', 'import { z } from "zod";', 'import type { Request } from "express";',
    'import fs from "node:fs";', 'const axios = require("axios");', 'import { helper } from "./missing.js";',
  ];
  const body: string[] = [];
  for (let i = 0; body.length + head.length < lines; i++) {
    body.push(`export function step${i}<T extends { value: number }>(rows: T[], limit = ${i}): T[] {`,
      `  // require("not-this-one") in a comment`, `  const label = \`step ${i}: import x from "nope"\`;`,
      `  return rows.filter((r) => r.value / 2 > limit && label.length > 0);`, "}", "");
  }
  return [...head, ...body].slice(0, lines).join("\n") + "\n";
}

async function detectionBench(): Promise<{ python: Summary; typescript: Summary; bytes: { python: number; typescript: number } }> {
  await initJsScanner();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-bench-detect-"));
  try {
    const py = pythonFile();
    const ts = tsFile();
    fs.writeFileSync(path.join(dir, "main.py"), py);
    fs.writeFileSync(path.join(dir, "main.ts"), ts);
    const reader = workspaceReader(dir);
    const time = (fn: () => unknown) => {
      for (let i = 0; i < 20; i++) fn(); // warm-up: JIT, the lexer's WebAssembly
      const xs: number[] = [];
      for (let i = 0; i < DETECT_N; i++) {
        const t0 = performance.now();
        fn();
        xs.push(performance.now() - t0);
      }
      return summarize(xs.map((x) => x * 1000)); // µs
    };
    const python = time(() => detectImports("python", reader, { file: "main.py" }));
    const typescript = time(() => detectImports("node", reader, { file: "main.ts" }));
    return { python, typescript, bytes: { python: py.length, typescript: ts.length } };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function imageHasPip(image: string): boolean {
  try {
    execFileSync("docker", ["run", "--rm", "--network", "none", image, "sh", "-c", "python3 -m pip --version && python3 -c 'import venv'"], { stdio: "ignore", timeout: 60_000 });
    return true;
  } catch {
    return false;
  }
}

async function cachedBench(): Promise<{ withDeps: Summary; without: Summary; overheadMs: number; installMs: number; prepare: Summary } | { skipped: string }> {
  const image = process.env.BENCH_DEPS_IMAGE || loadConfig({}).images.python;
  if (!imageHasPip(image)) return { skipped: `image ${image} has no pip (set BENCH_DEPS_IMAGE)` };
  const index = await startPythonIndex([{ name: "petri-dep", version: "1.0.0", module: "petri_dep", source: "X = 1\n" }]);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "petri-bench-deps-"));
  const token = `pk_bench_${Date.now().toString(36)}`;
  const config = loadConfig({
    PETRI_DATA_DIR: dataDir, PETRI_ADMIN_TOKEN: token, PETRI_PORT: "0", PETRI_LOG_LEVEL: "silent", PETRI_RUNTIMES: RUNTIME,
    PETRI_IMAGE_PYTHON: image, PETRI_PIP_INDEX_URL: index.url,
  });
  const server = await createServer(config, { logger: pino({ level: "silent" }) });
  await server.app.listen({ host: "127.0.0.1", port: 0 });
  const addr = server.app.server.address();
  const url = `http://127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}`;
  const call = async (method: string, p: string, json?: unknown) => {
    const r = await request(url, method, p, { key: token, json, timeoutMs: 120_000 });
    if (r.status >= 300) throw new Error(`${method} ${p}: ${r.status} ${r.body.slice(0, 300)}`);
    return JSON.parse(r.body);
  };
  try {
    // Two sandboxes, each with runs of one shape, so each keeps its own pre-started container.
    const created = await call("POST", "/v1/sandboxes", { language: "python", runtime: RUNTIME });
    const sbA = created.id as string;
    const sbB = (await call("POST", "/v1/sandboxes", { language: "python", runtime: RUNTIME })).id as string;
    const withDeps = { code: "print(1)", dependencies: { python: ["petri-dep"] } };
    const without = { code: "print(1)" };
    const first = await call("POST", `/v1/sandboxes/${sbA}/exec`, withDeps);
    if (first.dependencies?.status !== "installed") throw new Error(`expected an install, got ${JSON.stringify(first.dependencies ?? first)}`);
    for (let i = 0; i < 5; i++) {
      await call("POST", `/v1/sandboxes/${sbA}/exec`, withDeps);
      await call("POST", `/v1/sandboxes/${sbB}/exec`, without);
    }
    const a: number[] = [];
    const b: number[] = [];
    for (let i = 0; i < N; i++) {
      // Interleaved, alternating which goes first, so drift in the host's load hits both alike.
      for (const which of i % 2 ? ["with", "without"] : ["without", "with"]) {
        await new Promise((r) => setTimeout(r, 50)); // let the next pre-started container settle
        const t0 = performance.now();
        const r = await call("POST", `/v1/sandboxes/${which === "with" ? sbA : sbB}/exec`, which === "with" ? withDeps : without);
        const ms = performance.now() - t0;
        if (r.stdout !== "1\n") throw new Error(`unexpected output ${JSON.stringify(r)}`);
        if (which === "with" && r.dependencies?.status !== "reused") throw new Error("the environment was not reused");
        (which === "with" ? a : b).push(ms);
      }
    }
    // The service's own share: prepare() for a cached environment, without the run.
    const deps = server.deps.dependencies!;
    const sandbox = server.sandboxes.get({ tenantId: created.tenant_id, keyId: "", admin: true } as never, sbA);
    const prep: number[] = [];
    for (let i = 0; i < 200; i++) {
      const t0 = performance.now();
      const p = await deps.prepare(sandbox.tenant_id, sandbox, withDeps);
      prep.push(performance.now() - t0);
      p?.release();
    }
    const sa = summarize(a);
    const sbm = summarize(b);
    return { withDeps: sa, without: sbm, overheadMs: round1(sa.median - sbm.median), installMs: first.dependencies.install_ms, prepare: summarize(prep) };
  } finally {
    await server.close();
    await index.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  log(`detection: ${DETECT_N} runs per language`);
  const detection = await detectionBench();
  log(`cached dependencies: ${N} interleaved pairs on ${RUNTIME}`);
  const cached = await cachedBench();
  const result = { machine: machine(), runtime: RUNTIME, detection, cached, date: new Date().toISOString() };
  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  fs.writeFileSync(OUT, JSON.stringify(result, null, 2) + "\n");
  const us = (s: Summary) => `median ${s.median} µs, p90 ${s.p90} µs, p99 ${s.p99} µs`;
  console.log(`detection, 500-line Python file (${detection.bytes.python} B): ${us(detection.python)}`);
  console.log(`detection, 500-line TypeScript file (${detection.bytes.typescript} B): ${us(detection.typescript)}`);
  if ("skipped" in cached) console.log(`cached dependencies: skipped (${cached.skipped})`);
  else {
    console.log(`run with cached dependencies: median ${cached.withDeps.median} ms (p90 ${cached.withDeps.p90})`);
    console.log(`run without dependencies:     median ${cached.without.median} ms (p90 ${cached.without.p90})`);
    console.log(`overhead of cached dependencies: ${cached.overheadMs} ms (median difference); first install took ${cached.installMs} ms`);
    console.log(`of which the service (prepare() of a cached environment): median ${cached.prepare.median} ms, p90 ${cached.prepare.p90} ms`);
  }
  console.log(`written to ${OUT}`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  main().then(() => process.exit(0), (e: unknown) => {
    console.error(e);
    process.exit(1);
  });
}
