// The example plugin as a process: start-up, logs, BERTH_PORT, and SIGTERM draining.

import { test } from "node:test";
import assert from "node:assert/strict";
import { Child, RawConnection, delay, errorCode, freePort, json, request } from "./support.js";

const example = `${__dirname}/../example/main.js`;
const hang = `${__dirname}/fixture-hang.js`;

async function start(script: string, env: Record<string, string> = {}): Promise<{ child: Child; port: number }> {
  const port = await freePort();
  const child = new Child(script, { BERTH_PORT: String(port), BERTH_LOG: "info", ...env });
  const line = await child.waitForLog("listening");
  assert.equal(line.port, port);
  return { child, port };
}

test("the example listens on BERTH_PORT, serves its capabilities and logs JSON lines", async () => {
  const { child, port } = await start(example);
  try {
    let r = await request(port, "POST", "/v1/invoke/greet", '{"name":"Berth"}', [["Berth-Request-Id", "req-ex"]]);
    assert.equal(r.status, 200);
    assert.deepEqual(json(r), { message: "Hello, Berth!" });
    r = await request(port, "POST", "/v1/invoke/greet", "{}");
    assert.deepEqual(json(r), { message: "Hello, world!" });
    r = await request(port, "POST", "/v1/invoke/greet", '{"name": 5}');
    assert.equal(errorCode(r), "invalid_input");
    // maxLength counts characters: 200 emoji (400 UTF-16 units) fit, 257 do not.
    r = await request(port, "POST", "/v1/invoke/greet", JSON.stringify({ name: "\u{1F600}".repeat(200) }));
    assert.equal(r.status, 200);
    r = await request(port, "POST", "/v1/invoke/greet", JSON.stringify({ name: "\u{1F600}".repeat(257) }));
    assert.equal(errorCode(r), "invalid_input");
    r = await request(port, "POST", "/v1/invoke/sleep", '{"ms": 3000}', [["Berth-Deadline-Ms", "100"]]);
    assert.equal(r.status, 504);
    r = await request(port, "POST", "/v1/invoke/sleep", '{"ms": 5}');
    assert.deepEqual(json(r), { slept_ms: 5 });
    r = await request(port, "POST", "/v1/hooks/before_command", '{"event":{"command":"rm -rf /","args":[],"cwd":"/"}}');
    assert.equal(json(r).action, "veto");
    r = await request(port, "POST", "/v1/hooks/before_command", '{"event":{"command":"git push --force","args":[],"cwd":"/"}}');
    assert.deepEqual(json(r), { action: "modify", event: { command: "git push --force-with-lease", args: [], cwd: "/" } });
    r = await request(port, "GET", "/v1/describe");
    assert.deepEqual(json(r), {
      name: "ts-hello",
      version: "0.1.0",
      capabilities: [{ name: "greet" }, { name: "sleep" }],
      hooks: [{ name: "before_command", mode: "filter" }],
    });
    const lines = child.logLines();
    const greet = lines.find((l) => l.request_id === "req-ex");
    assert.ok(greet, child.stdout);
    assert.match(greet.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.equal(greet.level, "INFO");
    assert.equal(typeof greet.message, "string");
  } finally {
    child.process.kill("SIGKILL");
  }
});

test("SIGTERM lets a request whose body is still arriving finish, then exits 0", async () => {
  const { child, port } = await start(example);
  const c = await RawConnection.open(port);
  const body = '{"name":"draining"}';
  c.write(`POST /v1/invoke/greet HTTP/1.1\r\nHost: p\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 8)}`);
  await delay(150);
  child.process.kill("SIGTERM");
  await child.waitForLog("shutting down: finishing requests in flight");
  await delay(150);
  assert.equal(child.process.exitCode, null, "exited with a request in flight");
  // New connections are refused while draining.
  await assert.rejects(RawConnection.open(port));
  c.write(body.slice(8));
  const r = await c.read();
  assert.equal(r.status, 200);
  assert.deepEqual(json(r), { message: "Hello, draining!" });
  const answered = Date.now();
  const exit = await child.exited;
  assert.deepEqual(exit, { code: 0, signal: null });
  assert.ok(Date.now() - answered < 2000, "the process waited for the drain timeout after its last answer");
  await child.waitForLog("stopped");
});

test("SIGTERM closes idle keep-alive connections at once and exits 0", async () => {
  const { child, port } = await start(example);
  const c = await RawConnection.open(port);
  const r = await c.request("GET", "/healthz");
  assert.equal(r.status, 200);
  const started = Date.now();
  child.process.kill("SIGTERM");
  const exit = await child.exited;
  assert.equal(exit.code, 0);
  assert.ok(Date.now() - started < 2000, `took ${Date.now() - started} ms`);
  await c.waitClosed();
});

test("SIGINT drains like SIGTERM", async () => {
  const { child } = await start(example);
  child.process.kill("SIGINT");
  assert.equal((await child.exited).code, 0);
});

test("a request still running at the drain timeout does not keep the process alive", async () => {
  const { child, port } = await start(hang, { DRAIN_MS: "400" });
  const c = await RawConnection.open(port);
  c.write("POST /v1/invoke/hang HTTP/1.1\r\nHost: p\r\nContent-Length: 2\r\n\r\n{}");
  await delay(100);
  const started = Date.now();
  child.process.kill("SIGTERM");
  const exit = await child.exited;
  const took = Date.now() - started;
  assert.equal(exit.code, 0);
  assert.ok(took >= 350 && took < 3000, `exited after ${took} ms`);
  const warned = child.logLines().find((l) => l.level === "WARN");
  assert.ok(warned, child.stdout);
  c.close();
});

test("a BERTH_PORT that is not a port is a clear error and exit 1", async () => {
  for (const value of ["http", "0", "65536", "-1", "80a"]) {
    const child = new Child(example, { BERTH_PORT: value });
    const exit = await child.exited;
    assert.equal(exit.code, 1, value);
    const line = child.logLines().find((l) => l.level === "ERROR");
    assert.ok(line, child.stdout);
    assert.match(line.message, /BERTH_PORT/);
    assert.match(line.message, /1-65535/);
  }
});

test("a port already taken is exit 1", async () => {
  const { child: first, port } = await start(example);
  try {
    const second = new Child(example, { BERTH_PORT: String(port) });
    assert.equal((await second.exited).code, 1);
    assert.match(second.stdout, /could not listen/);
  } finally {
    first.process.kill("SIGKILL");
  }
});
