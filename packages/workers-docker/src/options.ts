import { FlotillaError, formatIssues } from "@flotilla/core";
import { z } from "zod";

/** How a language's snippet is run: the file the code goes in and the command that runs it. */
export interface LanguageSpec {
  /** Image the snippet runs in. @default the worker's `image` */
  image?: string;
  /** File name (inside the working directory) the code is written to, e.g. `main.py`. */
  file: string;
  /** Command; `{file}` is replaced by the code file's absolute path. Arguments are appended. */
  command: readonly string[];
}

/**
 * The languages a {@link DockerWorker} knows unless `languages` says otherwise.
 *
 * @example
 * ```ts
 * DEFAULT_LANGUAGES.python; // { file: "main.py", command: ["python3", "-u", "{file}"] }
 * ```
 */
export const DEFAULT_LANGUAGES: Readonly<Record<string, LanguageSpec>> = Object.freeze({
  python: { file: "main.py", command: ["python3", "-u", "{file}"] },
  bash: { file: "main.sh", command: ["bash", "{file}"] },
  node: { file: "main.js", command: ["node", "{file}"] },
});

/** Resource limits of one container. */
export interface ContainerLimits {
  /** Memory in MiB (no swap beyond it). */
  memoryMb: number;
  /** CPUs (fractions allowed: 0.5 is half a core). */
  cpus: number;
  /** Processes and threads in the container. */
  pids: number;
  /** Wall-clock time before the container is killed, in ms. */
  timeoutMs: number;
}

/** Options of the warm pool (see {@link DockerWorkerOptions.warmPool}). */
export interface WarmPoolOptions {
  /** Idle containers kept per profile. */
  size: number;
  /** Profiles kept warm at once; the least recently used beyond it is dropped. @default 4 */
  maxProfiles?: number;
}

/** Size limits on what goes into and comes out of a container. */
export interface SizeLimits {
  /** Bytes of code in a `code_execution` task. @default 262144 (256 KiB) */
  maxCodeBytes: number;
  /** Bytes of input files in one task, all files together. @default 10485760 (10 MiB) */
  maxInputBytes: number;
  /** Bytes kept of stdout, and separately of stderr; the rest is drained and dropped. @default 1048576 (1 MiB) */
  maxOutputBytes: number;
  /** Bytes of output files collected after exit, all files together. @default 10485760 (10 MiB) */
  maxOutputFileBytes: number;
}

/**
 * Options of {@link DockerWorker}. Every field is optional.
 *
 * @example
 * ```ts
 * const options: DockerWorkerOptions = {
 *   id: "docker-1",
 *   host: "unix:///run/podman/podman.sock",
 *   image: "python:3.12-slim",
 *   ceilings: { memoryMb: 1024, timeoutMs: 120_000 },
 *   allowedImages: ["ghcr.io/acme/*"],
 *   pull: "never",
 * };
 * ```
 */
export interface DockerWorkerOptions {
  /** Unique id; also the label that marks this worker's containers, so keep it stable across restarts to have orphans cleaned. @default `docker-` followed by 8 random hex characters */
  id?: string;
  /** Name matched by target globs. @default id */
  name?: string;
  /** Task types it executes. @default ["code_execution", "docker_task"] */
  taskTypes?: readonly string[];
  /** Containers it runs at once. @default 2 */
  maxConcurrency?: number;
  /** Capabilities a task may require. @default [] */
  capabilities?: readonly string[];
  /** Labels matched by `requirements.labels` and `target.tags`. @default {} */
  labels?: Readonly<Record<string, string>>;
  /**
   * The engine: a URL (`unix:///var/run/docker.sock`, `tcp://127.0.0.1:2375`,
   * `http://host:port`), or dockerode connection options.
   * @default `DOCKER_HOST`, else `unix:///var/run/docker.sock`
   */
  host?:
    | string
    | { socketPath: string }
    | { host: string; port: number; protocol?: "http" | "https" };
  /** Image of `code_execution` tasks (a language may name its own). @default "python:3.12-slim" */
  image?: string;
  /** Languages of `code_execution`, merged over {@link DEFAULT_LANGUAGES}; `null` removes one. @default DEFAULT_LANGUAGES */
  languages?: Readonly<Record<string, LanguageSpec | null>>;
  /** Images a `docker_task` may name: exact names, or prefixes ending in `*`. @default ["*"] (any) */
  allowedImages?: readonly string[];
  /** Pull a missing image (`"missing"`) or fail with a clear error (`"never"`). @default "missing" */
  pull?: "missing" | "never";
  /** Limits of a task that sets none. @default { memoryMb: 256, cpus: 1, pids: 128, timeoutMs: 60000 } */
  defaults?: Partial<ContainerLimits>;
  /** The most a task may ask for; above it the task fails with `VALIDATION` before any container exists. @default { memoryMb: 2048, cpus: 2, pids: 1024, timeoutMs: 600000 } */
  ceilings?: Partial<ContainerLimits>;
  /** Size limits. @default see {@link SizeLimits} */
  sizes?: Partial<SizeLimits>;
  /** Whether a task may ask for a network (`network: true`). @default false */
  allowNetwork?: boolean;
  /** Network mode of a task that asks for one and is allowed it. @default "bridge" */
  networkMode?: string;
  /** User the process runs as (`uid:gid`). @default "65534:65534" (nobody) */
  user?: string;
  /**
   * Working directory: the task's files go there and output files are read from there. It is
   * created world-writable in an anonymous volume mounted at its parent (so keep it two levels
   * deep). @default "/workspace/job"
   */
  workdir?: string;
  /** Size of the writable `/tmp` tmpfs, in MiB. @default 64 */
  tmpfsMb?: number;
  /**
   * Size of the working directory's tmpfs, in MiB: a task writing past it gets "No space
   * left on device". Like `/tmp`, what is written there counts against the task's memory.
   * @default 128
   */
  workdirMb?: number;
  /**
   * Command of the idle process that keeps a task's container up while the task's own
   * process runs beside it (`exec`). The image must have it.
   * @default ["sleep", "infinity"]
   */
  idleCommand?: readonly string[];
  /**
   * Keep containers started ahead of tasks: `size` idle containers per profile (image,
   * limits, network, working directory), each used by exactly one task and then removed,
   * refilled in the background. The profile of the worker's `image` with the `defaults` is
   * warmed at `start()`; other profiles are warmed after their first task, at most
   * `maxProfiles` of them (the least recently used is dropped). Off when omitted.
   * @default undefined (no warm pool)
   */
  warmPool?: WarmPoolOptions;
  /** `nofile` and `nproc` limits (both always set, as podman requires). @default { nofile: 1024, nproc: 4096 } */
  ulimits?: { nofile?: number; nproc?: number };
  /** A non-zero exit fails the task (`WORKER_ERROR` with the output in `details`); tasks may override with `failOnNonZeroExit`. @default true */
  failOnNonZeroExit?: boolean;
  /** Interval of CPU/memory samples sent as progress while a container runs; 0 turns them off. @default 2000 */
  statsIntervalMs?: number;
  /** Stream stdout/stderr chunks as progress. @default true */
  streamOutput?: boolean;
}

const positiveInt = (what: string) =>
  z
    .number({ error: `expected ${what}` })
    .int(`expected ${what}`)
    .positive(`expected ${what}`);

const limitsShape = {
  memoryMb: positiveInt("a whole number of MiB > 0").min(6, "expected at least 6 MiB").optional(),
  cpus: z
    .number({ error: "expected a number of CPUs > 0" })
    .positive("expected a number of CPUs > 0")
    .optional(),
  pids: positiveInt("an integer > 0").optional(),
  timeoutMs: positiveInt("a whole number of ms > 0").optional(),
};

const languageSchema = z.object({
  image: z.string().min(1).optional(),
  file: z
    .string({ error: "expected a file name" })
    .regex(/^[A-Za-z0-9._-]+$/, "expected a plain file name such as main.py"),
  command: z
    .array(z.string(), { error: "expected an array of strings" })
    .min(1, "expected a command"),
});

const nonEmpty = z
  .string({ error: "expected a non-empty string" })
  .min(1, "expected a non-empty string");

export const DockerWorkerOptionsSchema = z.object(
  {
    id: nonEmpty.max(128, "expected at most 128 characters").optional(),
    name: nonEmpty.optional(),
    taskTypes: z.array(nonEmpty).min(1, "expected at least one task type").optional(),
    maxConcurrency: positiveInt("an integer >= 1").optional(),
    capabilities: z.array(nonEmpty).optional(),
    labels: z.record(z.string(), z.string()).optional(),
    host: z
      .union([
        z
          .string()
          .regex(
            /^(unix|tcp|http|https):\/\/.+/,
            "expected unix://, tcp://, http:// or https:// URL",
          ),
        z.object({ socketPath: nonEmpty }),
        z.object({
          host: nonEmpty,
          port: positiveInt("a port"),
          protocol: z.enum(["http", "https"]).optional(),
        }),
      ])
      .optional(),
    image: nonEmpty.optional(),
    languages: z
      .record(
        z.string().regex(/^[a-z0-9_+-]+$/, "expected a lower-case language name"),
        languageSchema.nullable(),
      )
      .optional(),
    allowedImages: z.array(nonEmpty).optional(),
    pull: z.enum(["missing", "never"]).optional(),
    defaults: z.object(limitsShape).optional(),
    ceilings: z.object(limitsShape).optional(),
    sizes: z
      .object({
        maxCodeBytes: positiveInt("a number of bytes > 0").optional(),
        maxInputBytes: positiveInt("a number of bytes > 0").optional(),
        maxOutputBytes: positiveInt("a number of bytes > 0").optional(),
        maxOutputFileBytes: positiveInt("a number of bytes > 0").optional(),
      })
      .optional(),
    allowNetwork: z.boolean().optional(),
    networkMode: nonEmpty.optional(),
    user: z
      .string()
      .regex(/^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?$/, "expected user or uid:gid")
      .optional(),
    workdir: z
      .string()
      .regex(/^\/[^\0]*[^/\0]\/*$/, "expected an absolute path other than /")
      .optional(),
    tmpfsMb: positiveInt("a whole number of MiB > 0").optional(),
    workdirMb: positiveInt("a whole number of MiB > 0").optional(),
    idleCommand: z
      .array(nonEmpty, { error: "expected an array of strings" })
      .min(1, "expected a command")
      .optional(),
    warmPool: z
      .object(
        {
          size: positiveInt("an integer >= 1").max(64, "expected at most 64"),
          maxProfiles: positiveInt("an integer >= 1").max(64, "expected at most 64").optional(),
        },
        { error: "expected { size, maxProfiles? }" },
      )
      .optional(),
    ulimits: z
      .object({
        nofile: positiveInt("an integer > 0").optional(),
        nproc: positiveInt("an integer > 0").optional(),
      })
      .optional(),
    failOnNonZeroExit: z.boolean().optional(),
    statsIntervalMs: z.number().int().min(0, "expected 0 (off) or a number of ms").optional(),
    streamOutput: z.boolean().optional(),
  },
  { error: "expected an options object" },
);

/** Options with every default applied. */
export interface ResolvedOptions {
  image: string;
  languages: Record<string, LanguageSpec>;
  allowedImages: readonly string[];
  pull: "missing" | "never";
  defaults: ContainerLimits;
  ceilings: ContainerLimits;
  sizes: SizeLimits;
  allowNetwork: boolean;
  networkMode: string;
  user: string;
  workdir: string;
  tmpfsMb: number;
  workdirMb: number;
  idleCommand: readonly string[];
  warmPool: { size: number; maxProfiles: number } | undefined;
  ulimits: { nofile: number; nproc: number };
  failOnNonZeroExit: boolean;
  statsIntervalMs: number;
  streamOutput: boolean;
}

/**
 * Limits of a container whose task asks for none (the `defaults` option overrides them field by field).
 */
export const DEFAULT_LIMITS: ContainerLimits = {
  memoryMb: 256,
  cpus: 1,
  pids: 128,
  timeoutMs: 60_000,
};
/**
 * The most a task may ask for unless the `ceilings` option says otherwise.
 */
export const DEFAULT_CEILINGS: ContainerLimits = {
  memoryMb: 2048,
  cpus: 2,
  pids: 1024,
  timeoutMs: 600_000,
};
/**
 * Code, input, output and output-file size limits unless the `sizes` option says otherwise.
 */
export const DEFAULT_SIZES: SizeLimits = {
  maxCodeBytes: 256 * 1024,
  maxInputBytes: 10 * 1024 * 1024,
  maxOutputBytes: 1024 * 1024,
  maxOutputFileBytes: 10 * 1024 * 1024,
};

/** Validates options (VALIDATION naming each wrong field) and applies defaults. */
export function resolveOptions(options: DockerWorkerOptions): ResolvedOptions {
  const parsed = DockerWorkerOptionsSchema.safeParse(options);
  if (!parsed.success) {
    throw new FlotillaError(
      "VALIDATION",
      `invalid docker worker options: ${formatIssues(parsed.error, "options")}`,
    );
  }
  const ceilings = { ...DEFAULT_CEILINGS, ...stripUndefined(options.ceilings ?? {}) };
  const defaults = { ...DEFAULT_LIMITS, ...stripUndefined(options.defaults ?? {}) };
  // A default above its ceiling is lowered to the ceiling.
  for (const key of Object.keys(defaults) as (keyof ContainerLimits)[]) {
    defaults[key] = Math.min(defaults[key], ceilings[key]);
  }
  const languages: Record<string, LanguageSpec> = { ...DEFAULT_LANGUAGES };
  for (const [name, spec] of Object.entries(options.languages ?? {})) {
    if (spec === null) delete languages[name];
    else languages[name] = spec;
  }
  return {
    image: options.image ?? "python:3.12-slim",
    languages,
    allowedImages: options.allowedImages ?? ["*"],
    pull: options.pull ?? "missing",
    defaults,
    ceilings,
    sizes: { ...DEFAULT_SIZES, ...stripUndefined(options.sizes ?? {}) },
    allowNetwork: options.allowNetwork ?? false,
    networkMode: options.networkMode ?? "bridge",
    user: options.user ?? "65534:65534",
    workdir: options.workdir ?? "/workspace/job",
    tmpfsMb: options.tmpfsMb ?? 64,
    workdirMb: options.workdirMb ?? 128,
    idleCommand: options.idleCommand ?? ["sleep", "infinity"],
    warmPool: options.warmPool
      ? { size: options.warmPool.size, maxProfiles: options.warmPool.maxProfiles ?? 4 }
      : undefined,
    ulimits: { nofile: options.ulimits?.nofile ?? 1024, nproc: options.ulimits?.nproc ?? 4096 },
    failOnNonZeroExit: options.failOnNonZeroExit ?? true,
    statsIntervalMs: options.statsIntervalMs ?? 2000,
    streamOutput: options.streamOutput ?? true,
  };
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Whether `image` matches one of `patterns` (exact, or a prefix ending in `*`). */
export function imageAllowed(image: string, patterns: readonly string[]): boolean {
  return patterns.some((p) => (p.endsWith("*") ? image.startsWith(p.slice(0, -1)) : image === p));
}
