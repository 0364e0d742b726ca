import { afterEach, describe, expect, it } from "vitest";
import { type FleetUnderTest, REG_TOKEN, removeDir, startFleet } from "./harness.js";
import { httpRequest } from "./victoria-runner.js";

let fleets: FleetUnderTest[] = [];
afterEach(async () => {
  for (const f of fleets) {
    await f.stop().catch(() => undefined);
    await removeDir(f.dir);
  }
  fleets = [];
});

async function fleet(opts: Parameters<typeof startFleet>[0] = {}) {
  const f = await startFleet(opts);
  fleets.push(f);
  return f;
}

/** What two proxies (an inner one at 10.9.9.9, then ours on loopback) serving the fleet under https://ops.example.com/fl add. */
const proxied = (client: string) => ({
  "X-Forwarded-For": `${client}, 10.9.9.9`,
  "X-Forwarded-Proto": "https",
  "X-Forwarded-Host": "ops.example.com",
  "X-Forwarded-Prefix": "/fl",
});

async function registerAndPoll(f: FleetUnderTest, headers: Record<string, string>) {
  const reg = await httpRequest(
    "POST",
    `${f.url}/register`,
    { ...headers, "Content-Type": "application/json", "X-Registration-Token": REG_TOKEN },
    JSON.stringify({ hostname: "h", name: `n-${Math.random()}`, os_type: "linux" }),
  );
  expect(reg.status).toBe(200);
  await f.admin("POST", "/tasks", { prompt: "p" });
  const poll = await httpRequest("GET", `${f.url}/tasks/pending`, {
    ...headers,
    "X-API-Key": reg.json.api_key as string,
  });
  expect(poll.status).toBe(200);
  return poll.json as { orchestrator_url: string };
}

describe("behind a reverse proxy", () => {
  it("a trusted proxy's forwarded scheme, host and prefix make the URL nodes get; its client address counts", async () => {
    const f = await fleet({
      fleet: {
        trustProxy: ["loopback", "10.0.0.0/8"],
        authThrottle: { freeFailures: 0, baseDelayMs: 0, lockAfter: 2 },
      },
    });
    const task = await registerAndPoll(f, proxied("203.0.113.9"));
    expect(task.orchestrator_url).toBe("https://ops.example.com/fl");
    // Wrong keys are counted per forwarded client, not per proxy.
    const bad = (client: string) =>
      httpRequest("GET", `${f.url}/nodes`, { ...proxied(client), "X-API-Key": "wrong" });
    expect((await bad("203.0.113.1")).status).toBe(401);
    expect((await bad("203.0.113.1")).status).toBe(401);
    expect((await bad("203.0.113.1")).status).toBe(429);
    expect((await bad("203.0.113.2")).status).toBe(401);
    const audit = await f.admin("GET", "/keys/audit?limit=100");
    const sources = (audit.json.entries as Array<{ action: string; source: string | null }>)
      .filter((e) => e.action === "denied")
      .map((e) => e.source);
    expect(new Set(sources)).toEqual(new Set(["203.0.113.1", "203.0.113.2"]));
  });

  it("forwarded headers from a peer that is not trusted are ignored", async () => {
    const f = await fleet();
    const task = await registerAndPoll(f, proxied("203.0.113.9"));
    expect(task.orchestrator_url).toBe(f.url);
    const bad = await httpRequest("GET", `${f.url}/nodes`, {
      ...proxied("203.0.113.1"),
      "X-API-Key": "wrong",
    });
    expect(bad.status).toBe(401);
    const audit = await f.admin("GET", "/keys/audit?limit=10");
    const denied = (audit.json.entries as Array<{ action: string; source: string | null }>).find(
      (e) => e.action === "denied",
    );
    expect(denied?.source).toBe("127.0.0.1");
  });

  it("a public URL is what nodes get, whatever the request says", async () => {
    const f = await fleet({ fleet: { publicUrl: "https://fleet.example.com/base/" } });
    const task = await registerAndPoll(f, {});
    expect(task.orchestrator_url).toBe("https://fleet.example.com/base");
  });
});
