import type { Readable } from "node:stream";
import { extract, pack } from "tar-stream";

/**
 * Builds the tar that `putArchive` unpacks at the volume's mount point: `dir` (the working
 * directory, relative to the mount point; "" for the mount point itself) world-writable, so
 * the unprivileged user can write there whoever owns it, and the files inside it.
 */
export async function buildInputTar(
  files: readonly { path: string; data: Buffer; mode: number }[],
  dir: string,
): Promise<Buffer> {
  const p = pack();
  const chunks: Buffer[] = [];
  p.on("data", (c) => chunks.push(c as Buffer));
  const done = new Promise<void>((resolve, reject) => {
    p.on("end", resolve);
    p.on("error", reject);
  });
  const mtime = new Date();
  const prefix = dir ? `${dir}/` : "";
  const dirs = new Set<string>();
  const addDir = (name: string) => {
    if (dirs.has(name)) return;
    dirs.add(name);
    p.entry({ name: `${name}/`, type: "directory", mode: 0o777, mtime });
  };
  if (dir) addDir(dir);
  for (const f of files) {
    const parts = f.path.split("/");
    for (let i = 1; i < parts.length; i++) addDir(`${prefix}${parts.slice(0, i).join("/")}`);
    p.entry({ name: `${prefix}${f.path}`, size: f.data.length, mode: f.mode, mtime }, f.data);
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

/** A file collected from a container after exit. */
export interface OutputFile {
  /** Size in bytes as stored in the container. */
  size: number;
  /** `utf8` when the bytes are valid UTF-8 text, else `base64`. */
  encoding: "utf8" | "base64";
  content: string;
  /** The content was cut at the worker's `maxOutputFileBytes`. */
  truncated?: boolean;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function encode(buf: Buffer): { encoding: "utf8" | "base64"; content: string } {
  try {
    return { encoding: "utf8", content: utf8.decode(buf) };
  } catch {
    return { encoding: "base64", content: buf.toString("base64") };
  }
}

/**
 * Reads the regular files of a `getArchive` tar stream, keeping at most `budget.left` bytes
 * in all (the rest is drained). Names are relative to `base` (the requested path's parent).
 */
export async function readOutputTar(
  stream: Readable,
  base: string,
  budget: { left: number },
  into: Record<string, OutputFile>,
): Promise<void> {
  const ex = extract();
  await new Promise<void>((resolve, reject) => {
    ex.on("entry", (header, entry, next) => {
      const chunks: Buffer[] = [];
      let kept = 0;
      let truncated = false;
      entry.on("data", (data) => {
        const c = data as Buffer;
        const room = Math.max(0, budget.left - kept);
        if (c.length > room) truncated = true;
        if (room > 0) {
          const part = c.length > room ? c.subarray(0, room) : c;
          chunks.push(part);
          kept += part.length;
        }
      });
      entry.on("end", () => {
        if (header.type === "file") {
          budget.left -= kept;
          const name = base ? `${base}/${header.name}` : header.name;
          const file: OutputFile = { size: header.size ?? kept, ...encode(Buffer.concat(chunks)) };
          if (truncated) file.truncated = true;
          into[name.replace(/\/+$/, "")] = file;
        }
        next();
      });
      entry.resume();
    });
    ex.on("finish", resolve);
    ex.on("error", reject);
    stream.on("error", reject);
    stream.pipe(ex);
  });
}

/**
 * Collects one stream of a container's output: keeps up to `max` bytes, counts the rest
 * (always drained so the container never blocks on a full pipe).
 */
export class CappedBuffer {
  readonly #chunks: Buffer[] = [];
  #kept = 0;
  #total = 0;
  constructor(private readonly max: number) {}

  /** Adds a chunk; returns the part that was kept (empty once the cap is reached). */
  push(chunk: Buffer): Buffer {
    this.#total += chunk.length;
    const room = this.max - this.#kept;
    if (room <= 0) return Buffer.alloc(0);
    const part = chunk.length > room ? chunk.subarray(0, room) : chunk;
    this.#chunks.push(part);
    this.#kept += part.length;
    return part;
  }

  /** Whether the cap is reached (later chunks are only counted). */
  get full(): boolean {
    return this.#kept >= this.max;
  }

  get truncated(): boolean {
    return this.#total > this.#kept;
  }

  get totalBytes(): number {
    return this.#total;
  }

  /** The kept text, with a marker saying how much was dropped when truncated. */
  text(): string {
    const s = Buffer.concat(this.#chunks).toString("utf8");
    if (!this.truncated) return s;
    return `${s}\n[output truncated: ${this.#total - this.#kept} of ${this.#total} bytes dropped]`;
  }
}

/**
 * Splits Docker's multiplexed attach stream (8-byte frame headers: stream type, 3 zero bytes,
 * big-endian length) into stdout (1) and stderr (2) chunks.
 */
export class Demuxer {
  #pending: Buffer = Buffer.alloc(0);
  constructor(private readonly onFrame: (stream: 1 | 2, data: Buffer) => void) {}

  push(chunk: Buffer): void {
    let buf = this.#pending.length ? Buffer.concat([this.#pending, chunk]) : chunk;
    while (buf.length >= 8) {
      const type = buf[0];
      const len = buf.readUInt32BE(4);
      if (buf.length < 8 + len) break;
      const payload = buf.subarray(8, 8 + len);
      this.onFrame(type === 2 ? 2 : 1, payload);
      buf = buf.subarray(8 + len);
    }
    this.#pending = buf.length ? Buffer.from(buf) : Buffer.alloc(0);
  }
}
