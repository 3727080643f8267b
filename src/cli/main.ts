import Docker from "dockerode";
import { ConfigError, loadConfig, RUNTIME_NAMES } from "../config.js";
import { rootfsDirFor } from "../images/build.js";
import { DEFAULT_IMAGE } from "../images/recipe.js";
import { imagesBuildCli } from "../images/cli.js";
import { detectRuntimes, doctorText, dockerStrategy, strategyFor } from "../runtimes/detect.js";
import { auditDoctorText } from "../tracing/doctor.js";
import { openDatabase } from "../store/db.js";
import { KeyService } from "../auth/keys.js";
import { runMcpStdio } from "../mcp/stdio.js";
import { createServer, installProcessGuards } from "../server.js";
import { runAuditVerifyCli } from "../audit/index.js";
import path from "node:path";
import { StartupError } from "../ops/preflight.js";
import { backup, restore } from "../ops/backup.js";
import { SchemaTooNewError } from "../store/db.js";
import { SecretStore, generateMasterKey, loadOrCreateMasterKey, readMasterKeyRing, rotateMasterKeyFile } from "../vault/index.js";

const USAGE = `usage: petri <command>

  serve                          start the HTTP server (PETRI_HOST:PETRI_PORT)
  mcp                            MCP server on stdin/stdout, acting as PETRI_API_KEY (default: the admin key)
  images build [NAME…] [--all] [--force]
                                 build images from Debian packages (default: the images
                                 PETRI_IMAGE / PETRI_IMAGE_<LANG> name), with progress
  images list                    the images this server offers, built or not, and what they hold
  keys create [--name N] [--tenant TENANT_ID] [--admin]
                                 create an API key; its token is printed once
  keys list                      list API keys (never their tokens)
  keys revoke KEY_ID             revoke a key; it stops working at once
  vault rotate-master-key        re-wrap every tenant data key under a new master key (key file only)
  doctor                         which sandbox runtimes work here, and how to fix the rest
  audit verify [DIR] [--public-key FILE] [--expect-seq N] [--checkpoint FILE]…
                                 check the audit log's hash chain and signed checkpoints
  backup DIR                     online backup (store, keys, audit log, blobs, workspaces) into a new
                                 or empty DIR, consistent while the server serves
  restore DIR                    restore a backup into an empty PETRI_DATA_DIR / PETRI_WORKSPACE_ROOT
  help                           this text

Configuration comes from PETRI_* environment variables (see README.md).
`;

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  if (i === -1) return undefined;
  const v = args[i + 1];
  if (v === undefined || v.startsWith("--")) throw new ConfigError(`${name} needs a value`);
  return v;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, sub, ...rest] = argv;
  try {
    if (cmd === "serve") return await serve();
    if (cmd === "mcp") return await runMcpStdio(loadConfig());
    if ((cmd === "backup" || cmd === "restore") && sub && !sub.startsWith("--")) {
      const cfg = loadConfig();
      const dir = path.resolve(sub);
      if (cmd === "backup") {
        const m = await backup(cfg, dir);
        process.stdout.write(`backup written to ${dir}: ${m.contents.join(", ")}; master key ${m.master_key}\n`);
      } else {
        const m = restore(cfg, dir);
        process.stdout.write(`restored ${m.contents.join(", ")} (backup of ${m.created_at}) into ${cfg.dataDir}; start the server to serve it\n`);
      }
      return 0;
    }
    if (cmd === "vault" && sub === "rotate-master-key") {
      const cfg = loadConfig();
      if (cfg.masterKey) {
        process.stderr.write("petri: PETRI_MASTER_KEY is set; rotate by re-wrapping with the new key in your secret manager (see docs/vault.md)\n");
        return 2;
      }
      const db = openDatabase(cfg.dataDir);
      const store = new SecretStore(db, loadOrCreateMasterKey({ file: cfg.masterKeyFile }), { reloadKeys: () => readMasterKeyRing(cfg.masterKeyFile) });
      const { rewrapped } = await rotateMasterKeyFile(store, cfg.masterKeyFile, generateMasterKey());
      process.stdout.write(`master key rotated; ${rewrapped} tenant data key(s) re-wrapped; running servers pick it up without a restart\n`);
      return 0;
    }
    if (cmd === "doctor") {
      const cfg = loadConfig();
      const docker = new Docker({ socketPath: cfg.dockerSocket });
      const opts = { docker, image: DEFAULT_IMAGE, rootfs: rootfsDirFor(cfg.imageDir, DEFAULT_IMAGE), sandboxUid: cfg.sandboxUid, sandboxGid: cfg.sandboxGid };
      const probes = await detectRuntimes({ strategies: RUNTIME_NAMES.map((r) => strategyFor(r, opts)) });
      process.stdout.write(doctorText(probes) + "\n");
      const runscTrace = probes.some((p) => p.available && p.variant === "runsc") ? await dockerStrategy("runsc-trace", opts).probe() : undefined;
      process.stdout.write(auditDoctorText(probes, runscTrace) + "\n");
      return probes.some((p) => p.available) ? 0 : 1;
    }
    if (cmd === "audit" && sub === "verify") {
      const dir = rest[0] && !rest[0].startsWith("--") ? rest[0] : loadConfig().auditDir;
      const expect = flag(rest, "--expect-seq");
      if (expect !== undefined && !/^\d+$/.test(expect)) throw new ConfigError("--expect-seq needs a whole number");
      const checkpointFiles = rest.flatMap((a, i) => (a === "--checkpoint" && rest[i + 1] ? [rest[i + 1]] : []));
      return runAuditVerifyCli(dir, { publicKeyFile: flag(rest, "--public-key"), expectSeq: expect === undefined ? undefined : Number(expect), checkpointFiles });
    }
    if (cmd === "images" && (sub === "build" || sub === "list")) {
      return await imagesBuildCli(loadConfig(), sub, rest);
    }
    if (cmd === "keys") {
      const cfg = loadConfig();
      const keys = new KeyService(openDatabase(cfg.dataDir));
      if (sub === "create") {
        const { key, token } = keys.createKey({ name: flag(rest, "--name"), tenantId: flag(rest, "--tenant"), admin: rest.includes("--admin") });
        process.stdout.write(`key ${key.id} (tenant ${key.tenant_id}${key.is_admin ? ", admin" : ""})\n${token}\n`);
        return 0;
      }
      if (sub === "list") {
        for (const k of keys.listKeys()) {
          process.stdout.write(`${k.id}\t${k.tenant_id}\t${k.name}\t${k.is_admin ? "admin" : "-"}\t${k.revoked_at ? "revoked " + k.revoked_at : "active"}\n`);
        }
        return 0;
      }
      if (sub === "revoke" && rest[0]) {
        if (!keys.revokeKey(rest[0])) {
          process.stderr.write(`no active key ${rest[0]}\n`);
          return 1;
        }
        process.stdout.write(`revoked ${rest[0]}\n`);
        return 0;
      }
    }
  } catch (e) {
    if (e instanceof StartupError) {
      process.stderr.write(`petri: cannot start: ${e.message}\n  fix: ${e.fix}\n`);
      return 2;
    }
    if ((cmd === "backup" || cmd === "restore") && e instanceof Error && !(e instanceof ConfigError)) {
      process.stderr.write(`petri ${cmd}: ${e.message}\n`);
      return 1;
    }
    if (e instanceof SchemaTooNewError) {
      process.stderr.write(`petri: ${e.message}\n`);
      return 2;
    }
    if (e instanceof ConfigError || (e as { code?: string }).code) {
      process.stderr.write(`petri: ${(e as Error).message}\n`);
      return 2;
    }
    throw e;
  }
  process.stderr.write(USAGE);
  return cmd === undefined || cmd === "help" || cmd === "--help" ? 0 : 2;
}

async function serve(): Promise<number> {
  const config = loadConfig();
  const server = await createServer(config);
  const log = server.app.log;
  installProcessGuards(log);
  if (server.bootstrap.source === "file-created") {
    log.info({ file: server.bootstrap.file }, `bootstrap admin key generated and written to ${server.bootstrap.file} (mode 0600)`);
  }
  await server.app.listen({ host: config.host, port: config.port });
  log.info({ host: config.host, port: config.port, runtimes: [...server.runtimes.keys()] }, "petri is ready");
  const base = `http://${config.host.includes(":") ? `[${config.host}]` : config.host}:${config.port}`;
  const keyLine = server.bootstrap.file ? `KEY=$(cat ${server.bootstrap.file})` : "KEY=$PETRI_ADMIN_TOKEN";
  // stdout carries JSON log lines only; the human greeting goes to a terminal, never into a
  // log stream (journald, docker logs) that a collector parses.
  if (process.stderr.isTTY) process.stderr.write(`
Petri is serving on ${base}. Try it:

  ${keyLine}
  SB=$(curl -s -X POST ${base}/v1/sandboxes -H "Authorization: Bearer $KEY" -d '{"language": "python"}' | sed 's/.*"id":"\\([^"]*\\)".*/\\1/')
  echo 'print("hello from isolation")' > main.py
  curl -s -X POST ${base}/v1/sandboxes/$SB/files -H "Authorization: Bearer $KEY" -F "file=@main.py"
  curl -s -X POST ${base}/v1/sandboxes/$SB/exec -H "Authorization: Bearer $KEY" -d '{"filename": "main.py"}'
  curl -s -X DELETE ${base}/v1/sandboxes/$SB -H "Authorization: Bearer $KEY"

`);
  let closing = false;
  const stop = async (sig: string) => {
    if (closing) return;
    closing = true;
    log.info({ signal: sig }, "shutting down");
    await server.close();
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
  return await new Promise<number>(() => undefined);
}
