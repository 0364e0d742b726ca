import type { TaskResult, WorkerInfo } from "@flotilla/core";
import { Counter, Gauge, Histogram, Registry } from "prom-client";

/** What the metrics read from the engine at scrape time. */
export interface MetricsSnapshot {
  tasksByState: Record<string, number>;
  queueByPriority: Record<string, number>;
  workers: WorkerInfo[];
  /** Each rate limit of each key: units used in its current window and what remains. */
  limits?: Array<{ key: string; limit: string; unit: string; used: number; remaining: number }>;
  /** Each budget per subject: use and remaining per metric (`requests`, `tokens`, `cost_usd`). */
  budgets?: Array<{
    budget: string;
    subject: string;
    metric: string;
    used: number;
    remaining?: number;
  }>;
}

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

/**
 * Prometheus metrics of one app (its own registry, no global state).
 * Families: `flotilla_queue_depth{priority}`, `flotilla_tasks{state}`,
 * `flotilla_task_duration_seconds`, `flotilla_task_queue_wait_seconds`,
 * `flotilla_tasks_finished_total{type,status}`, `flotilla_worker_up{worker,kind,health}`,
 * `flotilla_worker_in_flight{worker}`, `flotilla_tokens_total{direction}`,
 * `flotilla_cost_usd_total`, `flotilla_http_requests_total{method,status}`,
 * `flotilla_ws_slow_consumer_total`, `flotilla_ws_clients`,
 * `flotilla_rate_limit_used{key,limit,unit}`, `flotilla_rate_limit_remaining{key,limit,unit}`,
 * `flotilla_budget_used{budget,subject,metric}`, `flotilla_budget_remaining{budget,subject,metric}`.
 *
 * @example
 * ```ts
 * const text = await app.flotilla.metrics.text(); // what GET /metrics serves
 * ```
 */
export class FlotillaMetrics {
  readonly registry = new Registry();
  readonly #duration: Histogram<"type" | "status">;
  readonly #queueWait: Histogram<"type">;
  readonly #finished: Counter<"type" | "status">;
  readonly #tokens: Counter<"direction">;
  readonly #cost: Counter;
  readonly #http: Counter<"method" | "status">;
  /** The counter's series by `method status`: a label set is looked up once, not per request. */
  readonly #httpSeries = new Map<string, { inc(): void }>();
  #pending: Promise<MetricsSnapshot> | undefined;

  constructor(
    snapshot: () => Promise<MetricsSnapshot>,
    extra: { slowConsumers: () => number; wsClients: () => number },
  ) {
    const r = [this.registry];
    const snap = () => {
      // One engine read per scrape, shared by every gauge.
      this.#pending ??= snapshot().finally(() => {
        setTimeout(() => {
          this.#pending = undefined;
        }, 0);
      });
      return this.#pending;
    };
    new Gauge({
      name: "flotilla_queue_depth",
      help: "Tasks queued (ready to run), by priority",
      labelNames: ["priority"],
      registers: r,
      async collect() {
        const s = await snap();
        this.reset();
        for (const [p, n] of Object.entries(s.queueByPriority)) this.set({ priority: p }, n);
      },
    });
    for (const field of ["used", "remaining"] as const) {
      new Gauge({
        name: `flotilla_rate_limit_${field}`,
        help:
          field === "used"
            ? "Units (requests or tokens) counted in the current window of a rate limit"
            : "Units a rate limit still allows in its current window",
        labelNames: ["key", "limit", "unit"],
        registers: r,
        async collect() {
          const s = await snap();
          this.reset();
          for (const l of s.limits ?? []) {
            this.set({ key: l.key, limit: l.limit, unit: l.unit }, l[field]);
          }
        },
      });
      new Gauge({
        name: `flotilla_budget_${field}`,
        help:
          field === "used"
            ? "Use of a budget in its current period (requests, tokens or cost_usd)"
            : "What a budget still allows in its current period",
        labelNames: ["budget", "subject", "metric"],
        registers: r,
        async collect() {
          const s = await snap();
          this.reset();
          for (const b of s.budgets ?? []) {
            const v = b[field];
            if (v !== undefined)
              this.set({ budget: b.budget, subject: b.subject, metric: b.metric }, v);
          }
        },
      });
    }
    new Gauge({
      name: "flotilla_tasks",
      help: "Tasks known to the store, by state",
      labelNames: ["state"],
      registers: r,
      async collect() {
        const s = await snap();
        this.reset();
        for (const [st, n] of Object.entries(s.tasksByState)) this.set({ state: st }, n);
      },
    });
    new Gauge({
      name: "flotilla_worker_up",
      help: "1 when the worker is healthy or degraded and accepting work, else 0",
      labelNames: ["worker", "kind", "health"],
      registers: r,
      async collect() {
        const s = await snap();
        this.reset();
        for (const w of s.workers) {
          const up = w.health !== "unhealthy" && w.circuit !== "open" && w.accepting;
          this.set({ worker: w.id, kind: w.kind, health: w.health }, up ? 1 : 0);
        }
      },
    });
    new Gauge({
      name: "flotilla_worker_in_flight",
      help: "Tasks running on the worker now",
      labelNames: ["worker"],
      registers: r,
      async collect() {
        const s = await snap();
        this.reset();
        for (const w of s.workers) this.set({ worker: w.id }, w.inFlight);
      },
    });
    new Gauge({
      name: "flotilla_ws_clients",
      help: "Connected WebSocket clients",
      registers: r,
      collect() {
        this.set(extra.wsClients());
      },
    });
    new Gauge({
      name: "flotilla_ws_slow_consumer_total",
      help: "Messages dropped or clients disconnected because they read too slowly",
      registers: r,
      collect() {
        this.set(extra.slowConsumers());
      },
    });
    this.#duration = new Histogram({
      name: "flotilla_task_duration_seconds",
      help: "Execution time of the last attempt of finished tasks",
      labelNames: ["type", "status"],
      buckets: LATENCY_BUCKETS,
      registers: r,
    });
    this.#queueWait = new Histogram({
      name: "flotilla_task_queue_wait_seconds",
      help: "Time from first queued to started",
      labelNames: ["type"],
      buckets: LATENCY_BUCKETS,
      registers: r,
    });
    this.#finished = new Counter({
      name: "flotilla_tasks_finished_total",
      help: "Tasks that reached a terminal state since the server started",
      labelNames: ["type", "status"],
      registers: r,
    });
    this.#tokens = new Counter({
      name: "flotilla_tokens_total",
      help: "LLM tokens used by finished tasks",
      labelNames: ["direction"],
      registers: r,
    });
    this.#cost = new Counter({
      name: "flotilla_cost_usd_total",
      help: "Cost in USD of finished tasks",
      registers: r,
    });
    this.#http = new Counter({
      name: "flotilla_http_requests_total",
      help: "HTTP requests answered, by method and status",
      labelNames: ["method", "status"],
      registers: r,
    });
  }

  /**
   * Records a finished task.
   *
   * @example
   * ```ts
   * const result = await handle.result();
   * metrics.observeResult("summarize", result); // duration, queue wait, tokens, cost
   * ```
   */
  observeResult(type: string, result: TaskResult): void {
    this.#finished.inc({ type, status: result.status });
    const d = result.timings?.durationMs;
    if (typeof d === "number" && Number.isFinite(d)) {
      this.#duration.observe({ type, status: result.status }, d / 1000);
    }
    const w = result.timings?.queueWaitMs;
    if (typeof w === "number" && Number.isFinite(w)) this.#queueWait.observe({ type }, w / 1000);
    const u = result.usage;
    if (u) {
      if (u.inputTokens) this.#tokens.inc({ direction: "input" }, u.inputTokens);
      if (u.outputTokens) this.#tokens.inc({ direction: "output" }, u.outputTokens);
      if (u.costUsd) this.#cost.inc(u.costUsd);
    }
  }

  /**
   * Counts an HTTP answer.
   *
   * @example
   * ```ts
   * metrics.observeHttp("POST", 201);
   * ```
   */
  observeHttp(method: string, status: number): void {
    const k = `${method} ${status}`;
    let series = this.#httpSeries.get(k);
    if (!series) {
      series = this.#http.labels({ method, status: String(status) });
      this.#httpSeries.set(k, series);
    }
    series.inc();
  }

  /**
   * The exposition text.
   *
   * @example
   * ```ts
   * const body = await metrics.text();
   * return new Response(body, { headers: { "content-type": metrics.contentType } });
   * ```
   */
  async text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
