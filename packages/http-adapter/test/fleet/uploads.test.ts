import { createHash } from "node:crypto";
import { request } from "node:http";
import { afterEach, describe, expect, it } from "vitest";
import { ADMIN_KEY, type FleetUnderTest, REG_TOKEN, removeDir, startFleet } from "./harness.js";
import { httpRequest } from "./victoria-runner.js";

let f: FleetUnderTest | undefined;
afterEach(async () => {
  if (f) {
    await f.stop();
    await removeDir(f.dir);
    f = undefined;
  }
});

const MiB = 1024 * 1024;

/** One 1 MiB block of varied bytes, sent again and again (the client allocates nothing per block). */
const BLOCK = (() => {
  const b = Buffer.alloc(MiB);
  for (let i = 0; i < MiB; i += 4) b.writeUInt32LE((i * 2654435761) >>> 0, i);
  return b;
})();

/** Streams a `mib` MiB upload (multipart) without holding it: block by block, with backpressure. */
function streamUpload(
  url: string,
  mib: number,
): Promise<{ status: number; body: string; sha: string }> {
  const boundary = "----flotillaStreamBoundary";
  const head = Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`,
  );
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  const hash = createHash("sha256");
  return new Promise((resolve, reject) => {
    const req = request(
      `${url}/upload`,
      {
        method: "POST",
        headers: {
          "X-API-Key": ADMIN_KEY,
          "Content-Type": `multipart/form-data; boundary=${boundary}`,
          "Content-Length": String(head.length + mib * MiB + tail.length),
        },
      },
      (res) => {
        let body = "";
        res.on("data", (d) => {
          body += d;
        });
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, body, sha: hash.digest("hex") }),
        );
      },
    );
    req.on("error", reject);
    req.write(head);
    let n = 0;
    const next = () => {
      while (n < mib) {
        n++;
        const b = BLOCK;
        hash.update(b);
        if (!req.write(b)) {
          req.once("drain", next);
          return;
        }
      }
      req.end(tail);
    };
    next();
  });
}

describe("big files", () => {
  // Memory during such an upload is measured on a separate server process:
  // packages/cli/test/upload-memory.test.ts.
  it("a 50 MiB upload and its download stream through the server, byte for byte", async () => {
    f = await startFleet({ fleet: { maxUploadBytes: 64 * MiB } });
    const up = await streamUpload(f.url, 50);
    expect(up.status).toBe(201);
    const rec = JSON.parse(up.body) as { filename: string; checksum: string; size: number };
    expect(rec.size).toBe(50 * MiB);
    expect(rec.checksum).toBe(up.sha);
    // Stored in small pieces (64 KiB and what the last network read brought).
    const pieces = await f.store.kvList<string>("fleet.file_chunks");
    const sizes = pieces.map((p) => Buffer.from(p.value, "base64").byteLength);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(50 * MiB);
    expect(Math.max(...sizes)).toBeLessThanOrEqual(192 * 1024);

    const reg = await httpRequest(
      "POST",
      `${f.url}/register`,
      { "Content-Type": "application/json", "X-Registration-Token": REG_TOKEN },
      JSON.stringify({ hostname: "h", name: "n", os_type: "linux" }),
    );
    const key = reg.json.api_key as string;
    await f.admin("POST", "/tasks", { prompt: "p", files: [rec.filename] });
    await httpRequest("GET", `${f.url}/tasks/pending`, { "X-API-Key": key });
    const res = await fetch(`${f.url}/files/big.bin`, { headers: { "X-API-Key": key } });
    expect(res.headers.get("content-length")).toBe(String(50 * MiB));
    const hash = createHash("sha256");
    let size = 0;
    for await (const piece of res.body!) {
      hash.update(piece);
      size += piece.byteLength;
    }
    expect({ size, sha: hash.digest("hex") }).toEqual({ size: 50 * MiB, sha: rec.checksum });
  }, 120_000);

  it("an upload over the limit is refused while it streams, and nothing of it is kept", async () => {
    f = await startFleet({ fleet: { maxUploadBytes: 3 * MiB } });
    const res = await streamUpload(f.url, 5).catch((err: Error) => ({
      status: 0,
      body: err.message,
      sha: "",
    }));
    // 413 from the size check (or the connection cut by the body limit).
    expect([0, 413]).toContain(res.status);
    const chunks = await f.store.kvList("fleet.file_chunks");
    expect(chunks).toEqual([]);
    expect(await f.store.kvList("fleet.files")).toEqual([]);
  });
});
