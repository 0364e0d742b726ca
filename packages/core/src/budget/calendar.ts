const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", {
      timeZone,
      hourCycle: "h23",
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
    });
    formatters.set(timeZone, f);
  }
  return f;
}

/**
 * Whether `timeZone` is an IANA zone name the runtime knows (`Europe/Berlin`, `UTC`).
 *
 * @example
 * ```ts
 * isTimeZone("America/New_York"); // true
 * ```
 */
export function isTimeZone(timeZone: string): boolean {
  try {
    formatter(timeZone);
    return true;
  } catch {
    return false;
  }
}

interface LocalParts {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
}

function localParts(ms: number, timeZone: string): LocalParts {
  const out: Record<string, number> = {};
  for (const p of formatter(timeZone).formatToParts(ms)) {
    if (p.type !== "literal") out[p.type] = Number(p.value);
  }
  return out as unknown as LocalParts;
}

/** Local wall time minus UTC at instant `ms`, in ms. */
function offsetAt(ms: number, timeZone: string): number {
  const p = localParts(ms, timeZone);
  const asUtc = Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second);
  return asUtc - Math.floor(ms / 1000) * 1000;
}

/** The first instant of the local calendar day `y-m-d` (month 1-based; overflow allowed). */
function startOfLocalDay(year: number, month: number, day: number, timeZone: string): number {
  const wall = Date.UTC(year, month - 1, day);
  let t = wall - offsetAt(wall, timeZone);
  t = wall - offsetAt(t, timeZone);
  // Where midnight falls in a DST gap the day starts at the first existing instant after it.
  const want = new Date(wall).toISOString().slice(0, 10);
  if (localDayKey(t, timeZone) < want) t += 3_600_000;
  return t;
}

/** The day `dayKey` answered last, per zone: most calls fall in it. */
const lastDay = new Map<string, { start: number; end: number; day: string }>();

/**
 * The local calendar date of instant `ms` in `timeZone`, as `YYYY-MM-DD`.
 *
 * @example
 * ```ts
 * dayKey(Date.UTC(2026, 0, 1, 23, 30), "Europe/Berlin"); // "2026-01-02"
 * ```
 */
export function dayKey(ms: number, timeZone: string): string {
  // Formatting a date in a zone is slow, and a ledger asks for today's key on every
  // settled attempt: the bounds of the day last answered make the common case a compare.
  const last = lastDay.get(timeZone);
  if (last && ms >= last.start && ms < last.end) return last.day;
  const bounds = dayBounds(ms, timeZone);
  lastDay.set(timeZone, bounds);
  return bounds.day;
}

/** `dayKey` worked out from the zone's wall time at `ms`. */
function localDayKey(ms: number, timeZone: string): string {
  const p = localParts(ms, timeZone);
  return `${String(p.year).padStart(4, "0")}-${String(p.month).padStart(2, "0")}-${String(p.day).padStart(2, "0")}`;
}

/**
 * The local calendar day containing `ms` in `timeZone`: `[start, end)` in ms since epoch.
 * DST-safe: a day is 23 or 25 hours long when the clocks change.
 *
 * @example
 * ```ts
 * const { start, end } = dayBounds(Date.now(), "Europe/Berlin");
 * ```
 */
export function dayBounds(
  ms: number,
  timeZone: string,
): { start: number; end: number; day: string } {
  const p = localParts(ms, timeZone);
  return {
    start: startOfLocalDay(p.year, p.month, p.day, timeZone),
    end: startOfLocalDay(p.year, p.month, p.day + 1, timeZone),
    day: localDayKey(ms, timeZone),
  };
}

/**
 * The local calendar month containing `ms` in `timeZone`: `[start, end)` in ms since epoch
 * (from local midnight of the 1st to local midnight of the next 1st), and its `YYYY-MM`.
 *
 * @example
 * ```ts
 * const { start, end, month } = monthBounds(Date.now(), "Europe/Berlin"); // month: "2026-12"
 * ```
 */
export function monthBounds(
  ms: number,
  timeZone: string,
): { start: number; end: number; month: string } {
  const p = localParts(ms, timeZone);
  return {
    start: startOfLocalDay(p.year, p.month, 1, timeZone),
    end: startOfLocalDay(p.year, p.month + 1, 1, timeZone),
    month: `${String(p.year).padStart(4, "0")}-${String(p.month).padStart(2, "0")}`,
  };
}
