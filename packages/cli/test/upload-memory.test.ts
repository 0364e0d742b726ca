import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const root = fileURLToPath(new URL("../../../", import.meta.url));
const MiB = 1024 * 1024;
const KEY = "admin-key-for-upload-memory";
let child: ChildProcess | undefined;
let dir: string | undefined;
afterAll(() => {
  child?.kill("SIGKILL");
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Resident memory of a process, in MiB: now (VmRSS) and the peak since the last reset (VmHWM). */
function memory(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1]);
  return { rss: kb("VmRSS") / 1024, peak: kb("VmHWM") / 1024 };
}

const BLOCK = (() => {
  const b = Buffer.alloc(MiB);
  for (let i = 0; i < MiB; i += 4) b.writeUInt32LE((i * 2654435761) >>> 0, i);
  return b;
})();

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
          "X-API-Key": KEY,
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
        hash.update(BLOCK);
        if (!req.write(BLOCK)) {
          req.once("drain", next);
          return;
        }
      }
      req.end(tail);
    };
    next();
  });
}

describe("a 50 MiB upload to flotilla serve", () => {
  it("is streamed to the store: the server's peak memory grows by a few MiB, not by the file", async () => {
    dir = mkdtempSync(join(tmpdir(), "flotilla-upload-mem-"));
    const tsx = pathToFileURL(join(root, "node_modules/tsx/dist/loader.mjs")).href;
    child = spawn(
      process.execPath,
      // A small young generation, so RSS shows what the server holds rather than how long
      // V8 lets garbage wait (without it the young generation grows once, by 30-80 MiB, on
      // the first big request, whatever the file's size).
      [
        "--max-semi-space-size=2",
        "--import",
        tsx,
        join(root, "packages/cli/src/bin.ts"),
        "serve",
        "--port",
        "0",
      ],
      {
        env: {
          ...process.env,
          TSX_TSCONFIG_PATH: join(root, "packages/cli/tsconfig.json"),
          FLOTILLA_DATA_DIR: dir,
          FLOTILLA_ADMIN_KEY: KEY,
          FLOTILLA_REGISTRATION_TOKEN: "reg-token-for-upload-memory",
          FLOTILLA_BODY_LIMIT_BYTES: "1048576",
          FLOTILLA_LOG_LEVEL: "warn",
          FLOTILLA_DETECT_WORKERS: "false",
        },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let out = "";
    child.stdout!.on("data", (d) => {
      out += d;
    });
    child.stderr!.on("data", (d) => {
      out += d;
    });
    const url = await new Promise<string>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`serve did not start:\n${out}`)), 60_000);
      child!.stdout!.on("data", () => {
        const m = /listening on (http:\/\/\S+)/.exec(out);
        if (m && /^Fleet:/m.test(out)) {
          clearTimeout(t);
          resolve(m[1]!);
        }
      });
    });
    const pid = child.pid!;
    // Warm up the upload path, then measure from a reset peak.
    expect((await streamUpload(url, 4)).status).toBe(201);
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
    const before = memory(pid);
    const up = await streamUpload(url, 50);
    expect(up.status).toBe(201);
    const rec = JSON.parse(up.body) as { checksum: string; size: number };
    expect(rec).toMatchObject({ size: 50 * MiB, checksum: up.sha });
    const after = memory(pid);
    const growth = after.peak - before.rss;
    console.log(
      `server RSS before ${before.rss.toFixed(1)} MiB, peak during a 50 MiB upload ${after.peak.toFixed(1)} MiB (+${growth.toFixed(1)})`,
    );
    expect(growth).toBeLessThan(16);
    // Nor does a bigger one grow it more: memory does not follow the file's size.
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
    const before90 = memory(pid);
    expect((await streamUpload(url, 90)).status).toBe(201);
    const growth90 = memory(pid).peak - before90.rss;
    console.log(`… and +${growth90.toFixed(1)} MiB during a 90 MiB upload`);
    expect(growth90).toBeLessThan(16);

    // The download a node makes streams too.
    const reg = await fetch(`${url}/register`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "x-registration-token": "reg-token-for-upload-memory",
      },
      body: JSON.stringify({ hostname: "h", name: "n", os_type: "linux" }),
    });
    const nodeKey = ((await reg.json()) as { api_key: string }).api_key;
    const made = await fetch(`${url}/tasks`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": KEY },
      body: JSON.stringify({
        prompt: "p",
        files: [(JSON.parse(up.body) as { filename: string }).filename],
      }),
    });
    expect(made.status).toBe(201);
    const poll = await fetch(`${url}/tasks/pending`, { headers: { "x-api-key": nodeKey } });
    expect(poll.status).toBe(200);
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
    const beforeDown = memory(pid);
    const res = await fetch(`${url}/files/big.bin`, { headers: { "x-api-key": nodeKey } });
    const hash = createHash("sha256");
    for await (const piece of res.body!) hash.update(piece);
    expect(hash.digest("hex")).toBe(rec.checksum);
    const growthDown = memory(pid).peak - beforeDown.rss;
    console.log(`… and +${growthDown.toFixed(1)} MiB while a node downloads the 50 MiB file`);
    expect(growthDown).toBeLessThan(16);
  }, 120_000);
});
