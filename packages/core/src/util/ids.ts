import { randomUUID } from "node:crypto";

/** A random UUID v4 (task ids, lease ids). */
export function newId(): string {
  return randomUUID();
}
