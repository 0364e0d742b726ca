/**
 * The partition of a task id among `partitions`: FNV-1a of its UTF-16 code units, so every
 * instance (and every version) puts a task in the same one.
 *
 * @example
 * ```ts
 * partitionOf("3f1c…", 64); // 0…63
 * ```
 */
export function partitionOf(id: string, partitions: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) {
    h ^= id.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % partitions;
}
