// Open js/browser/idb.html in headless Chromium and report what it found:
// `node js/browser/run.js` (or `make test-js-browser`). Needs Chromium: `chromium` on
// PATH, or CHROMIUM=/path/to/it (Debian: apt-get install chromium).

import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { rm } from "node:fs/promises";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url)); // js/
const TYPES = { ".js": "text/javascript", ".html": "text/html", ".json": "application/json" };
const TIMEOUT_MS = 60_000;

function serve(onResult) {
  const server = createServer((req, res) => {
    if (req.method === "POST" && req.url === "/result") {
      let body = "";
      req.on("data", (chunk) => (body += chunk));
      req.on("end", () => {
        res.end("ok");
        onResult(JSON.parse(body));
      });
      return;
    }
    const path = normalize(join(ROOT, decodeURIComponent(new URL(req.url, "http://x").pathname)));
    try {
      if (!path.startsWith(ROOT)) throw new Error("outside js/");
      const data = readFileSync(path);
      res.writeHead(200, { "content-type": TYPES[extname(path)] ?? "application/octet-stream" });
      res.end(data);
    } catch {
      res.writeHead(404).end();
    }
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

let finish;
const done = new Promise((resolve) => (finish = resolve));
const server = await serve((results) => finish(results));
const profile = mkdtempSync(join(tmpdir(), "concord-chromium-"));
const url = `http://127.0.0.1:${server.address().port}/browser/idb.html`;
const browser = spawn(
  process.env.CHROMIUM ?? "chromium",
  ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", `--user-data-dir=${profile}`, url],
  // Its own process group, so that ending it ends its helper processes too.
  { stdio: ["ignore", "ignore", "pipe"], detached: true },
);
let stderr = "";
browser.stderr.on("data", (chunk) => (stderr += chunk));
browser.on("error", (err) => finish({ error: `cannot start Chromium: ${err.message}` }));
const timer = setTimeout(
  () => finish({ error: `no result in ${TIMEOUT_MS} ms\n${stderr.slice(-2000)}` }),
  TIMEOUT_MS,
);
const results = await done;
clearTimeout(timer);
if (browser.exitCode === null && browser.pid !== undefined) {
  const exited = new Promise((resolve) => browser.once("exit", resolve));
  process.kill(-browser.pid, "SIGTERM");
  await exited;
}
server.close();
try {
  // Helper processes may still be flushing the profile for a moment.
  await rm(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 300 });
} catch (err) {
  console.error(`could not remove ${profile}: ${err.message}`);
}

if (!Array.isArray(results)) {
  console.error(results.error);
  process.exit(1);
}
for (const r of results) console.log(`${r.ok ? "ok" : "not ok"} - ${r.name}${r.ok ? "" : `\n${r.error}`}`);
const passed = results.filter((r) => r.ok).length;
console.log(`${passed} passed, ${results.length - passed} failed`);
process.exit(passed === results.length && results.length > 0 ? 0 : 1);
