import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BrowserContext, chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, KEY, startHarness } from "./helpers.js";

// In CI the browser is a required part: a missing one fails the test instead of skipping it.
const executable =
  process.env.FLOTILLA_CHROMIUM ??
  (existsSync("/usr/bin/chromium") ? "/usr/bin/chromium" : undefined);
const required = process.env.CI === "true";
const canRun = Boolean(executable && existsSync(executable));

describe.skipIf(!canRun && !required)("dashboard in headless Chromium", () => {
  let h: Harness;
  let browser: BrowserContext;
  let profile: string;
  beforeAll(async () => {
    if (!canRun)
      throw new Error(
        `Chromium not found (FLOTILLA_CHROMIUM=${process.env.FLOTILLA_CHROMIUM ?? "unset"})`,
      );
    h = await startHarness();
    profile = mkdtempSync(join(tmpdir(), "flotilla-chromium-"));
    // A fresh profile directory per run (Playwright passes it as --user-data-dir).
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: executable!,
      headless: true,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
  });
  afterAll(async () => {
    await browser?.close();
    await h?.close();
    if (profile) rmSync(profile, { recursive: true, force: true });
  });

  it("loads, goes live over WebSocket and shows a submitted task", async () => {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    const external: string[] = [];
    page.on("request", (r) => {
      if (!r.url().startsWith(h.url) && !r.url().startsWith(h.url.replace("http", "ws")))
        external.push(r.url());
    });
    await page.goto(`${h.url}/dashboard?api_key=${KEY}`);
    await page.waitForSelector("#conn.live", { timeout: 10_000 });
    const res = await h.req("/tasks/submit", {
      json: {
        type: "tool_call",
        payload: { tool_name: "echo", tool_input: "from the browser test" },
      },
    });
    const { task_id } = (await res.json()) as { task_id: string };
    const row = page.locator(`tr[data-task-id="${task_id}"]`);
    await row.waitFor({ timeout: 10_000 });
    await expect.poll(async () => row.textContent(), { timeout: 10_000 }).toContain("succeeded");
    expect(await page.locator("#workers").textContent()).toContain("tool-call");
    expect(page.url()).not.toContain(KEY); // the key is removed from the address bar
    expect(errors).toEqual([]);
    expect(external).toEqual([]);
    await page.close();
  });

  it("serves /docs (Swagger UI) offline from the server's own assets", async () => {
    const page = await browser.newPage();
    const external: string[] = [];
    page.on("request", (r) => {
      if (!r.url().startsWith(h.url)) external.push(r.url());
    });
    await page.goto(`${h.url}/docs`);
    await page.waitForSelector(".swagger-ui .opblock", { timeout: 15_000 });
    expect(await page.locator("#swagger-ui").textContent()).toContain(
      "/api/v2/orchestrator/tasks/submit",
    );
    expect(external.filter((u) => !u.startsWith("data:"))).toEqual([]);
    await page.close();
  });
});
