import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

const ASSETS: Record<string, string> = {
  "swagger-ui.css": "text/css; charset=utf-8",
  "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
  "swagger-ui-standalone-preset.js": "text/javascript; charset=utf-8",
  "favicon-32x32.png": "image/png",
};

let distDir: string | undefined;
const cache = new Map<string, Uint8Array<ArrayBuffer>>();

function swaggerDir(): string {
  if (!distDir) {
    const base = typeof __filename === "string" ? __filename : import.meta.url;
    const req = createRequire(base);
    distDir = dirname(req.resolve("swagger-ui-dist/package.json"));
  }
  return distDir;
}

/** One Swagger UI asset from `swagger-ui-dist`, served by the server itself (works offline). */
export async function docsAsset(
  name: string,
): Promise<{ body: Uint8Array<ArrayBuffer>; type: string } | undefined> {
  const type = ASSETS[name];
  if (!type) return undefined;
  let body = cache.get(name);
  if (!body) {
    body = new Uint8Array(await readFile(join(swaggerDir(), name)));
    cache.set(name, body);
  }
  return { body, type };
}

/** The `/docs` page: Swagger UI on `/openapi.json`, with local assets only. */
export function docsHtml(): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Flotilla API</title>
<link rel="icon" href="/docs/assets/favicon-32x32.png">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/swagger-ui-standalone-preset.js"></script>
<script>
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
  layout: "StandaloneLayout"
});
</script>
</body>
</html>`;
}
