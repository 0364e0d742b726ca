/** A log method: pino's `(obj, msg)` and `(msg)` call shapes. */
export interface LogFn {
  (obj: Record<string, unknown>, msg?: string): void;
  (msg: string): void;
}

/**
 * A pino-compatible logger. Pass a pino instance (or anything with these methods) to get
 * Flotilla's structured logs; the default is silent.
 *
 * @example
 * ```ts
 * import pino from "pino";
 * const orchestrator = new Orchestrator({ logger: pino() });
 * ```
 */
export interface Logger {
  trace: LogFn;
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  /** Returns a logger that adds `bindings` to every line. */
  child(bindings: Record<string, unknown>): Logger;
}

const noop = () => {};

/** A logger that drops everything (the default). */
export const silentLogger: Logger = {
  trace: noop,
  debug: noop,
  info: noop,
  warn: noop,
  error: noop,
  child: () => silentLogger,
};
