#!/usr/bin/env node
import { createProgram } from "./program.js";

createProgram()
  .parseAsync(process.argv)
  .catch((err: unknown) => {
    process.stderr.write(`flotilla: ${(err as Error)?.message ?? String(err)}\n`);
    process.exit(1);
  });
