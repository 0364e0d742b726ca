// The same-stack ceiling for the HTTP scenario: a one-route Hono app on @hono/node-server,
// in its own process. Prints "listening <url>" once it accepts connections.
import { serve } from "@hono/node-server";
import { Hono } from "hono";

const app = new Hono();
app.get("/hello", (c) => c.json({ hello: "world" }));
app.post("/hello", async (c) => {
  await c.req.json();
  return c.json({ hello: "world" });
});
const server = serve({ fetch: app.fetch, hostname: "127.0.0.1", port: 0 }, (info) => {
  console.log(`listening http://127.0.0.1:${info.port}`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
