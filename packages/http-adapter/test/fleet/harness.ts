import { mkdtemp, rm } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Clock, type EngineApi, Orchestrator, type Store } from "@flotilla/core";
import { SqliteStore } from "@flotilla/core/sqlite";
import { FakeClock } from "@flotilla/testing";
import { serve } from "@hono/node-server";
import { Hono } from "hono";
import {
  createFleetRoutes,
  type FleetApp,
  type FleetRoutesOptions,
} from "../../src/fleet/index.js";
import { httpRequest, type Json } from "./victoria-runner.js";

export const ADMIN_KEY = "admin-test-key-0123456789";
export const REG_TOKEN = "reg-token-abcdef";

export interface FleetUnderTest {
  /** Base URL the nodes use (with the prefix, if any). */
  url: string;
  clock: FakeClock;
  store: Store;
  orchestrator: Orchestrator;
  /** The fleet app itself (for its lifecycle methods). */
  fleet: FleetApp;
  dir: string;
  dbPath: string;
  admin(
    method: string,
    path: string,
    body?: unknown,
    key?: string,
  ): Promise<{ status: number; json: Json; text: string }>;
  /** Stops server, fleet, orchestrator and store (keeps the files). */
  stop(): Promise<void>;
}

export interface StartOptions {
  dir?: string;
  clock?: FakeClock;
  prefix?: string;
  fleet?: Partial<FleetRoutesOptions>;
  /** What the routes see of the engine (default: the orchestrator itself). */
  engine?: (orchestrator: Orchestrator) => EngineApi;
}

export async function makeOrchestrator(store: Store, clock: Clock, leaseMs: number) {
  const orchestrator = new Orchestrator({ store, clock, leaseMs });
  await orchestrator.start();
  return orchestrator;
}

export async function startFleet(opts: StartOptions = {}): Promise<FleetUnderTest> {
  const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), "fleet-")));
  const clock = opts.clock ?? new FakeClock({ now: Date.UTC(2026, 0, 5, 9, 0, 0) });
  const dbPath = join(dir, "flotilla.db");
  const store = new SqliteStore({ path: dbPath, clock });
  await store.open();
  const leaseMs = opts.fleet?.leaseMs ?? 60_000;
  const orchestrator = await makeOrchestrator(store, clock, leaseMs);
  const fleet = createFleetRoutes({
    orchestrator: opts.engine?.(orchestrator) ?? orchestrator,
    store,
    clock,
    registrationToken: REG_TOKEN,
    adminKeys: [ADMIN_KEY],
    leaseMs,
    nodeTimeoutMs: 30_000,
    ...opts.fleet,
  });
  await fleet.ready;
  let fetchFn = fleet.fetch;
  if (opts.prefix) {
    const root = new Hono();
    root.route(opts.prefix, fleet);
    fetchFn = root.fetch;
  }
  const server = serve({ fetch: fetchFn, port: 0, hostname: "127.0.0.1" });
  await new Promise<void>((r) => server.once("listening", () => r()));
  const port = (server.address() as AddressInfo).port;
  const url = `http://127.0.0.1:${port}${opts.prefix ?? ""}`;
  return {
    url,
    clock,
    store,
    orchestrator,
    fleet,
    dir,
    dbPath,
    async admin(method, path, body, key = ADMIN_KEY) {
      const headers: Record<string, string> = { "X-API-Key": key };
      let payload: string | undefined;
      if (body !== undefined) {
        headers["Content-Type"] = "application/json";
        payload = JSON.stringify(body);
      }
      const res = await httpRequest(method, `${url}${path}`, headers, payload);
      return { status: res.status, json: res.json as Json, text: res.text };
    },
    async stop() {
      const closed = new Promise<void>((r) => server.close(() => r()));
      (server as { closeAllConnections?: () => void }).closeAllConnections?.();
      await closed;
      await fleet.close();
      await orchestrator.stop();
      await store.close();
    },
  };
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

/** Uploads a file with multipart/form-data as an operator would. */
export async function upload(
  url: string,
  name: string,
  content: Buffer | string,
  key = ADMIN_KEY,
): Promise<{ status: number; json: Json }> {
  const boundary = "----fleetboundary7MA4YWxkTrZu0gW";
  const body = Buffer.concat([
    Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${name}"\r\nContent-Type: application/octet-stream\r\n\r\n`,
    ),
    Buffer.isBuffer(content) ? content : Buffer.from(content),
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
  const res = await httpRequest(
    "POST",
    `${url}/upload`,
    { "X-API-Key": key, "Content-Type": `multipart/form-data; boundary=${boundary}` },
    body,
  );
  return { status: res.status, json: res.json as Json };
}
