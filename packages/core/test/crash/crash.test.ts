import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { SqliteStore } from "../../src/sqlite/index.js";
import { TERMINAL_STATUSES } from "../../src/task/schema.js";

/**
 * The durability promise under SIGKILL: a child process runs the orchestrator on a
 * SqliteStore under load; the parent kills it at random moments (during start-up and
 * recovery, during submission, while tasks run), restarts it, and finally checks that every
 * acknowledged task ended exactly once, none was lost, and no task ran twice at once.
 */

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "../../../..");
const childScript = join(here, "child.ts");

const TOTAL = Number(process.env.FLOTILLA_CRASH_TASKS ?? 300);
const KILLS = Number(process.env.FLOTILLA_CRASH_KILLS ?? 20);
const SEED = Number(process.env.FLOTILLA_CRASH_SEED ?? Date.now() % 1_000_000);

/** mulberry32: a small seeded generator, so a failing run can be replayed with its seed. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Life {
  pid: number;
  startedAt: number;
  endedAt: number;
  killed: boolean;
  stdout: string;
  stderr: string;
}

const children = new Set<ChildProcess>();
afterAll(() => {
  for (const c of children) c.kill("SIGKILL");
});

function launch(files: { db: string; exec: string; ack: string }) {
  const startedAt = Date.now();
  const child = spawn(
    process.execPath,
    ["--import", "tsx", childScript, files.db, files.exec, files.ack, String(TOTAL)],
    { cwd: root, stdio: ["ignore", "pipe", "pipe", "ipc"] },
  );
  children.add(child);
  const life: Life = {
    pid: child.pid ?? -1,
    startedAt,
    endedAt: 0,
    killed: false,
    stdout: "",
    stderr: "",
  };
  child.stdout?.on("data", (b: Buffer) => {
    life.stdout += b.toString();
  });
  child.stderr?.on("data", (b: Buffer) => {
    life.stderr += b.toString();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on("exit", (code, signal) => {
      life.endedAt = Date.now();
      children.delete(child);
      resolve({ code, signal });
    });
  });
  const until = (text: string, timeoutMs: number) =>
    new Promise<boolean>((resolve) => {
      const check = () => {
        if (life.stdout.includes(text)) {
          clearInterval(poll);
          resolve(true);
        } else if (life.endedAt || Date.now() - startedAt > timeoutMs) {
          clearInterval(poll);
          resolve(life.stdout.includes(text));
        }
      };
      const poll = setInterval(check, 2);
      check();
    });
  return { child, life, exited, until };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Remote leases: longer than the longest remote run, so only a dead node's lease expires. */
const LEASE_MS = 4_000;

interface RemoteRun {
  id: string;
  attempt: number;
  holder: string;
  from: number;
  expiresAt: number;
  /** When the orchestrator answered the completion. */
  to: number | undefined;
  outcome: string | undefined;
}

interface Reply {
  reqId: number;
  ok: boolean;
  code?: string;
  claim?: {
    taskId: string;
    attempt: number;
    leaseId: string;
    expiresAt: number;
    payload: { n: number };
  } | null;
}

/**
 * A remote node living in the test process: its slots claim `remote` tasks from whichever
 * life of the child is current, run them here (so a run outlives the orchestrator being
 * killed), and deliver the completion, to the next life if need be.
 */
class RemoteNode {
  readonly runs: RemoteRun[] = [];
  #current: ChildProcess | undefined;
  #pending = new Map<
    number,
    { child: ChildProcess; resolve: (r: Reply) => void; reject: (e: Error) => void }
  >();
  #nextReq = 1;
  #stopped = false;
  #slots: Promise<void>[] = [];

  constructor(readonly random: () => number) {}

  attach(child: ChildProcess): void {
    this.#current = child;
    child.on("message", (m: Reply) => {
      const p = this.#pending.get(m.reqId);
      if (!p) return;
      this.#pending.delete(m.reqId);
      p.resolve(m);
    });
  }

  detach(child: ChildProcess): void {
    if (this.#current === child) this.#current = undefined;
    for (const [id, p] of this.#pending) {
      if (p.child !== child) continue;
      this.#pending.delete(id);
      p.reject(new Error("the orchestrator died before answering"));
    }
  }

  #request(body: Record<string, unknown>): Promise<Reply> {
    const child = this.#current;
    if (!child?.connected) return Promise.reject(new Error("no orchestrator"));
    const reqId = this.#nextReq++;
    return new Promise<Reply>((resolve, reject) => {
      this.#pending.set(reqId, { child, resolve, reject });
      const failed = (err: Error) => {
        this.#pending.delete(reqId);
        reject(err);
      };
      try {
        // A child killed between the `connected` check and the write fails the write
        // (EPIPE) asynchronously: the callback takes it, as a failed request.
        child.send({ ...body, reqId }, (err) => {
          if (err) failed(err);
        });
      } catch (err) {
        failed(err as Error);
      }
    });
  }

  start(slots: number): void {
    for (let i = 0; i < slots; i++) this.#slots.push(this.#slot(`node-${i}`));
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await Promise.all(this.#slots);
  }

  async #slot(holderId: string): Promise<void> {
    while (!this.#stopped) {
      let reply: Reply;
      try {
        reply = await this.#request({ op: "claim", holderId, leaseMs: LEASE_MS });
      } catch {
        await sleep(20);
        continue;
      }
      const claim = reply.ok ? reply.claim : undefined;
      if (!claim) {
        await sleep(15);
        continue;
      }
      const run: RemoteRun = {
        id: claim.taskId,
        attempt: claim.attempt,
        holder: holderId,
        from: Date.now(),
        expiresAt: claim.expiresAt,
        to: undefined,
        outcome: undefined,
      };
      this.runs.push(run);
      // most runs are short; one in five spans a restart of the orchestrator
      const long = this.random() < 0.2;
      await sleep(
        long ? 600 + Math.floor(this.random() * 1200) : 20 + Math.floor(this.random() * 150),
      );
      while (!this.#stopped) {
        try {
          const r = await this.#request({
            op: "complete",
            taskId: claim.taskId,
            leaseId: claim.leaseId,
            output: { n: claim.payload.n, remote: holderId },
          });
          run.to = Date.now();
          run.outcome = r.ok ? "accepted" : `refused ${r.code}`;
          break;
        } catch {
          await sleep(20);
        }
      }
    }
  }
}

describe("crash safety under SIGKILL", () => {
  it(`every acknowledged task ends exactly once across ${KILLS} kills (seed ${SEED})`, async () => {
    const dir = mkdtempSync(join(tmpdir(), "flotilla-crash-"));
    const files = {
      db: join(dir, "flotilla.db"),
      exec: join(dir, "exec.log"),
      ack: join(dir, "ack.log"),
    };
    const random = seeded(SEED);
    const node = new RemoteNode(seeded(SEED + 1));
    node.start(4);
    const lives: Life[] = [];
    const startedAll = Date.now();
    let killedBeforeReady = 0;
    let killedWhileSubmitting = 0;

    for (let k = 0; k < KILLS; k++) {
      const run = launch(files);
      lives.push(run.life);
      if (random() < 0.2) {
        // somewhere in start-up: opening the file, recovery, the first dispatches
        await sleep(Math.floor(random() * 400));
        if (!run.life.stdout.includes("ready")) killedBeforeReady++;
        else node.attach(run.child);
      } else {
        expect(await run.until("ready", 15_000), run.life.stderr).toBe(true);
        node.attach(run.child);
        await sleep(Math.floor(random() * 350));
        if (!run.life.stdout.includes("submitted")) killedWhileSubmitting++;
      }
      run.life.killed = run.child.kill("SIGKILL");
      const { signal, code } = await run.exited;
      node.detach(run.child);
      if (signal !== "SIGKILL") {
        // it finished on its own before the kill landed: it must have exited cleanly
        expect(code, run.life.stderr).toBe(0);
        run.life.killed = false;
      }
    }

    const last = launch(files);
    lives.push(last.life);
    if (await last.until("ready", 15_000)) node.attach(last.child);
    const final = await Promise.race([
      last.exited,
      sleep(45_000).then(() => {
        last.child.kill("SIGKILL");
        return { code: null, signal: "timeout" as const };
      }),
    ]);
    expect(
      final.code,
      `the last run did not finish all work (${JSON.stringify(final)}): ${last.life.stderr}`,
    ).toBe(0);
    expect(last.life.stdout).toContain("done");
    node.detach(last.child);
    await node.stop();
    const elapsed = Date.now() - startedAll;

    // ---- what the parent knows was acknowledged, what the store says, what ran
    const acked = readFileSync(files.ack, "utf8").split("\n").filter(Boolean);
    const ackedSet = new Set(acked);
    expect(ackedSet.size).toBe(TOTAL);

    const store = new SqliteStore({ path: files.db });
    await store.open();
    const tasks = await store.listTasks({ newestFirst: false });
    const events = await store.listEvents();
    await store.close();

    // none lost, none extra, each in exactly one terminal state
    expect(tasks.map((t) => t.id).sort()).toEqual([...ackedSet].sort());
    for (const t of tasks) {
      expect(TERMINAL_STATUSES.has(t.status), `${t.id} is ${t.status}`).toBe(true);
      expect(t.status, `${t.id}: ${JSON.stringify(t.result?.error)}`).toBe("succeeded");
      expect(t.result?.output).toMatchObject({ n: Number(t.id.slice(1)) });
    }

    // none completed twice: at most one terminal event per task in the history, and at most
    // one completion observed by any process (completions are announced after commit)
    const terminalEvents = new Map<string, number>();
    for (const e of events) {
      if (e.taskId && TERMINAL_STATUSES.has(e.type.replace("task:", "") as never)) {
        terminalEvents.set(e.taskId, (terminalEvents.get(e.taskId) ?? 0) + 1);
      }
    }
    for (const [id, n] of terminalEvents) expect(n, `terminal events of ${id}`).toBe(1);

    const lines = existsSync(files.exec)
      ? readFileSync(files.exec, "utf8").split("\n").filter(Boolean)
      : [];
    const completions = new Map<string, number>();
    interface Run {
      id: string;
      attempt: number;
      pid: number;
      from: number;
      to: number | undefined;
    }
    const runs: Run[] = [];
    const open = new Map<string, Run>();
    for (const line of lines) {
      const [what, id, attempt, pid, at] = line.split(" ");
      const key = `${id}#${attempt}#${pid}`;
      if (what === "completed") {
        completions.set(id!, (completions.get(id!) ?? 0) + 1);
      } else if (what === "start") {
        expect(open.has(key), `${key} started twice`).toBe(false);
        const run: Run = {
          id: id!,
          attempt: Number(attempt),
          pid: Number(pid),
          from: Number(at),
          to: undefined,
        };
        open.set(key, run);
        runs.push(run);
      } else if (what === "end") {
        const run = open.get(key);
        expect(run, `${key} ended without a start`).toBeDefined();
        run!.to = Number(at);
        open.delete(key);
      }
    }
    for (const [id, n] of completions) expect(n, `completions of ${id}`).toBe(1);

    // none run twice while its lease was live: runs of one task never overlap in time; a
    // run cut short by a kill lasted until its process died
    const deathOf = new Map(lives.map((l) => [l.pid, l.endedAt]));
    const byTask = new Map<string, Run[]>();
    for (const run of runs) {
      run.to ??= deathOf.get(run.pid) ?? Number.POSITIVE_INFINITY;
      const list = byTask.get(run.id) ?? [];
      list.push(run);
      byTask.set(run.id, list);
    }
    let reruns = 0;
    for (const [id, list] of byTask) {
      list.sort((a, b) => a.from - b.from);
      for (let i = 1; i < list.length; i++) {
        const prev = list[i - 1]!;
        const next = list[i]!;
        expect(
          next.from >= prev.to!,
          `${id}: attempt ${next.attempt} (pid ${next.pid}) started while attempt ${prev.attempt} (pid ${prev.pid}) was running`,
        ).toBe(true);
        expect(next.attempt, `${id}: attempts increase`).toBeGreaterThan(prev.attempt);
        reruns++;
      }
    }
    // remote runs: a task is never claimed again while an earlier claim's lease is live
    // (live until its completion was answered, or until the lease expired)
    const remoteByTask = new Map<string, RemoteRun[]>();
    for (const run of node.runs) {
      const list = remoteByTask.get(run.id) ?? [];
      list.push(run);
      remoteByTask.set(run.id, list);
    }
    let remoteReclaims = 0;
    for (const [id, list] of remoteByTask) {
      expect(byTask.has(id), `${id} ran both locally and remotely`).toBe(false);
      list.sort((a, b) => a.from - b.from);
      for (let i = 1; i < list.length; i++) {
        const prev = list[i - 1]!;
        const next = list[i]!;
        const leaseEnd = Math.min(prev.to ?? Number.POSITIVE_INFINITY, prev.expiresAt);
        expect(
          next.from >= leaseEnd,
          `${id}: claimed by ${next.holder} (attempt ${next.attempt}) while ${prev.holder}'s lease (attempt ${prev.attempt}) was live`,
        ).toBe(true);
        expect(next.attempt).toBeGreaterThan(prev.attempt);
        remoteReclaims++;
      }
      const accepted = list.filter((r) => r.outcome === "accepted");
      expect(accepted.length, `${id}: accepted completions`).toBeLessThanOrEqual(1);
      const stored = tasks.find((t) => t.id === id)!;
      if (accepted[0]) expect(stored.result?.attempts).toBe(accepted[0].attempt);
      expect(stored.result?.output).toMatchObject({ remote: expect.any(String) });
    }
    const refusedCodes = node.runs
      .filter((r) => r.outcome?.startsWith("refused"))
      .map((r) => r.outcome!.slice("refused ".length));
    const refused = `${refusedCodes.length}${refusedCodes.length ? ` (${[...new Set(refusedCodes)].join(", ")})` : ""}`;

    // every task ran at least once
    for (const t of tasks) {
      expect(byTask.has(t.id) || remoteByTask.has(t.id), `${t.id} never ran`).toBe(true);
    }

    // The kills really happened, and some cut running work. (Once all work is done, a life
    // may finish before its kill lands: how many do depends on the machine's speed.)
    const killed = lives.filter((l) => l.killed).length;
    expect(killed).toBeGreaterThanOrEqual(KILLS / 2);
    expect(reruns, "no kill interrupted a running task").toBeGreaterThan(0);
    console.log(
      `crash test (seed ${SEED}): ${TOTAL} tasks, ${killed} SIGKILLs (${killedBeforeReady} during start-up, ${killedWhileSubmitting} during submission), ${runs.length} local executions (${reruns} re-runs after a kill), ${node.runs.length} remote claims (${remoteReclaims} re-claims after a kill or an expired lease, ${refused} completions refused), ${elapsed} ms`,
    );
    rmSync(dir, { recursive: true, force: true });
  }, 90_000);
});
