import { UnrecoverableError } from "../errors.js";

const FUNCTIONS: Record<string, (...args: number[]) => number> = {
  abs: Math.abs,
  sqrt: Math.sqrt,
  cbrt: Math.cbrt,
  min: Math.min,
  max: Math.max,
  round: Math.round,
  floor: Math.floor,
  ceil: Math.ceil,
  trunc: Math.trunc,
  sign: Math.sign,
  log: Math.log,
  log2: Math.log2,
  log10: Math.log10,
  exp: Math.exp,
  sin: Math.sin,
  cos: Math.cos,
  tan: Math.tan,
  asin: Math.asin,
  acos: Math.acos,
  atan: Math.atan,
  atan2: Math.atan2,
  pow: Math.pow,
  hypot: Math.hypot,
};
const CONSTANTS: Record<string, number> = { pi: Math.PI, e: Math.E, tau: 2 * Math.PI };

/**
 * Evaluates an arithmetic expression with a small recursive-descent parser (no `eval`):
 * numbers, `+ - * / % ^` (`^` and `**` are powers, right-associative), parentheses, unary
 * minus, the constants `pi`, `e`, `tau`, the given `variables`, and the functions of
 * `Math` listed in {@link MATH_FUNCTIONS}. Throws `UnrecoverableError` naming the position
 * of a syntax error.
 *
 * @example
 * ```ts
 * evaluateMath("2 * (3 + 4) ^ 2"); // 98
 * evaluateMath("max(x, 10) / 4", { x: 42 }); // 10.5
 * ```
 */
export function evaluateMath(expression: string, variables: Record<string, number> = {}): number {
  if (expression.length > 10_000)
    throw new UnrecoverableError("expression longer than 10000 characters");
  let pos = 0;
  let depth = 0;
  const src = expression;
  const fail = (msg: string): never => {
    throw new UnrecoverableError(`math: ${msg} at position ${pos} in "${src.slice(0, 200)}"`);
  };
  const skip = () => {
    while (pos < src.length && /\s/.test(src[pos]!)) pos++;
  };
  const peek = (s: string) => {
    skip();
    return src.startsWith(s, pos);
  };
  const eat = (s: string) => {
    if (peek(s)) {
      pos += s.length;
      return true;
    }
    return false;
  };

  const primary = (): number => {
    skip();
    if (++depth > 200) fail("expression nested too deeply");
    try {
      if (eat("(")) {
        const v = additive();
        if (!eat(")")) fail("expected ')'");
        return v;
      }
      const num = /^(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?/.exec(src.slice(pos));
      if (num) {
        pos += num[0].length;
        return Number(num[0]);
      }
      const id = /^[A-Za-z_][A-Za-z0-9_]*/.exec(src.slice(pos));
      if (id) {
        const name = id[0];
        pos += name.length;
        if (eat("(")) {
          const fn = Object.hasOwn(FUNCTIONS, name) ? FUNCTIONS[name] : undefined;
          if (!fn) fail(`unknown function "${name}" (known: ${Object.keys(FUNCTIONS).join(", ")})`);
          const args: number[] = [];
          if (!eat(")")) {
            do args.push(additive());
            while (eat(","));
            if (!eat(")")) fail("expected ')' after arguments");
          }
          return fn!(...args);
        }
        if (Object.hasOwn(variables, name)) return variables[name]!;
        if (Object.hasOwn(CONSTANTS, name)) return CONSTANTS[name]!;
        return fail(`unknown name "${name}"`);
      }
      return fail(pos >= src.length ? "unexpected end of expression" : `unexpected "${src[pos]}"`);
    } finally {
      depth--;
    }
  };
  const unary = (): number => {
    if (eat("-")) return -unary();
    if (eat("+")) return unary();
    return power();
  };
  const power = (): number => {
    const base = primary();
    if (eat("**") || eat("^")) return base ** unary();
    return base;
  };
  const multiplicative = (): number => {
    let v = unary();
    for (;;) {
      if (peek("**")) break;
      if (eat("*")) v *= unary();
      else if (eat("/")) v /= unary();
      else if (eat("%")) v %= unary();
      else break;
    }
    return v;
  };
  const additive = (): number => {
    let v = multiplicative();
    for (;;) {
      if (eat("+")) v += multiplicative();
      else if (eat("-")) v -= multiplicative();
      else break;
    }
    return v;
  };

  const value = additive();
  skip();
  if (pos < src.length) fail(`unexpected "${src[pos]}"`);
  return value;
}

/** Function names {@link evaluateMath} knows. */
export const MATH_FUNCTIONS: readonly string[] = Object.keys(FUNCTIONS);
