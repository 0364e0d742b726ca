import { createHash } from "node:crypto";
import type { Logger } from "@flotilla/core";
import pg from "pg";

/**
 * Messages between the instances sharing a schema, over PostgreSQL's LISTEN/NOTIFY: one
 * listening connection per store (TCP keepalives on), reconnected after a lost connection
 * or a database restart. Messages are hints — one sent while a listener was reconnecting
 * is not delivered again — so whoever acts on them also polls; `onReconnect` says when to
 * look again at once. Made by `PostgresStore.notifications()`.
 *
 * @example
 * ```ts
 * const store = new PostgresStore({ connectionString: process.env.DATABASE_URL, exclusive: false });
 * await store.open();
 * const n = store.notifications();
 * const off = n.on("wake", (payload) => console.log("woken by", payload));
 * await n.start();
 * await n.notify("wake", "api-1");
 * off();
 * ```
 */
export class Notifications {
  /** The channel (one per schema: a hash of its name, so any schema name fits). */
  readonly channel: string;
  readonly #config: () => pg.ClientConfig;
  readonly #send: () => pg.Pool;
  readonly #logger: Logger;
  readonly #where: string;
  readonly #listeners = new Map<string, Set<(payload: string) => void>>();
  readonly #reconnected = new Set<() => void>();
  #client: pg.Client | undefined;
  #running = false;
  #retry: ReturnType<typeof setTimeout> | undefined;
  #backoffMs = 100;
  #connecting: Promise<void> | undefined;

  /** @internal */
  constructor(
    schema: string,
    config: () => pg.ClientConfig,
    send: () => pg.Pool,
    where: string,
    logger: Logger,
  ) {
    this.channel = `flotilla_${createHash("sha256").update(schema).digest("hex").slice(0, 16)}`;
    this.#config = config;
    this.#send = send;
    this.#where = where;
    this.#logger = logger;
  }

  /**
   * Calls `listener` with the payload of every message on `topic` (from any instance, this
   * one included). Returns a remover.
   *
   * @example
   * ```ts
   * const off = notifications.on("partitions", () => void leases.renew());
   * ```
   */
  on(topic: string, listener: (payload: string) => void): () => void {
    let set = this.#listeners.get(topic);
    if (!set) {
      set = new Set();
      this.#listeners.set(topic, set);
    }
    set.add(listener);
    return () => set.delete(listener);
  }

  /**
   * Calls `listener` each time the listening connection is back after being lost (messages
   * sent meanwhile were missed: look again). Returns a remover.
   *
   * @example
   * ```ts
   * notifications.onReconnect(() => void leases.renew());
   * ```
   */
  onReconnect(listener: () => void): () => void {
    this.#reconnected.add(listener);
    return () => this.#reconnected.delete(listener);
  }

  /**
   * Sends `payload` (at most 7000 bytes) on `topic` to every instance listening, after the
   * sending transaction (here: at once) commits.
   *
   * @example
   * ```ts
   * await notifications.notify("wake", JSON.stringify({ partition: 7 }));
   * ```
   */
  async notify(topic: string, payload = ""): Promise<void> {
    const message = `${topic}\n${payload}`;
    if (Buffer.byteLength(message) > 7000) {
      throw new RangeError(`notification on ${topic}: payload over 7000 bytes`);
    }
    await this.#send().query("SELECT pg_notify($1, $2)", [this.channel, message]);
  }

  /**
   * Connects the listening connection (resolves once it listens, or rejects when the
   * database cannot be reached; it keeps trying in the background until `stop()`).
   *
   * @example
   * ```ts
   * await notifications.start();
   * ```
   */
  async start(): Promise<void> {
    if (this.#running) return this.#connecting;
    this.#running = true;
    return this.#connect();
  }

  /**
   * Closes the listening connection and stops reconnecting.
   *
   * @example
   * ```ts
   * await notifications.stop();
   * ```
   */
  async stop(): Promise<void> {
    this.#running = false;
    if (this.#retry) clearTimeout(this.#retry);
    this.#retry = undefined;
    const client = this.#client;
    this.#client = undefined;
    await this.#connecting?.catch(() => {});
    await client?.end().catch(() => {});
  }

  #connect(): Promise<void> {
    this.#connecting = this.#open().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  async #open(): Promise<void> {
    const client = new pg.Client({ ...this.#config(), keepAlive: true });
    let lost = false;
    const onLost = (err?: Error) => {
      if (lost) return;
      lost = true;
      if (this.#client === client) this.#client = undefined;
      client.end().catch(() => {});
      if (!this.#running) return;
      this.#logger.warn(
        { database: this.#where, err: err?.message },
        "notification connection lost; reconnecting",
      );
      this.#later();
    };
    client.on("error", onLost);
    client.on("end", () => onLost());
    client.on("notification", (msg) => {
      if (msg.channel !== this.channel || msg.payload === undefined) return;
      const cut = msg.payload.indexOf("\n");
      const topic = cut < 0 ? msg.payload : msg.payload.slice(0, cut);
      const payload = cut < 0 ? "" : msg.payload.slice(cut + 1);
      for (const l of [...(this.#listeners.get(topic) ?? [])]) {
        try {
          l(payload);
        } catch (err) {
          this.#logger.error({ topic, err: String(err) }, "a notification listener threw");
        }
      }
    });
    try {
      await client.connect();
      await client.query(`LISTEN "${this.channel}"`);
    } catch (err) {
      onLost(err as Error);
      throw err;
    }
    if (!this.#running) {
      lost = true;
      await client.end().catch(() => {});
      return;
    }
    const again = this.#client === undefined && this.#backoffMs > 100;
    this.#client = client;
    this.#backoffMs = 100;
    if (again) {
      for (const l of [...this.#reconnected]) {
        try {
          l();
        } catch (err) {
          this.#logger.error({ err: String(err) }, "a reconnect listener threw");
        }
      }
    }
  }

  /** Tries again after a growing delay (100 ms doubling to 2 s). */
  #later(): void {
    if (this.#retry || !this.#running) return;
    const wait = this.#backoffMs;
    this.#backoffMs = Math.min(2000, this.#backoffMs * 2);
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      if (!this.#running || this.#connecting) return;
      this.#connect().catch(() => {});
    }, wait);
    this.#retry.unref?.();
  }
}
