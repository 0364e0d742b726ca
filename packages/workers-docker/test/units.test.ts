import { FlotillaError } from "@flotilla/core";
import { describe, expect, it } from "vitest";
import { DockerWorker } from "../src/index.js";
import { CappedBuffer, Demuxer } from "../src/io.js";
import { imageAllowed } from "../src/options.js";

function frame(stream: 1 | 2, text: string): Buffer {
  const body = Buffer.from(text);
  const head = Buffer.alloc(8);
  head[0] = stream;
  head.writeUInt32BE(body.length, 4);
  return Buffer.concat([head, body]);
}

describe("Demuxer", () => {
  it("splits multiplexed frames, also when a frame spans chunks", () => {
    const got: [number, string][] = [];
    const d = new Demuxer((s, data) => got.push([s, data.toString()]));
    const all = Buffer.concat([frame(1, "hello "), frame(2, "warn"), frame(1, "world")]);
    for (let i = 0; i < all.length; i += 5) d.push(all.subarray(i, i + 5));
    expect(got).toEqual([
      [1, "hello "],
      [2, "warn"],
      [1, "world"],
    ]);
  });
});

describe("CappedBuffer", () => {
  it("keeps up to the cap, counts the rest and marks the text", () => {
    const b = new CappedBuffer(4);
    expect(b.push(Buffer.from("abc")).toString()).toBe("abc");
    expect(b.push(Buffer.from("defg")).toString()).toBe("d");
    expect(b.push(Buffer.from("hij")).length).toBe(0);
    expect(b.full).toBe(true);
    expect(b.truncated).toBe(true);
    expect(b.totalBytes).toBe(10);
    expect(b.text()).toBe("abcd\n[output truncated: 6 of 10 bytes dropped]");
  });
  it("is not truncated at exactly the cap", () => {
    const b = new CappedBuffer(3);
    b.push(Buffer.from("abc"));
    expect(b.truncated).toBe(false);
    expect(b.text()).toBe("abc");
  });
});

describe("imageAllowed", () => {
  it("matches exact names and prefixes ending in *", () => {
    expect(imageAllowed("python:3.12", ["python:3.12"])).toBe(true);
    expect(imageAllowed("python:3.11", ["python:3.12"])).toBe(false);
    expect(imageAllowed("ghcr.io/acme/tool:1", ["ghcr.io/acme/*"])).toBe(true);
    expect(imageAllowed("ghcr.io/other/tool:1", ["ghcr.io/acme/*"])).toBe(false);
    expect(imageAllowed("anything", ["*"])).toBe(true);
  });
});

describe("DockerWorker options", () => {
  it("names each wrong option", () => {
    const bad = () =>
      new DockerWorker({
        maxConcurrency: 0,
        host: "ftp://x",
        ceilings: { memoryMb: -1 },
      } as never);
    expect(bad).toThrow(FlotillaError);
    expect(bad).toThrow(/options\.maxConcurrency/);
    expect(bad).toThrow(/options\.host/);
    expect(bad).toThrow(/options\.ceilings\.memoryMb/);
  });
  it("has safe defaults and declares its task types", () => {
    const w = new DockerWorker({ host: "unix:///nonexistent.sock" });
    expect(w.kind).toBe("docker");
    expect(w.taskTypes).toEqual(["code_execution", "docker_task"]);
    expect(w.maxConcurrency).toBe(2);
    expect(w.languages).toEqual(["python", "bash", "node"]);
  });
  it("reports an unreachable engine as unhealthy", async () => {
    const w = new DockerWorker({ host: "unix:///nonexistent/flotilla.sock" });
    const r = await w.healthCheck(AbortSignal.timeout(2000));
    expect(r.status).toBe("unhealthy");
    expect(r.message).toContain("engine ping failed");
  });
  it("fails start() with a typed error when the engine is unreachable", async () => {
    const w = new DockerWorker({ id: "unreachable", host: "unix:///nonexistent/flotilla.sock" });
    await expect(w.start()).rejects.toMatchObject({
      code: "WORKER_ERROR",
      message: expect.stringContaining("docker worker unreachable cannot use the engine"),
    });
  });
});
