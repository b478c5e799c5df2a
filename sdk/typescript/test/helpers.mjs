// Test helpers: a local HTTP server whose answers a test scripts, and the vectors.
import { readFileSync } from "node:fs";
import { createServer } from "node:http";

export function load(name) {
  return JSON.parse(readFileSync(new URL(`../../vectors/${name}`, import.meta.url), "utf8"));
}

/** Serves `handler(req) -> {status, headers, body}` on host:0; resolves to {url, port, requests, close}. */
export async function scripted(handler, host = "127.0.0.1", port = 0) {
  const requests = [];
  const server = createServer((req, res) => {
    requests.push({ method: req.method, url: req.url, headers: req.headers });
    const { status = 200, headers = {}, body = "" } = handler(req);
    res.writeHead(status, headers);
    res.end(body);
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, resolve);
  });
  const actual = server.address().port;
  return {
    url: `http://${host}:${actual}`,
    port: actual,
    requests,
    server,
    close: () => new Promise((r) => server.close(r)).then(() => server.closeAllConnections?.()),
  };
}
