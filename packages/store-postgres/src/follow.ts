import type { EventFollow, Logger } from "@flotilla/core";
import type { Notifications } from "./notifications.js";

/** The topic on which a writer sharing the schema hints that it appended events. @internal */
export const EVENTS_TOPIC = "events";
/** The topic on which a writer sharing the schema hints that it recorded usage. @internal */
export const USAGE_TOPIC = "usage";

/** What {@link LogFollower} reads with. @internal */
export interface FollowReads<T> {
  /** The last event's `seq` now (0 when none). */
  last(): Promise<number>;
  /**
   * Up to `limit` rows after `after` in order: the others' items among them, the
   * `seq` of the last row read and how many were read (this process's rows count, so they
   * are passed over once).
   */
  after(after: number, limit: number): Promise<{ items: T[]; last: number; rows: number }>;
}

const PAGE = 500;

/**
 * One reader of an append-only table of the schema (the event log, the usage ledger) shared
 * by every subscriber of a store: runs while
 * somebody follows, reads what was committed after its position when a writer hints (a
 * notification) and every `pollMs` (hints are not guaranteed), and after the listening
 * connection comes back. Event numbers grow in commit order (appends take turns), so
 * reading after a position misses nothing. @internal
 */
export class LogFollower<T> {
  readonly #reads: FollowReads<T>;
  readonly #notifications: Notifications;
  readonly #topic: string;
  readonly #pollMs: number;
  readonly #logger: Logger;
  readonly #listeners = new Set<(items: readonly T[]) => void>();
  #after: number | undefined;
  #starting: Promise<void> | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #reading = false;
  #again = false;
  #off: Array<() => void> = [];

  constructor(
    reads: FollowReads<T>,
    notifications: Notifications,
    topic: string,
    pollMs: number,
    logger: Logger,
  ) {
    this.#reads = reads;
    this.#notifications = notifications;
    this.#topic = topic;
    this.#pollMs = pollMs;
    this.#logger = logger;
  }

  follow(listener: (items: readonly T[]) => void): EventFollow {
    this.#listeners.add(listener);
    if (this.#listeners.size === 1) this.#start();
    const ready = this.#starting ?? Promise.resolve();
    return {
      ready,
      close: () => {
        if (this.#listeners.delete(listener) && this.#listeners.size === 0) this.#stop();
      },
    };
  }

  /** Stops reading (the store closes). */
  stop(): void {
    this.#listeners.clear();
    this.#stop();
  }

  #start(): void {
    this.#off = [
      this.#notifications.on(this.#topic, () => void this.#pull()),
      this.#notifications.onReconnect(() => void this.#pull()),
    ];
    // Listening first (a hint sent after `ready` is heard); it reconnects by itself, and
    // polling covers what a lost connection missed.
    const listening = this.#notifications.start().catch(() => {});
    this.#after = undefined;
    // The position is where the log ends now: a subscriber reads the history after `ready`.
    const starting: Promise<void> = listening
      .then(() => this.#reads.last())
      .then(
        (last) => {
          if (this.#starting === starting) this.#after ??= last;
        },
        (err: unknown) =>
          this.#logger.warn(
            { err: String(err), log: this.#topic },
            "following: cannot read the end",
          ),
      );
    this.#starting = starting;
    void starting.finally(() => {
      if (this.#starting === starting) this.#starting = undefined;
      this.#arm();
    });
  }

  #stop(): void {
    for (const off of this.#off) off();
    this.#off = [];
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#starting = undefined;
  }

  #arm(): void {
    if (this.#timer || this.#listeners.size === 0) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#pull().finally(() => this.#arm());
    }, this.#pollMs);
    this.#timer.unref?.();
  }

  async #pull(): Promise<void> {
    if (this.#listeners.size === 0 || this.#starting) return;
    if (this.#reading) {
      this.#again = true;
      return;
    }
    this.#reading = true;
    try {
      do {
        this.#again = false;
        // A start that could not read the log's end starts from where it is at the first read.
        this.#after ??= await this.#reads.last();
        for (;;) {
          const { items, last, rows } = await this.#reads.after(this.#after, PAGE);
          this.#after = Math.max(this.#after, last);
          if (items.length > 0) this.#deliver(items);
          if (rows < PAGE) break;
        }
      } while (this.#again && this.#listeners.size > 0);
    } catch (err) {
      this.#logger.warn({ err: String(err), log: this.#topic }, "following: reading failed");
    } finally {
      this.#reading = false;
    }
  }

  #deliver(items: readonly T[]): void {
    for (const l of [...this.#listeners]) {
      try {
        l(items);
      } catch (err) {
        this.#logger.error({ err: String(err) }, "a follower of the shared schema threw");
      }
    }
  }
}
