import { createHash } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { gzipSync } from "node:zlib";
import { pack } from "tar-stream";

const sha = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

async function tarOf(files: Record<string, string>): Promise<Buffer> {
  const p = pack();
  const chunks: Buffer[] = [];
  p.on("data", (c) => chunks.push(c as Buffer));
  const done = new Promise<void>((r) => p.on("end", () => r()));
  for (const [name, content] of Object.entries(files)) p.entry({ name, mode: 0o644 }, content);
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

/** A registry (Docker Registry HTTP API v2, pull only) on 127.0.0.1 serving one tiny image. */
export interface TestRegistry {
  /** `127.0.0.1:<port>` */
  host: string;
  /** The image it serves, `<host>/flotilla/pulltest:1`. */
  image: string;
  requests: string[];
  close(): Promise<void>;
}

/**
 * The ports the engines accept a plain-HTTP registry on (`FLOTILLA_TEST_REGISTRY_PORTS`,
 * `first-last`, from scripts/test-env.sh: podman trusts only the ones in its registries.conf).
 */
export function registryPorts(): number[] {
  const spec = process.env.FLOTILLA_TEST_REGISTRY_PORTS;
  const m = spec ? /^(\d+)-(\d+)$/.exec(spec) : null;
  if (!m) {
    throw new Error(
      `FLOTILLA_TEST_REGISTRY_PORTS is ${JSON.stringify(spec)}, expected "first-last" (run \`bash scripts/test-env.sh up\`)`,
    );
  }
  const ports: number[] = [];
  for (let p = Number(m[1]); p <= Number(m[2]); p++) ports.push(p);
  return ports;
}

/** Serves the test image on the first free port of `ports` (several test runs may share them). */
export async function startTestRegistry(ports: readonly number[]): Promise<TestRegistry> {
  const layerTar = await tarOf({ "hello.txt": "pulled from a registry\n" });
  const layer = gzipSync(layerTar);
  const config = Buffer.from(
    JSON.stringify({
      architecture: "amd64",
      os: "linux",
      config: { Cmd: ["/hello"] },
      rootfs: { type: "layers", diff_ids: [sha(layerTar)] },
      history: [{ created_by: "flotilla test registry" }],
    }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.docker.distribution.manifest.v2+json",
      config: {
        mediaType: "application/vnd.docker.container.image.v1+json",
        size: config.length,
        digest: sha(config),
      },
      layers: [
        {
          mediaType: "application/vnd.docker.image.rootfs.diff.tar.gzip",
          size: layer.length,
          digest: sha(layer),
        },
      ],
    }),
  );
  const blobs = new Map([
    [sha(config), config],
    [sha(layer), layer],
  ]);
  const requests: string[] = [];
  const server: Server = createServer((req, res) => {
    const url = req.url ?? "/";
    requests.push(`${req.method} ${url}`);
    res.setHeader("Docker-Distribution-API-Version", "registry/2.0");
    const send = (body: Buffer, type: string, digest?: string) => {
      res.setHeader("Content-Type", type);
      res.setHeader("Content-Length", body.length);
      if (digest) res.setHeader("Docker-Content-Digest", digest);
      res.end(req.method === "HEAD" ? undefined : body);
    };
    if (url === "/v2/" || url === "/v2") return send(Buffer.from("{}"), "application/json");
    const m = /^\/v2\/flotilla\/pulltest\/(manifests|blobs)\/([^/?]+)/.exec(url);
    if (m?.[1] === "manifests" && (m[2] === "1" || m[2] === sha(manifest))) {
      return send(manifest, "application/vnd.docker.distribution.manifest.v2+json", sha(manifest));
    }
    const blob = m?.[1] === "blobs" ? blobs.get(decodeURIComponent(m[2] ?? "")) : undefined;
    if (blob) return send(blob, "application/octet-stream", sha(blob));
    res.statusCode = 404;
    send(
      Buffer.from(JSON.stringify({ errors: [{ code: "MANIFEST_UNKNOWN", message: "unknown" }] })),
      "application/json",
    );
  });
  let bound = false;
  for (const port of ports) {
    bound = await new Promise<boolean>((resolve) => {
      const onError = () => resolve(false);
      server.once("error", onError);
      server.listen(port, "127.0.0.1", () => {
        server.off("error", onError);
        resolve(true);
      });
    });
    if (bound) break;
  }
  if (!bound) throw new Error(`no free port for the test registry among ${ports.join(", ")}`);
  const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    host,
    image: `${host}/flotilla/pulltest:1`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
