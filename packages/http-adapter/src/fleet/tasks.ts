import { createHash } from "node:crypto";
import { once } from "node:events";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import type { EngineApi, TaskRecord, TaskSpec, TaskStatus, TimerHandle } from "@flotilla/core";
import { TASK_STATUSES, TERMINAL_STATUSES } from "@flotilla/core";
import { Cron } from "croner";
import type { AdminPrincipal, KeyService } from "./keys.js";

/**
 * Size of the pieces an upload is stored in: the most of it held in memory at once, and
 * small enough for the young generation, so each piece is freed at once after it is written.
 */
const FILE_CHUNK_BYTES = 64 * 1024;

import type { ResolvedFleetOptions } from "./options.js";
import type { CreateTaskBody } from "./schemas.js";
import type {
  FileRecord,
  FleetState,
  FleetTaskState,
  ScheduleRecord,
  TaskFileRef,
} from "./state.js";
import { baseName, FleetHttpError, iso, KeyedMutex, safeFileName, uuid } from "./util.js";

/** Fleet task type for prompts run by agents on nodes. */
export const FLEET_TASK_TYPE = "agent_run";

/** How much later than `timeout_seconds` the server gives up on a leased task. */
export const TIMEOUT_BACKSTOP_MS = 120_000;

/** Flotilla statuses as the fleet protocol names them. */
const FLEET_STATUS: Record<TaskStatus, string> = {
  pending: "pending",
  awaiting_approval: "pending",
  queued: "pending",
  leased: "assigned",
  running: "running",
  succeeded: "completed",
  failed: "failed",
  cancelled: "cancelled",
  timed_out: "timed_out",
  rejected: "cancelled",
  skipped: "cancelled",
};

/** Maps a `?status=` filter (fleet or Flotilla words) to Flotilla statuses. */
export function statusFilter(word: string): TaskStatus[] | undefined {
  const w = word.toLowerCase();
  if ((TASK_STATUSES as readonly string[]).includes(w)) return [w as TaskStatus];
  const out = (Object.keys(FLEET_STATUS) as TaskStatus[]).filter((s) => FLEET_STATUS[s] === w);
  if (w === "success") return ["succeeded"];
  if (w === "error") return ["failed", "timed_out"];
  return out.length ? out : undefined;
}

interface FleetPayload {
  prompt?: unknown;
  files?: TaskFileRef[];
}

/** Fleet tasks: creation (targeting, files, schedules), views, files, logs, retention. */
export class TaskService {
  readonly #o: ResolvedFleetOptions;
  readonly #state: FleetState;
  readonly #engine: EngineApi;
  readonly #keys: KeyService;
  readonly mutex = new KeyedMutex();
  readonly #timers = new Map<string, TimerHandle>();
  /** Tasks removed by cleanup that the orchestrator may still cache in memory. */
  readonly deleted = new Set<string>();
  #closed = false;

  constructor(
    options: ResolvedFleetOptions,
    state: FleetState,
    engine: EngineApi,
    keys: KeyService,
  ) {
    this.#o = options;
    this.#state = state;
    this.#engine = engine;
    this.#keys = keys;
  }

  // ---- creation -------------------------------------------------------------------------

  /** Validates targeting and files, then submits the task (or its first occurrence). */
  async create(principal: AdminPrincipal, body: CreateTaskBody): Promise<Record<string, unknown>> {
    await this.#checkTargets(principal, body);
    const files = await this.#resolveFiles(body.files);
    let cron: Cron | undefined;
    if (body.recurrence) {
      try {
        cron = new Cron(body.recurrence, {
          paused: true,
          ...(body.timezone ? { timezone: body.timezone } : {}),
        });
      } catch (err) {
        throw new FleetHttpError(
          400,
          `body.recurrence: not a valid cron expression (${(err as Error).message})`,
        );
      }
    }
    if (!cron) {
      const id = await this.#submit(
        body,
        files,
        principal.label,
        null,
        body.scheduled_for ?? null,
        principal.actor,
      );
      return this.viewById(id);
    }
    const now = this.#o.clock.now();
    const first = body.scheduled_for ?? cron.nextRun(new Date(now))?.getTime() ?? null;
    if (first === null) throw new FleetHttpError(400, "body.recurrence: it never runs");
    const schedule: ScheduleRecord = {
      id: uuid(),
      cron: body.recurrence as string,
      timezone: body.timezone ?? null,
      template: body as unknown as Record<string, unknown>,
      created_at: now,
      created_by: principal.label,
      api_key: principal.actor,
      next_run_at: first,
      last_task_id: null,
      active: true,
    };
    const id = await this.#submit(
      body,
      files,
      principal.label,
      schedule.id,
      first,
      principal.actor,
    );
    schedule.last_task_id = id;
    await this.#state.putSchedule(schedule);
    this.#arm(schedule);
    return this.viewById(id);
  }

  async #checkTargets(principal: AdminPrincipal, body: CreateTaskBody): Promise<void> {
    if (body.target_node_id) {
      const node = await this.#state.getNode(body.target_node_id);
      if (!node) {
        throw new FleetHttpError(400, `body.target_node_id: no node ${body.target_node_id}`);
      }
      if (!this.#keys.mayTarget(principal, node.name)) {
        throw new FleetHttpError(403, `this key may not target node "${node.name}"`);
      }
    }
    const hasNodeTarget = Boolean(body.target_node_id);
    if (body.target_node_name || !hasNodeTarget) {
      if (!this.#keys.mayTarget(principal, body.target_node_name ?? undefined)) {
        throw new FleetHttpError(
          403,
          body.target_node_name
            ? `this key may not target "${body.target_node_name}"`
            : "this key must set target_node_name (or target_node_id) within its allowed targets",
        );
      }
    }
  }

  async #resolveFiles(names: readonly string[]): Promise<TaskFileRef[]> {
    const refs: TaskFileRef[] = [];
    const seen = new Set<string>();
    for (const [i, raw] of names.entries()) {
      const filename = baseName(raw);
      const rec = await this.#state.getFile(filename);
      if (!rec) {
        throw new FleetHttpError(
          400,
          `body.files.${i}: no uploaded file "${raw}" (POST /upload first)`,
        );
      }
      // Names stored before they were checked at upload are checked here too.
      let shown = safeFileName(rec.original_name) ?? rec.filename;
      if (seen.has(shown)) shown = rec.filename;
      seen.add(shown);
      refs.push({ name: shown, filename: rec.filename, checksum: rec.checksum, size: rec.size });
    }
    return refs;
  }

  async #submit(
    body: CreateTaskBody,
    files: TaskFileRef[],
    createdBy: string,
    scheduleId: string | null,
    runAt: number | null,
    apiKey: string | null,
  ): Promise<string> {
    const id = uuid();
    const target: NonNullable<TaskSpec["target"]> = {};
    if (body.target_node_id) target.workerId = body.target_node_id;
    if (body.target_node_name) target.name = body.target_node_name;
    if (body.target_tags && Object.keys(body.target_tags).length > 0) {
      target.tags = Object.fromEntries(
        Object.entries(body.target_tags).map(([k, v]) => [k, String(v)]),
      );
    }
    const spec: TaskSpec = {
      id,
      type: body.type ?? FLEET_TASK_TYPE,
      payload: { ...(body.payload ?? {}), prompt: body.prompt, files },
      priority: body.priority ?? "normal",
      // The node enforces timeout_seconds itself and reports the exit; the server's timer is a
      // backstop that fires a little later, so the node's own report wins.
      timeoutMs: body.timeout_seconds * 1000 + TIMEOUT_BACKSTOP_MS,
      retry: { maxAttempts: body.max_attempts ?? this.#o.maxAttempts, initialDelayMs: 0 },
      ...(body.approval ? { approval: body.approval } : {}),
      metadata: {
        ...(body.metadata ?? {}),
        fleet: {
          timeout_seconds: body.timeout_seconds,
          target_node_id: body.target_node_id ?? null,
          target_node_name: body.target_node_name ?? null,
          target_tags: body.target_tags ?? null,
          recurrence: body.recurrence ?? null,
          schedule_id: scheduleId,
          created_by: createdBy,
        },
      },
    };
    if (Object.keys(target).length > 0) spec.target = target;
    if (body.capabilities?.length) spec.requirements = { capabilities: body.capabilities };
    if (runAt !== null && runAt > this.#o.clock.now()) spec.runAt = runAt;
    if (body.idempotency_key && !scheduleId) spec.idempotencyKey = body.idempotency_key;
    if (body.tenant) spec.tenant = body.tenant;
    if (apiKey) spec.apiKey = apiKey;
    const state: FleetTaskState = {
      task_id: id,
      message: null,
      progress: null,
      session_id: null,
      last_status: null,
      last_report_at: null,
      last_node_id: null,
      log_count: 0,
      created_by: createdBy,
      schedule_id: scheduleId,
    };
    await this.#state.putTaskState(state);
    try {
      const got = (await this.#engine.submit(spec)).id;
      if (got !== id) await this.#state.deleteTaskState(id);
      return got;
    } catch (err) {
      await this.#state.deleteTaskState(id);
      throw err;
    }
  }

  // ---- schedules --------------------------------------------------------------------------

  /** Re-arms active schedules after a restart. */
  async restoreSchedules(): Promise<void> {
    for (const s of await this.#state.listSchedules()) if (s.active) this.#arm(s);
  }

  #arm(schedule: ScheduleRecord): void {
    if (this.#closed || schedule.next_run_at === null) return;
    const prev = this.#timers.get(schedule.id);
    if (prev) this.#o.clock.clearTimeout(prev);
    const delay = Math.max(0, schedule.next_run_at - this.#o.clock.now());
    const handle = this.#o.clock.setTimeout(() => {
      this.#timers.delete(schedule.id);
      void this.#fire(schedule.id).catch((err) =>
        this.#o.logger.error(
          { err, schedule: schedule.id },
          "fleet: recurring task failed to submit",
        ),
      );
    }, delay);
    this.#timers.set(schedule.id, handle);
  }

  /** At an occurrence: submit the next one ahead, with `runAt` at its time. */
  async #fire(id: string): Promise<void> {
    await this.mutex.run(`schedule:${id}`, async () => {
      const s = await this.#state.getSchedule(id);
      if (!s?.active || this.#closed) return;
      const cron = new Cron(s.cron, {
        paused: true,
        ...(s.timezone ? { timezone: s.timezone } : {}),
      });
      const from = Math.max(this.#o.clock.now(), s.next_run_at ?? 0);
      const next = cron.nextRun(new Date(from))?.getTime() ?? null;
      if (next === null) {
        s.active = false;
        s.next_run_at = null;
        await this.#state.putSchedule(s);
        return;
      }
      const body = s.template as unknown as CreateTaskBody;
      const files = await this.#resolveFiles(body.files ?? []);
      s.last_task_id = await this.#submit(
        body,
        files,
        s.created_by ?? "schedule",
        s.id,
        next,
        s.api_key ?? null,
      );
      s.next_run_at = next;
      await this.#state.putSchedule(s);
      this.#arm(s);
    });
  }

  async stopSchedule(id: string): Promise<void> {
    const s = await this.#state.getSchedule(id);
    if (!s) return;
    s.active = false;
    await this.#state.putSchedule(s);
    const t = this.#timers.get(id);
    if (t) this.#o.clock.clearTimeout(t);
    this.#timers.delete(id);
  }

  close(): void {
    this.#closed = true;
    for (const t of this.#timers.values()) this.#o.clock.clearTimeout(t);
    this.#timers.clear();
  }

  // ---- views ------------------------------------------------------------------------------

  async viewById(id: string): Promise<Record<string, unknown>> {
    const task = this.deleted.has(id) ? undefined : await this.#engine.get(id);
    if (!task) throw new FleetHttpError(404, `task ${id} not found`);
    return this.view(task, await this.#state.getTaskState(id));
  }

  /** The JSON view of a task, in the fleet protocol's words (Flotilla's status in `state`). */
  view(task: TaskRecord, st?: FleetTaskState): Record<string, unknown> {
    const payload = (task.payload ?? {}) as FleetPayload;
    const fleet = (task.metadata?.fleet ?? {}) as Record<string, unknown>;
    const files = payload.files ?? [];
    const result = task.result;
    const output = result?.output;
    return {
      id: task.id,
      task_id: task.id,
      type: task.type,
      prompt: typeof payload.prompt === "string" ? payload.prompt : null,
      status: FLEET_STATUS[task.status] ?? task.status,
      state: task.status,
      priority: task.priority,
      target_node_id: fleet.target_node_id ?? task.target?.workerId ?? null,
      target_node_name: fleet.target_node_name ?? task.target?.name ?? null,
      target_tags: fleet.target_tags ?? task.target?.tags ?? null,
      timeout_seconds:
        fleet.timeout_seconds ?? (task.timeoutMs ? Math.ceil(task.timeoutMs / 1000) : null),
      files: files.map((f) => f.name),
      file_checksums: files.map((f) => f.checksum),
      // The holder of its lease now, or the node that finished it; none while it waits.
      assigned_node_id:
        task.lease?.holder ??
        (TERMINAL_STATUSES.has(task.status) ? (result?.workerId ?? task.workerId) : undefined) ??
        null,
      lease_expires_at: task.lease ? iso(task.lease.expiresAt) : null,
      attempts: task.attempt,
      result: typeof output === "string" ? output : (output ?? null),
      error_message: result?.error?.message ?? null,
      message: st?.message ?? null,
      progress: st?.progress ?? null,
      crush_session_id: st?.session_id ?? null,
      last_reported_status: st?.last_status ?? null,
      log_count: st?.log_count ?? 0,
      recurrence: fleet.recurrence ?? null,
      schedule_id: fleet.schedule_id ?? null,
      scheduled_for: iso(task.runAt),
      created_by: fleet.created_by ?? null,
      created_at: iso(task.createdAt),
      started_at: iso(result?.timings?.startedAt ?? task.lease?.acquiredAt),
      completed_at: iso(result?.timings?.finishedAt),
      updated_at: iso(task.updatedAt),
    };
  }

  /** The assignment a node receives for a claimed task. */
  assignment(task: TaskRecord, orchestratorUrl: string, leaseExpiresAt: number) {
    const payload = (task.payload ?? {}) as FleetPayload;
    const files = payload.files ?? [];
    const fleet = (task.metadata?.fleet ?? {}) as Record<string, unknown>;
    const timeout =
      typeof fleet.timeout_seconds === "number"
        ? fleet.timeout_seconds
        : task.timeoutMs
          ? Math.ceil(task.timeoutMs / 1000)
          : 3600;
    return {
      task_id: task.id,
      prompt:
        typeof payload.prompt === "string" ? payload.prompt : JSON.stringify(task.payload ?? null),
      orchestrator_url: orchestratorUrl,
      timeout_seconds: timeout,
      files: files.map((f) => f.name),
      file_checksums: files.map((f) => f.checksum),
      type: task.type,
      payload: task.payload ?? null,
      priority: task.priority,
      attempt: task.attempt,
      lease_expires_at: iso(leaseExpiresAt),
    };
  }

  // ---- files ------------------------------------------------------------------------------

  /** The stored name an upload gets, and the name nodes see (400 for a name that cannot be used). */
  #names(originalName: string): { filename: string; shown: string } {
    const shown = safeFileName(originalName);
    if (shown === undefined) {
      throw new FleetHttpError(
        400,
        `body.file: the file name ${JSON.stringify(originalName.slice(0, 100))} cannot be a file name on a node (empty, "." or ".."): rename it`,
      );
    }
    const clean = shown.replace(/[^\w.\- ]+/g, "_").slice(-120) || "file";
    return { filename: `${uuid().slice(0, 8)}_${clean}`, shown };
  }

  /**
   * Stores an uploaded file from a stream, chunk by chunk (1 MiB at a time in the store, or
   * straight to a file in `uploadDir`), hashing as it goes and enforcing `maxUploadBytes`
   * while it streams (413, and nothing kept). The answer is what `files` in a task refers to.
   */
  async uploadStream(
    originalName: string,
    source: AsyncIterable<Uint8Array>,
    contentType: string | null,
    by: string,
    tooLarge: () => boolean,
  ): Promise<FileRecord> {
    const { filename, shown } = this.#names(originalName);
    const hash = createHash("sha256");
    let size = 0;
    let chunks = 0;
    const toDisk = !!this.#o.uploadDir;
    let out: ReturnType<typeof createWriteStream> | undefined;
    if (toDisk) {
      await mkdir(this.#o.uploadDir!, { recursive: true });
      out = createWriteStream(join(this.#o.uploadDir!, filename));
    }
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    const flush = async () => {
      if (pendingBytes === 0) return;
      const block = Buffer.concat(pending, pendingBytes);
      pending = [];
      pendingBytes = 0;
      await this.#state.putFileChunk(filename, chunks++, block.toString("base64"));
    };
    const discard = async () => {
      if (out) {
        out.destroy();
        await rm(join(this.#o.uploadDir!, filename), { force: true });
      }
      for (let i = 0; i < chunks; i++) await this.#state.deleteFileChunk(filename, i);
    };
    try {
      for await (const piece of source) {
        const buf = Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
        size += buf.byteLength;
        if (size > this.#o.maxUploadBytes) {
          throw new FleetHttpError(413, `file larger than ${this.#o.maxUploadBytes} bytes`);
        }
        hash.update(buf);
        if (out) {
          if (!out.write(buf)) await once(out, "drain");
        } else {
          pending.push(Buffer.from(buf));
          pendingBytes += buf.byteLength;
          if (pendingBytes >= FILE_CHUNK_BYTES) await flush();
        }
      }
      if (tooLarge())
        throw new FleetHttpError(413, `file larger than ${this.#o.maxUploadBytes} bytes`);
      if (out) {
        out.end();
        await once(out, "close");
      } else await flush();
    } catch (err) {
      await discard();
      throw err;
    }
    const rec: FileRecord = {
      filename,
      original_name: shown,
      checksum: hash.digest("hex"),
      size,
      content_type: contentType,
      uploaded_at: this.#o.clock.now(),
      uploaded_by: by,
      location: toDisk ? "disk" : "store",
    };
    if (!toDisk) rec.chunks = chunks;
    await this.#state.putFile(rec);
    return rec;
  }

  /** The bytes of a stored file as a stream read chunk by chunk, or undefined when they are gone. */
  async #stream(rec: FileRecord): Promise<ReadableStream<Uint8Array> | undefined> {
    if (rec.location === "disk") {
      if (!this.#o.uploadDir) return undefined;
      const path = join(this.#o.uploadDir, baseName(rec.filename));
      try {
        await stat(path);
      } catch {
        return undefined;
      }
      return Readable.toWeb(createReadStream(path)) as ReadableStream<Uint8Array>;
    }
    if (rec.chunks === undefined) {
      // An upload stored in one piece (before chunked storage).
      const b64 = await this.#state.getFileData(rec.filename);
      if (b64 === undefined) return undefined;
      const bytes = Buffer.from(b64, "base64");
      return new ReadableStream({
        start(c) {
          c.enqueue(new Uint8Array(bytes));
          c.close();
        },
      });
    }
    if (rec.chunks > 0 && (await this.#state.getFileChunk(rec.filename, 0)) === undefined) {
      return undefined;
    }
    const state = this.#state;
    let i = 0;
    const total = rec.chunks;
    return new ReadableStream<Uint8Array>({
      async pull(c) {
        if (i >= total) {
          c.close();
          return;
        }
        const b64 = await state.getFileChunk(rec.filename, i++);
        if (b64 === undefined) {
          c.error(new Error(`chunk ${i - 1} of ${rec.filename} is missing`));
          return;
        }
        c.enqueue(new Uint8Array(Buffer.from(b64, "base64")));
      },
    });
  }

  /**
   * `GET /files/{name}`: the bytes of a file of one of the tasks a node holds (`held`), by basename.
   * 403 when the file exists but belongs to no task this node holds; 404 when unknown.
   */
  async fileFor(
    held: readonly TaskRecord[],
    rawName: string,
  ): Promise<{ rec: TaskFileRef; size: number; body: ReadableStream<Uint8Array> }> {
    const name = baseName(rawName);
    if (!name || name === "." || name === "..") throw new FleetHttpError(404, "file not found");
    for (const task of held) {
      const ref = ((task.payload ?? {}) as FleetPayload).files?.find((f) => f.name === name);
      if (!ref) continue;
      const rec = await this.#state.getFile(ref.filename);
      const body = rec ? await this.#stream(rec) : undefined;
      if (!rec || !body) throw new FleetHttpError(404, `file "${name}" is no longer stored`);
      return { rec: ref, size: rec.size, body };
    }
    if (await this.#state.getFile(name)) {
      throw new FleetHttpError(403, `file "${name}" belongs to no task this node holds`);
    }
    for (const { value } of await this.#state.store.kvList<FileRecord>("fleet.files")) {
      if (value.original_name === name) {
        throw new FleetHttpError(403, `file "${name}" belongs to no task this node holds`);
      }
    }
    throw new FleetHttpError(404, `file "${name}" not found`);
  }
}
