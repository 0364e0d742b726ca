import type { Logger } from "@flotilla/core";

/** Log levels, least to most severe, with pino's numbers. */
export const LOG_LEVELS = {
  trace: 10,
  debug: 20,
  info: 30,
  warn: 40,
  error: 50,
  silent: 100,
} as const;
export type LogLevel = keyof typeof LOG_LEVELS;

/**
 * A small pino-compatible JSON-lines logger (one object per line: `level`, `time`, `msg`,
 * bindings and fields), writing to stderr. Pass a real pino instance to the library instead
 * when you embed it.
 *
 * @example
 * ```ts
 * const logger = createJsonLogger("debug");
 * logger.info({ port: 8000 }, "listening");
 * ```
 */
export function createJsonLogger(
  level: LogLevel = "info",
  write: (line: string) => void = (l) => process.stderr.write(l),
  bindings: Record<string, unknown> = {},
): Logger {
  const min = LOG_LEVELS[level];
  const make =
    (name: Exclude<LogLevel, "silent">) =>
    (objOrMsg: Record<string, unknown> | string, msg?: string) => {
      const n = LOG_LEVELS[name];
      if (n < min) return;
      const fields = typeof objOrMsg === "string" ? {} : objOrMsg;
      const text = typeof objOrMsg === "string" ? objOrMsg : msg;
      let line: string;
      try {
        line = JSON.stringify({ level: n, time: Date.now(), ...bindings, ...fields, msg: text });
      } catch {
        line = JSON.stringify({ level: n, time: Date.now(), msg: text });
      }
      write(`${line}\n`);
    };
  return {
    trace: make("trace"),
    debug: make("debug"),
    info: make("info"),
    warn: make("warn"),
    error: make("error"),
    child: (b) => createJsonLogger(level, write, { ...bindings, ...b }),
  } as Logger;
}
