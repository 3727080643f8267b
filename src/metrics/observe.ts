import type { RunObservation } from "./metrics.js";

/**
 * Turns a finished run into what the metrics record. Phases: queue = request accepted → runtime
 * asked; start = runtime asked → program running (Docker: create/attach/start or hand-over to
 * a pre-started container; bwrap: spawn or hand-over); run = the program's own wall time;
 * total = request accepted → result recorded.
 */
export function runObservation(r: {
  result: { runtime: string; language: string; status: string; error: { code: string } | null; duration_ms: number };
  timings?: Record<string, number>; runtimeCalledAt: number | null; createdAt: number;
}): RunObservation {
  const t = r.timings ?? {};
  const startMs = t.start ?? t.handover ?? t.spawn;
  const ran = r.runtimeCalledAt !== null && !r.result.error?.code?.match(/^(IMAGE_MISSING|RUNTIME_UNAVAILABLE)$/);
  return {
    runtime: r.result.runtime,
    language: r.result.language,
    outcome: r.result.error?.code ?? r.result.status,
    queueSeconds: r.runtimeCalledAt !== null ? (r.runtimeCalledAt - r.createdAt) / 1000 : undefined,
    startSeconds: ran && startMs !== undefined ? startMs / 1000 : undefined,
    runSeconds: ran ? r.result.duration_ms / 1000 : undefined,
    totalSeconds: (Date.now() - r.createdAt) / 1000,
  };
}
