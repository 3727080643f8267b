import fs from "node:fs";
import { spawn, spawnSync } from "node:child_process";
import Docker from "dockerode";

/**
 * A Docker engine of the test's own, to stop and start at will: its own socket, data root, exec
 * root and pid file, no bridge, no iptables, so the shared engine is never touched. The data
 * root is kept between runs (the runtime image is loaded into it once).
 */
export class OwnDockerd {
  readonly socket: string;
  readonly docker: Docker;
  private readonly dataRoot: string;
  private readonly execRoot: string;
  private readonly pidFile: string;
  private readonly logFile: string;

  constructor(readonly name: string) {
    this.socket = `/run/docker-petri-${name}.sock`;
    this.dataRoot = `/var/tmp/petri-dockerd-${name}`;
    this.execRoot = `/run/pd-${name}`; // short: containerd's socket path lives below it
    this.pidFile = `/run/docker-petri-${name}.pid`;
    this.logFile = `/var/tmp/petri-dockerd-${name}.log`;
    this.docker = new Docker({ socketPath: this.socket });
  }

  pid(): number | null {
    try {
      const pid = Number(fs.readFileSync(this.pidFile, "utf8").trim());
      process.kill(pid, 0);
      return pid;
    } catch {
      return null;
    }
  }

  async start(): Promise<void> {
    if (this.pid()) return;
    fs.mkdirSync(this.dataRoot, { recursive: true, mode: 0o700 });
    const cfg = `${this.dataRoot}.json`;
    fs.writeFileSync(cfg, JSON.stringify({ runtimes: { crun: { path: "/usr/bin/crun" } } }));
    const log = fs.openSync(this.logFile, "a");
    const p = spawn("dockerd", [
      "--config-file", cfg, "--data-root", this.dataRoot, "--exec-root", this.execRoot, "--pidfile", this.pidFile,
      "-H", `unix://${this.socket}`, "--bridge=none", "--iptables=false", "--ip-masq=false",
    ], { detached: true, stdio: ["ignore", log, log] });
    p.unref();
    fs.closeSync(log);
    for (let i = 0; i < 120; i++) {
      if (await this.docker.ping().then(() => true, () => false)) return;
      await new Promise((r) => setTimeout(r, 500));
    }
    throw new Error(`own dockerd ${this.name} did not start; see ${this.logFile}`);
  }

  /** Stops the engine the way systemctl stop does (SIGTERM) and waits until it is gone. */
  async stop(): Promise<void> {
    const pid = this.pid();
    if (!pid) return;
    process.kill(pid, "SIGTERM");
    for (let i = 0; i < 120 && this.pid(); i++) await new Promise((r) => setTimeout(r, 250));
    if (this.pid()) throw new Error(`own dockerd ${this.name} did not stop`);
  }

  /** Copies an image from the shared engine (read only there) unless this engine has it. */
  async ensureImage(image: string): Promise<void> {
    if (await this.docker.getImage(image).inspect().then(() => true, () => false)) return;
    const r = spawnSync("sh", ["-c", `docker save "$1" | docker -H "unix://$2" load`, "sh", image, this.socket], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`could not load ${image} into own dockerd: ${r.stderr}`);
  }

  async containers(label: string): Promise<Docker.ContainerInfo[]> {
    return this.docker.listContainers({ all: true, filters: { label: [label] } });
  }
}
