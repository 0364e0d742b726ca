import { describe, expect, it } from "vitest";
import { WarmPool } from "../src/warm-pool.js";

function pool(opts: { size?: number; maxProfiles?: number; fail?: Set<string> } = {}) {
  let now = 0;
  let seq = 0;
  const made: string[] = [];
  const destroyed: string[] = [];
  const errors: string[] = [];
  const p = new WarmPool<string, string>({
    size: opts.size ?? 2,
    maxProfiles: opts.maxProfiles ?? 4,
    create: async (profile) => {
      await Promise.resolve();
      if (opts.fail?.has(profile)) throw new Error(`cannot make ${profile}`);
      const item = `${profile}#${++seq}`;
      made.push(item);
      return item;
    },
    destroy: async (item) => {
      destroyed.push(item);
    },
    onError: (err) => errors.push((err as Error).message),
    now: () => now,
    retryAfterMs: 1000,
  });
  const settle = () => new Promise((r) => setTimeout(r, 0));
  return { p, made, destroyed, errors, settle, tick: (ms: number) => (now += ms) };
}

describe("WarmPool", () => {
  it("fills a profile up to its size and hands each item out once, refilling behind", async () => {
    const { p, made, settle } = pool();
    p.warm("a", "a");
    await settle();
    expect(p.idle("a")).toBe(2);
    const first = p.take("a", "a");
    const second = p.take("a", "a");
    expect(first).toBe("a#1");
    expect(second).toBe("a#2");
    await settle();
    expect(p.idle("a")).toBe(2);
    expect(made).toEqual(["a#1", "a#2", "a#3", "a#4"]);
    expect(p.take("a", "a")).toBe("a#3");
  });

  it("returns nothing for a profile not yet warm, and warms it for the next task", async () => {
    const { p, settle } = pool({ size: 1 });
    expect(p.take("b", "b")).toBeUndefined();
    await settle();
    expect(p.take("b", "b")).toBe("b#1");
  });

  it("drops the least recently used profile beyond maxProfiles, destroying its items", async () => {
    const { p, destroyed, tick, settle } = pool({ size: 1, maxProfiles: 2 });
    p.warm("a", "a");
    tick(1);
    p.warm("b", "b");
    await settle();
    tick(1);
    p.take("a", "a"); // a is now the more recent
    await settle();
    tick(1);
    p.warm("c", "c");
    await settle();
    expect(destroyed).toEqual(["b#2"]);
    expect(p.idle("b")).toBe(0);
    expect(p.idle("c")).toBe(1);
  });

  it("pauses a profile whose items cannot be made, and retries later", async () => {
    const fail = new Set(["x"]);
    const { p, errors, tick, settle } = pool({ fail });
    p.warm("x", "x");
    await settle();
    expect(errors).toEqual(["cannot make x"]);
    p.take("x", "x");
    await settle();
    expect(errors).toHaveLength(1); // within the pause: not tried again
    fail.clear();
    tick(1000);
    p.take("x", "x");
    await settle();
    expect(p.idle("x")).toBe(2);
  });

  it("close() destroys idle items and items still being made, and takes nothing after", async () => {
    const { p, destroyed, settle } = pool({ size: 3 });
    p.warm("a", "a");
    await Promise.resolve();
    await p.close();
    await settle();
    expect(p.idle()).toBe(0);
    expect(p.take("a", "a")).toBeUndefined();
    expect(destroyed.length).toBeGreaterThanOrEqual(1);
    expect(p.closed).toBe(true);
  });
});
