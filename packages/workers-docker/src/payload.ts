import { FlotillaError, formatIssues } from "@flotilla/core";
import { z } from "zod";
import { type ContainerLimits, imageAllowed, type ResolvedOptions } from "./options.js";

/** An input file: text, or `{ content, encoding }` (`base64` for binary), with an optional mode. */
export type InputFile = string | { content: string; encoding?: "utf8" | "base64"; mode?: number };

/** Per-task resource limits, each within the operator's ceilings. */
export type TaskLimits = Partial<ContainerLimits>;

/** Fields common to both task types. */
export interface CommonPayload {
  /** Files put into the working directory before start, by relative path. */
  files?: Record<string, InputFile>;
  /** Paths (relative to the working directory, files or directories) collected after exit. */
  outputFiles?: string[];
  /** Environment variables. */
  env?: Record<string, string>;
  /** Limits, within the operator's ceilings. */
  limits?: TaskLimits;
  /** Wall-clock limit in ms (same as `limits.timeoutMs`; the smaller wins). */
  timeoutMs?: number;
  /** Ask for a network (only where the operator allows it). @default false */
  network?: boolean;
  /** Whether a non-zero exit fails the task. @default the worker's `failOnNonZeroExit` */
  failOnNonZeroExit?: boolean;
}

/** Payload of a `code_execution` task. */
export interface CodeExecutionPayload extends CommonPayload {
  /** One of the worker's languages (`python`, `bash`, `node` by default). */
  language: string;
  /** The snippet. */
  code: string;
  /** Arguments after the code file. */
  args?: string[];
}

/** Payload of a `docker_task` task. */
export interface DockerTaskPayload extends CommonPayload {
  /** Image, e.g. `alpine:3.20`. */
  image: string;
  /** Command: an argv array, or a string run with `/bin/sh -c`. Omitted: the image's default. */
  command?: string[] | string;
  /** Working directory (absolute). @default the worker's `workdir` */
  workdir?: string;
}

const relPath = z
  .string({ error: "expected a relative path" })
  .min(1, "expected a relative path")
  .max(1024, "expected at most 1024 characters")
  .refine(
    (p) =>
      !p.startsWith("/") && !p.includes("\0") && !p.split("/").some((s) => s === ".." || s === ""),
    "expected a relative path without '..', empty segments or a leading '/'",
  );

const fileSchema = z.union(
  [
    z.string(),
    z.object({
      content: z.string({ error: "expected a string" }),
      encoding: z.enum(["utf8", "base64"]).optional(),
      mode: z.number().int().min(0).max(0o777).optional(),
    }),
  ],
  { error: "expected a string or { content, encoding }" },
);

const envSchema = z.record(
  z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "expected a variable name ([A-Za-z_][A-Za-z0-9_]*)"),
  z
    .string({ error: "expected a string value" })
    .refine((v) => !v.includes("\0"), "expected no NUL character"),
  { error: "expected an object of strings" },
);

function limitsSchema(ceil: ContainerLimits) {
  const above = (name: keyof ContainerLimits, unit: string) =>
    `above the operator's ceiling ${name} = ${ceil[name]}${unit}`;
  return z
    .object(
      {
        memoryMb: z
          .number({ error: "expected a whole number of MiB" })
          .int("expected a whole number of MiB")
          .min(6, "expected at least 6 MiB")
          .max(ceil.memoryMb, above("memoryMb", " MiB"))
          .optional(),
        cpus: z
          .number({ error: "expected a number of CPUs" })
          .positive("expected a number of CPUs > 0")
          .max(ceil.cpus, above("cpus", ""))
          .optional(),
        pids: z
          .number({ error: "expected an integer" })
          .int("expected an integer")
          .positive("expected an integer > 0")
          .max(ceil.pids, above("pids", ""))
          .optional(),
        timeoutMs: z
          .number({ error: "expected a number of ms" })
          .int("expected a whole number of ms")
          .positive("expected a number of ms > 0")
          .max(ceil.timeoutMs, above("timeoutMs", " ms"))
          .optional(),
      },
      { error: "expected an object of limits" },
    )
    .strict();
}

function commonShape(opts: ResolvedOptions) {
  return {
    files: z
      .record(relPath, fileSchema, { error: "expected an object of files by relative path" })
      .refine((f) => Object.keys(f).length <= 1000, "expected at most 1000 files")
      .optional(),
    outputFiles: z
      .array(relPath, { error: "expected an array of relative paths" })
      .max(100, "expected at most 100 paths")
      .optional(),
    env: envSchema.optional(),
    limits: limitsSchema(opts.ceilings).optional(),
    timeoutMs: z
      .number({ error: "expected a number of ms" })
      .int("expected a whole number of ms")
      .positive("expected a number of ms > 0")
      .max(
        opts.ceilings.timeoutMs,
        `above the operator's ceiling timeoutMs = ${opts.ceilings.timeoutMs} ms`,
      )
      .optional(),
    network: z
      .boolean({ error: "expected a boolean" })
      .refine(
        (n) => !n || opts.allowNetwork,
        "network is not allowed by this worker (allowNetwork is false)",
      )
      .optional(),
    failOnNonZeroExit: z.boolean({ error: "expected a boolean" }).optional(),
  };
}

/** Builds the payload schemas of a worker (its languages, ceilings and images). */
export function payloadSchemas(opts: ResolvedOptions) {
  const languages = Object.keys(opts.languages);
  const code = z
    .object(
      {
        language: z
          .string({ error: `expected one of ${languages.join(", ")}` })
          .refine((l) => languages.includes(l), {
            error: (iss) =>
              `unknown language ${JSON.stringify(iss.input)}: expected one of ${languages.join(", ")}`,
          }),
        code: z
          .string({ error: "expected a string" })
          .refine(
            (c) => Buffer.byteLength(c) <= opts.sizes.maxCodeBytes,
            `code is larger than maxCodeBytes = ${opts.sizes.maxCodeBytes} bytes`,
          ),
        args: z.array(z.string(), { error: "expected an array of strings" }).optional(),
        ...commonShape(opts),
      },
      { error: "expected an object { language, code }" },
    )
    .strict();
  const docker = z
    .object(
      {
        image: z
          .string({ error: "expected an image name" })
          .min(1, "expected an image name")
          .refine((i) => imageAllowed(i, opts.allowedImages), {
            error: (iss) =>
              `image ${JSON.stringify(iss.input)} is not in the worker's allowedImages`,
          }),
        command: z
          .union([z.array(z.string()).min(1, "expected a non-empty argv"), z.string().min(1)], {
            error: "expected an argv array or a shell command string",
          })
          .optional(),
        workdir: z
          .string()
          .regex(/^\/[^\0]*[^/\0]\/*$/, "expected an absolute path other than /")
          .optional(),
        ...commonShape(opts),
      },
      { error: "expected an object { image, command }" },
    )
    .strict();
  return { code, docker };
}

/** Parses `payload` with `schema`; `VALIDATION` naming each wrong field otherwise. */
export function parsePayload<T>(schema: z.ZodType<T>, payload: unknown, type: string): T {
  const parsed = schema.safeParse(payload);
  if (!parsed.success) {
    throw new FlotillaError(
      "VALIDATION",
      `invalid ${type} payload: ${formatIssues(parsed.error, "payload")}`,
      {
        retryable: false,
      },
    );
  }
  return parsed.data;
}

/** Decodes input files and checks their total size. */
export function decodeFiles(
  files: Record<string, InputFile> | undefined,
  maxBytes: number,
  extra = 0,
) {
  const out: { path: string; data: Buffer; mode: number }[] = [];
  let total = extra;
  for (const [path, f] of Object.entries(files ?? {})) {
    const data =
      typeof f === "string"
        ? Buffer.from(f, "utf8")
        : Buffer.from(f.content, f.encoding === "base64" ? "base64" : "utf8");
    total += data.length;
    if (total > maxBytes) {
      throw new FlotillaError(
        "VALIDATION",
        `invalid payload: payload.files: input files are larger than maxInputBytes = ${maxBytes} bytes`,
        { retryable: false },
      );
    }
    out.push({ path, data, mode: typeof f === "string" ? 0o666 : (f.mode ?? 0o666) });
  }
  return out;
}
