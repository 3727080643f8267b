import client from "prom-client";

/** What a finished run tells the metrics (a subset of the run result, plus phase timings). */
export interface RunObservation {
  runtime: string;
  language: string;
  /** completed | failed | cancelled, or the error code when the run had one (e.g. ENGINE_LOST). */
  outcome: string;
  /** Seconds per phase; a phase that did not happen is left out. */
  queueSeconds?: number;
  startSeconds?: number;
  runSeconds?: number;
  totalSeconds?: number;
}

/** Live values read when Prometheus scrapes, so nothing is kept in sync by hand. */
export interface MetricSources {
  activeRuns(): number;
  sandboxes(): number;
  /** Last known bytes across all workspaces (from uploads and runs; not a walk of the disk). */
  workspaceBytes(): number;
  /** Pre-started containers/sandboxes waiting, per runtime name. */
  prestart(): { runtime: string; ready: number; hits: number; misses: number }[];
  auditHeadSeq(): number;
  sinks(): { name: string; lag: number; failures: number }[];
  /** Workspace files whose content was read to hash them (hash cache misses), since start. */
  filesHashed?(): number;
}

const RUN_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

/**
 * Petri's Prometheus metrics (prom-client), in a registry of their own so that several servers
 * in one process (tests) never share counters. Label values are bounded sets (runtime, language,
 * outcome, quota name, sink name): never a tenant, sandbox or run id.
 */
export class PetriMetrics {
  readonly registry = new client.Registry();
  private readonly runs: client.Counter<"runtime" | "language" | "outcome">;
  private readonly phases: client.Histogram<"phase" | "runtime">;
  private readonly quota: client.Counter<"quota">;
  private readonly broker: client.Counter<"broker" | "outcome">;
  private readonly brokerActive: client.Gauge<"broker">;
  private readonly auditByKind: client.Counter<"kind">;
  private readonly engineFaults: client.Counter<"runtime" | "kind">;
  private readonly httpRequests: client.Counter<"status_class">;
  private readonly syncPlans: client.Counter<"kind">;
  private sources: MetricSources | null = null;
  private pgOpen = 0;

  constructor() {
    const r = [this.registry];
    client.collectDefaultMetrics({ register: this.registry, prefix: "petri_" });
    this.runs = new client.Counter({ name: "petri_runs_total", help: "Runs finished, by runtime, language and outcome", labelNames: ["runtime", "language", "outcome"], registers: r });
    this.phases = new client.Histogram({
      name: "petri_run_phase_seconds",
      help: "Run latency by phase: queue (request to runtime), start (runtime to program running), run (program running), total (request to result)",
      labelNames: ["phase", "runtime"], buckets: RUN_BUCKETS, registers: r,
    });
    this.quota = new client.Counter({ name: "petri_quota_refusals_total", help: "Requests refused by a quota (tenant quotas and the workspace quota)", labelNames: ["quota"], registers: r });
    this.broker = new client.Counter({ name: "petri_broker_connections_total", help: "Connections through TenantVault's brokers, by broker and outcome", labelNames: ["broker", "outcome"], registers: r });
    this.brokerActive = new client.Gauge({ name: "petri_broker_connections_active", help: "PostgreSQL broker sessions open now", labelNames: ["broker"], registers: r });
    this.auditByKind = new client.Counter({ name: "petri_audit_records_appended_total", help: "Audit records appended by this process, by kind", labelNames: ["kind"], registers: r });
    this.engineFaults = new client.Counter({ name: "petri_engine_faults_total", help: "Runs or pre-started sandboxes lost to the container engine or sandbox helper", labelNames: ["runtime", "kind"], registers: r });
    this.syncPlans = new client.Counter({ name: "petri_sync_plans_total", help: "Sync plans answered: quick checks found up to date (quick_hit) or not (quick_miss), and full comparisons (full)", labelNames: ["kind"], registers: r });
    this.httpRequests = new client.Counter({ name: "petri_http_requests_total", help: "HTTP requests answered, by status class", labelNames: ["status_class"], registers: r });

    const self = this;
    new client.Gauge({ name: "petri_runs_active", help: "Runs in flight", registers: r, collect() { this.set(self.sources?.activeRuns() ?? 0); } });
    new client.Gauge({ name: "petri_sandboxes", help: "Live sandboxes", registers: r, collect() { this.set(self.sources?.sandboxes() ?? 0); } });
    new client.Gauge({ name: "petri_workspace_bytes", help: "Bytes across all workspaces, as last measured after uploads and runs", registers: r, collect() { this.set(self.sources?.workspaceBytes() ?? 0); } });
    new client.Gauge({
      name: "petri_prestart_pool_size", help: "Pre-started single-use containers or sandboxes waiting for a run", labelNames: ["runtime"], registers: r,
      collect() { this.reset(); for (const p of self.sources?.prestart() ?? []) this.set({ runtime: p.runtime }, p.ready); },
    });
    new client.Gauge({
      name: "petri_prestart_runs_total", help: "Runs that could use a pre-started sandbox, by whether one was ready (hit) or not (miss); hit rate = hit / (hit + miss)",
      labelNames: ["runtime", "result"], registers: r,
      collect() {
        this.reset();
        for (const p of self.sources?.prestart() ?? []) {
          this.set({ runtime: p.runtime, result: "hit" }, p.hits);
          this.set({ runtime: p.runtime, result: "miss" }, p.misses);
        }
      },
    });
    new client.Counter({
      name: "petri_workspace_files_hashed_total", help: "Workspace files the server read to hash them (sync plans, hashed listings): hash cache misses", registers: r,
      collect() { this.reset(); this.inc(self.sources?.filesHashed?.() ?? 0); },
    });
    new client.Gauge({ name: "petri_audit_records", help: "Records in the audit log (its head sequence number)", registers: r, collect() { this.set(self.sources?.auditHeadSeq() ?? 0); } });
    new client.Gauge({
      name: "petri_audit_sink_lag_records", help: "Audit records not yet delivered to each sink", labelNames: ["sink"], registers: r,
      collect() { this.reset(); for (const s of self.sources?.sinks() ?? []) this.set({ sink: s.name }, s.lag); },
    });
    new client.Gauge({
      name: "petri_audit_sink_consecutive_failures", help: "Failed deliveries in a row, per audit sink", labelNames: ["sink"], registers: r,
      collect() { this.reset(); for (const s of self.sources?.sinks() ?? []) this.set({ sink: s.name }, s.failures); },
    });
  }

  /** Connects the scrape-time gauges to the live services (once they exist). */
  attach(sources: MetricSources): void {
    this.sources = sources;
  }

  runFinished(o: RunObservation): void {
    this.runs.inc({ runtime: o.runtime, language: o.language, outcome: o.outcome });
    const obs = (phase: string, v: number | undefined) => {
      if (v !== undefined && Number.isFinite(v) && v >= 0) this.phases.observe({ phase, runtime: o.runtime }, v);
    };
    obs("queue", o.queueSeconds);
    obs("start", o.startSeconds);
    obs("run", o.runSeconds);
    obs("total", o.totalSeconds);
  }

  syncPlanned(kind: "quick_hit" | "quick_miss" | "full"): void {
    this.syncPlans.inc({ kind });
  }

  quotaRefused(quota: string): void {
    this.quota.inc({ quota });
  }

  engineFault(runtime: string, kind: string): void {
    this.engineFaults.inc({ runtime, kind });
  }

  httpResponse(status: number): void {
    this.httpRequests.inc({ status_class: `${Math.floor(status / 100)}xx` });
  }

  /** Every audit event passes here: broker connections are counted from the brokers' own events. */
  auditAppended(ev: { kind: string; action: string; outcome: string }): void {
    this.auditByKind.inc({ kind: ev.kind });
    const broker = ev.kind === "datastore" ? "postgres" : ev.kind === "network" ? "http" : null;
    if (!broker) return;
    if (ev.action === "connect" || (broker === "http" && ev.action === "http_request")) {
      this.broker.inc({ broker, outcome: ev.outcome });
      if (broker === "postgres" && ev.outcome === "success") this.brokerActive.set({ broker }, ++this.pgOpen);
    } else if (ev.action === "disconnect" && broker === "postgres") {
      this.pgOpen = Math.max(0, this.pgOpen - 1);
      this.brokerActive.set({ broker }, this.pgOpen);
    }
  }

  async text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
