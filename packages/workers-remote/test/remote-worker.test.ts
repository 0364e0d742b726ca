import type { AddressInfo } from "node:net";
import { inspect } from "node:util";
import { FunctionWorker, Orchestrator, UnrecoverableError } from "@flotilla/core";
import { createFlotillaApp } from "@flotilla/http-adapter";
import { serve } from "@hono/node-server";
import { afterEach, describe, expect, it } from "vitest";
import { RemoteWorker } from "../src/index.js";

const TOKEN = "remote-secret-token-42";
const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

/** A real Flotilla server on loopback whose workers run `remote_compute` tasks. */
async function remoteServer(): Promise<string> {
  const orchestrator = new Orchestrator();
  await orchestrator.register(
    new FunctionWorker({
      id: "remote-fn",
      taskTypes: ["remote_compute"],
      fn: async (payload: { n?: number; fail?: string }) => {
        if (payload.fail) throw new UnrecoverableError(payload.fail);
        return { squared: (payload.n ?? 0) ** 2 };
      },
    }),
  );
  await orchestrator.start();
  const app = createFlotillaApp({ orchestrator, auth: { keys: [TOKEN] } });
  const server = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" });
  await new Promise<void>((r) => server.once("listening", () => r()));
  cleanups.push(async () => {
    const closed = new Promise<void>((r) => server.close(() => r()));
    (server as { closeAllConnections?: () => void }).closeAllConnections?.();
    await closed;
    await orchestrator.stop({ mode: "abort" });
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/api/v2/orchestrator`;
}

async function local(worker: RemoteWorker) {
  const orchestrator = new Orchestrator();
  await orchestrator.register(worker);
  await orchestrator.start();
  cleanups.push(() => orchestrator.stop({ mode: "abort" }));
  return orchestrator;
}

describe("RemoteWorker (push mode) against a real Flotilla server", () => {
  it("runs a task remotely and brings back its output; health is free", async () => {
    const url = await remoteServer();
    const worker = new RemoteWorker({ remoteUrl: url, authToken: TOKEN, id: "gpu-box" });
    expect(await worker.healthCheck(AbortSignal.timeout(5_000))).toEqual({ status: "healthy" });
    const orchestrator = await local(worker);
    const handle = await orchestrator.submit({ type: "remote_compute", payload: { n: 7 } });
    const result = await handle.result();
    expect(result).toMatchObject({
      status: "succeeded",
      output: { squared: 49 },
      workerId: "gpu-box",
    });
  });

  it("fails clearly on a remote failure and on a bad token, never showing the token", async () => {
    const url = await remoteServer();
    const goodWorker = new RemoteWorker({ url, authToken: TOKEN, id: "good" });
    const good = await local(goodWorker);
    const failed = await (
      await good.submit({ type: "remote_compute", payload: { fail: "bad frame 12" } })
    ).result();
    expect(failed.status).toBe("failed");
    expect(failed.error?.message).toContain("bad frame 12");

    const wrong = new RemoteWorker({ url, authToken: "not-the-token", id: "wrong" });
    const orchestrator = await local(wrong);
    const denied = await (
      await orchestrator.submit({
        type: "remote_compute",
        payload: { n: 1 },
        retry: { maxAttempts: 3 },
      })
    ).result();
    expect(denied.status).toBe("failed");
    expect(denied.attempts).toBe(1); // a 401 is not retried
    expect(denied.error?.message).toMatch(/401/);
    for (const shown of [JSON.stringify(denied), JSON.stringify(wrong), inspect(wrong)]) {
      expect(shown).not.toContain("not-the-token");
    }
    // The health check uses the token too: a refused token shows unhealthy before any task.
    expect(await wrong.healthCheck(AbortSignal.timeout(5_000))).toEqual({
      status: "unhealthy",
      message: "the remote refused the token (401)",
    });
    expect(await goodWorker.healthCheck(AbortSignal.timeout(5_000))).toEqual({ status: "healthy" });
  });

  it("reports an unreachable remote as unhealthy and its tasks as retryable failures", async () => {
    const worker = new RemoteWorker({ url: "http://127.0.0.1:9/api", id: "gone" });
    expect((await worker.healthCheck(AbortSignal.timeout(5_000))).status).toBe("unhealthy");
    const err = await worker
      .execute(
        {
          id: "t",
          type: "remote_compute",
          payload: {},
          priority: 20,
          attempt: 1,
          metadata: {},
          dependencies: {},
          inputs: {},
        },
        {
          signal: AbortSignal.timeout(5_000),
          progress() {},
          reportUsage() {},
          logger: {
            trace() {},
            debug() {},
            info() {},
            warn() {},
            error() {},
            child: () => ({}) as never,
          },
          clock: { now: Date.now, setTimeout, clearTimeout } as never,
        },
      )
      .catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe("WORKER_ERROR");
    expect((err as { retryable?: boolean }).retryable).toBe(true);
    expect(() => new RemoteWorker({ url: "nope" })).toThrow(/url/);
  });
});
