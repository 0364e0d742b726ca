/**
 * Records every line the quick start prints with `console.log` (and still prints it), so
 * `main.ts` can check the output without changing the snippet it shares with the README.
 */
export const printed: string[] = [];

const log = console.log.bind(console);
console.log = (...args: unknown[]) => {
  printed.push(args.map((a) => (typeof a === "string" ? a : JSON.stringify(a))).join(" "));
  log(...args);
};
