/**
 * Incremental dependency bookkeeping: for each waiting task, how many dependencies are
 * still unresolved; for each unfinished task, who waits on it. A completion touches only
 * its own dependents (no graph rebuild), so a 10k-node DAG resolves in linear time overall.
 *
 * @example
 * ```ts
 * const dag = new DependencyTracker();
 * dag.add("b", ["a"]);
 * dag.resolve("a", true, () => "skip"); // { ready: ["b"], skip: [] }
 * ```
 */
export class DependencyTracker {
  readonly #remaining = new Map<string, number>();
  readonly #dependents = new Map<string, string[]>();

  /** Tasks waiting on at least one dependency. */
  get waiting(): number {
    return this.#remaining.size;
  }

  /**
   * Registers `taskId` waiting on `unresolved` (dependencies not finished yet).
   *
   * @example
   * ```ts
   * dag.add("report", ["fetch", "parse"]);
   * dag.remaining("report"); // 2
   * ```
   */
  add(taskId: string, unresolved: readonly string[]): void {
    if (unresolved.length === 0) return;
    this.#remaining.set(taskId, unresolved.length);
    for (const dep of unresolved) {
      const list = this.#dependents.get(dep);
      if (list) list.push(taskId);
      else this.#dependents.set(dep, [taskId]);
    }
  }

  /**
   * Unresolved dependency count of a task (0 when ready or unknown).
   *
   * @example
   * ```ts
   * dag.add("b", ["a"]);
   * dag.remaining("b"); // 1
   * ```
   */
  remaining(taskId: string): number {
    return this.#remaining.get(taskId) ?? 0;
  }

  /**
   * Whether anything waits on `taskId`.
   *
   * @example
   * ```ts
   * dag.add("b", ["a"]);
   * dag.hasDependents("a"); // true
   * ```
   */
  hasDependents(taskId: string): boolean {
    return this.#dependents.has(taskId);
  }

  /**
   * `taskId` finished. Dependents whose policy accepts the outcome (`ok`, or policy `run`)
   * lose one unresolved dependency and are returned in `ready` when none is left; the rest
   * are returned in `skip` (the caller skips them and resolves them in turn).
   *
   * @example
   * ```ts
   * dag.add("b", ["a"]);
   * dag.add("c", ["a"]);
   * // "a" failed: "b" skips on failure, "c" runs anyway
   * dag.resolve("a", false, (id) => (id === "b" ? "skip" : "run")); // { ready: ["c"], skip: ["b"] }
   * ```
   */
  resolve(
    taskId: string,
    ok: boolean,
    policyOf: (dependentId: string) => "skip" | "run" | undefined,
  ): { ready: string[]; skip: string[] } {
    const ready: string[] = [];
    const skip: string[] = [];
    const list = this.#dependents.get(taskId);
    if (!list) return { ready, skip };
    this.#dependents.delete(taskId);
    for (const dep of list) {
      const left = this.#remaining.get(dep);
      if (left === undefined) continue;
      const policy = policyOf(dep);
      if (policy === undefined) {
        this.#remaining.delete(dep);
        continue;
      }
      if (!ok && policy === "skip") {
        this.#remaining.delete(dep);
        skip.push(dep);
        continue;
      }
      if (left <= 1) {
        this.#remaining.delete(dep);
        ready.push(dep);
      } else this.#remaining.set(dep, left - 1);
    }
    return { ready, skip };
  }

  /**
   * The tasks something waits on.
   *
   * @example
   * ```ts
   * dag.add("b", ["a"]);
   * [...dag.awaited()]; // ["a"]
   * ```
   */
  awaited(): IterableIterator<string> {
    return this.#dependents.keys();
  }

  /**
   * Forgets a task that ended by other means (cancelled while waiting).
   *
   * @example
   * ```ts
   * dag.forget("b"); // "b" was cancelled while it waited
   * ```
   */
  forget(taskId: string): void {
    this.#remaining.delete(taskId);
  }

  /**
   * Forgets everything.
   *
   * @example
   * ```ts
   * dag.clear();
   * dag.waiting; // 0
   * ```
   */
  clear(): void {
    this.#remaining.clear();
    this.#dependents.clear();
  }
}
