// Protocol v1 as the SDK serves it, over real sockets: routing and error precedence,
// deadlines, bodies, keep-alive, hooks, request ids and logs.

import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import {
  Context,
  DEFAULT_MAX_BODY_BYTES,
  Logger,
  Plugin,
  PluginError,
  continue_,
  invalidInput,
  modify,
  sleep,
  unprocessable,
  veto,
} from "../src/berth.js";
import { RawConnection, Served, delay, errorCode, json, request, serve } from "./support.js";

let served: Served;
let runs = 0;
const aborted: string[] = [];

function build(logger: Logger): Plugin {
  return new Plugin("test-plugin", "1.2.3", { logger, env: {} })
    .capability("echo", async (input: unknown) => {
      runs += 1;
      return input;
    })
    .capability(
      "strict",
      async (input: { n: number }) => ({ double: input.n * 2 }),
      {
        parse: (body) => {
          const n = (body as { n?: unknown } | null)?.n;
          if (typeof n !== "number") throw invalidInput("n must be a number");
          return { n };
        },
      },
    )
    .capability("parse-throws-plainly", async () => 1, {
      parse: () => {
        throw new TypeError("wrong shape");
      },
    })
    .capability("divide", async (input: { a: number; b: number }) => {
      if (input.b === 0) throw unprocessable("division_by_zero", "division by zero");
      return { quotient: input.a / input.b };
    })
    .capability("crash", async () => {
      throw new TypeError("secret internals");
    })
    .capability("crash-sync", (): number => {
      throw new Error("thrown synchronously");
    })
    .capability("nothing", async () => undefined)
    .capability("slow", async (input: { ms: number; tag: string }, ctx: Context) => {
      try {
        await sleep(input.ms, ctx.signal);
      } catch (e) {
        aborted.push(input.tag);
        throw e;
      }
      return { slept: input.ms };
    })
    .capability("stubborn", async (input: { ms: number }) => {
      await sleep(input.ms);
      return { done: true };
    })
    .capability("remaining", async (_input: unknown, ctx: Context) => ({
      remaining: ctx.remainingMs() ?? null,
      request_id: ctx.requestId ?? null,
      caller: ctx.caller ?? null,
    }))
    .capability("call", async (input: { plugin: string; capability: string }, ctx: Context) =>
      ctx.call(input.plugin, input.capability, {}),
    )
    .hook("before_command", "filter", async (event: { command?: string }) => {
      if (event.command === "rm -rf /") return veto("refusing to wipe the disk");
      if (event.command === "ls") return modify({ ...event, command: "ls -la" });
      if (event.command === "silent") return undefined;
      return continue_();
    })
    .hook("bad_filter", "filter", async () => ({ action: "veto", reason: " " } as never))
    .hook("after_command", "observe", async () => {
      runs += 1;
    });
}

before(async () => {
  served = await serve(build);
});
after(async () => {
  await served.running.shutdown();
});

const post = (path: string, body?: string, headers: [string, string][] = []) =>
  request(served.port, "POST", path, body, headers);
const get = (path: string, headers: [string, string][] = []) =>
  request(served.port, "GET", path, undefined, headers);

test("healthz answers ok and ignores protocol headers", async () => {
  const r = await get("/healthz", [["Berth-Deadline-Ms", "soon"], ["Berth-Deadline-Ms", "0"]]);
  assert.equal(r.status, 200);
  assert.deepEqual(json(r), { status: "ok" });
  assert.equal(r.headers["content-type"], "application/json");
});

test("describe lists the registered capabilities and hooks with modes", async () => {
  const r = await get("/v1/describe", [["Berth-Deadline-Ms", "0"]]);
  assert.equal(r.status, 200);
  const d = json(r);
  assert.equal(d.name, "test-plugin");
  assert.equal(d.version, "1.2.3");
  assert.deepEqual(
    d.capabilities.map((c: { name: string }) => c.name),
    ["echo", "strict", "parse-throws-plainly", "divide", "crash", "crash-sync", "nothing", "slow", "stubborn", "remaining", "call"],
  );
  assert.deepEqual(d.hooks, [
    { name: "before_command", mode: "filter" },
    { name: "bad_filter", mode: "filter" },
    { name: "after_command", mode: "observe" },
  ]);
});

test("unknown paths are 404 not_found", async () => {
  for (const path of ["/", "/nope", "/v1/invoke", "/v1/invoke/", "/v1/invoke/echo/more", "/v1/hooks/", "/healthz/x"]) {
    const r = await post(path, "{}");
    assert.equal(r.status, 404, path);
    assert.equal(errorCode(r), "not_found", path);
  }
});

test("a wrong method on a known path is 405 with Allow, before the name is looked up", async () => {
  let r = await post("/healthz", "{}");
  assert.equal(r.status, 405);
  assert.equal(errorCode(r), "method_not_allowed");
  assert.match(r.headers.allow, /GET/);
  r = await request(served.port, "PUT", "/v1/describe", "{}");
  assert.equal(r.status, 405);
  r = await get("/v1/invoke/no-such");
  assert.equal(r.status, 405);
  assert.equal(errorCode(r), "method_not_allowed");
  assert.equal(r.headers.allow, "POST");
  r = await get("/v1/hooks/no-such");
  assert.equal(r.status, 405);
});

test("an unknown capability or hook is 404 before the deadline header is read", async () => {
  let r = await post("/v1/invoke/no-such", "not json", [["Berth-Deadline-Ms", "soon"]]);
  assert.equal(r.status, 404);
  assert.equal(errorCode(r), "unknown_capability");
  r = await post("/v1/hooks/no-such", "not json", [["Berth-Deadline-Ms", "soon"]]);
  assert.equal(r.status, 404);
  assert.equal(errorCode(r), "unknown_hook");
});

test("a malformed deadline is 400 bad_request before the deadline of 0, the body size and the JSON", async () => {
  const big = "x".repeat(DEFAULT_MAX_BODY_BYTES + 1);
  const r = await post("/v1/invoke/echo", big, [["Berth-Deadline-Ms", "soon"]]);
  assert.equal(r.status, 400);
  assert.equal(errorCode(r), "bad_request");
});

test("a deadline of 0 is 504 without running the handler, before the body size and the JSON", async () => {
  const before = runs;
  let r = await post("/v1/invoke/echo", "not json", [["Berth-Deadline-Ms", "0"]]);
  assert.equal(r.status, 504);
  assert.equal(errorCode(r), "deadline_exceeded");
  r = await post("/v1/invoke/echo", "x".repeat(DEFAULT_MAX_BODY_BYTES + 1), [["Berth-Deadline-Ms", " 0 "]]);
  assert.equal(r.status, 504);
  r = await post("/v1/invoke/echo", "{}", [["Berth-Deadline-Ms", "0"]]);
  assert.equal(r.status, 504);
  assert.equal(runs, before, "the handler ran");
});

test("a body over the limit is 413 before the JSON is looked at", async () => {
  const r = await post("/v1/invoke/echo", "x".repeat(DEFAULT_MAX_BODY_BYTES + 1));
  assert.equal(r.status, 413);
  assert.equal(errorCode(r), "payload_too_large");
});

test("a body of exactly the limit is accepted", async () => {
  const value = "y".repeat(DEFAULT_MAX_BODY_BYTES - 2);
  const r = await post("/v1/invoke/echo", JSON.stringify(value));
  assert.equal(r.status, 200);
  assert.equal(json(r).length, value.length);
});

test("a body that is not JSON is 400 malformed_json before the input is checked", async () => {
  for (const body of ["not json", "", "{", "{\"n\": 1,}"]) {
    const r = await post("/v1/invoke/strict", body);
    assert.equal(r.status, 400, body);
    assert.equal(errorCode(r), "malformed_json", body);
  }
});

test("input that does not fit is 400 invalid_input", async () => {
  let r = await post("/v1/invoke/strict", '{"n": "two"}');
  assert.equal(r.status, 400);
  assert.equal(errorCode(r), "invalid_input");
  r = await post("/v1/invoke/parse-throws-plainly", "{}");
  assert.equal(r.status, 400);
  assert.equal(errorCode(r), "invalid_input");
  assert.match(json(r).error.message, /wrong shape/);
  r = await post("/v1/invoke/strict", '{"n": 21}');
  assert.equal(r.status, 200);
  assert.deepEqual(json(r), { double: 42 });
});

test("a hook body without an object event is 400 invalid_input", async () => {
  for (const body of ["{}", '{"event": [1]}', '{"event": null}', '{"event": "x"}', "[]", "3"]) {
    const r = await post("/v1/hooks/before_command", body);
    assert.equal(r.status, 400, body);
    assert.equal(errorCode(r), "invalid_input", body);
  }
  const r = await post("/v1/hooks/before_command", "{nope");
  assert.equal(errorCode(r), "malformed_json");
});

test("handler errors are answered with their status and code; other throws are 500 internal and logged", async () => {
  let r = await post("/v1/invoke/divide", '{"a": 1, "b": 0}');
  assert.equal(r.status, 422);
  assert.equal(errorCode(r), "division_by_zero");
  r = await post("/v1/invoke/divide", '{"a": 1, "b": 4}');
  assert.deepEqual(json(r), { quotient: 0.25 });
  r = await post("/v1/invoke/crash", "{}", [["Berth-Request-Id", "req-crash"]]);
  assert.equal(r.status, 500);
  assert.equal(errorCode(r), "internal");
  assert.ok(!r.body.includes("secret internals"), "the message of an unexpected throw leaks to the caller");
  const logged = served.logs.map((l) => JSON.parse(l)).find((l) => l.request_id === "req-crash" && l.level === "ERROR");
  assert.ok(logged, "the unexpected throw was not logged");
  assert.match(logged.error, /secret internals/);
  r = await post("/v1/invoke/crash-sync", "{}");
  assert.equal(r.status, 500);
  assert.equal(errorCode(r), "internal");
});

test("a handler returning nothing answers null", async () => {
  const r = await post("/v1/invoke/nothing", "{}");
  assert.equal(r.status, 200);
  assert.equal(r.body, "null");
});

test("deadline syntax: digits with optional spaces; anything else or a repeat is 400 bad_request", async () => {
  for (const value of ["5000", " 5000 ", "\t250", "007", "99999999999999999999999999"]) {
    const r = await post("/v1/invoke/echo", "{}", [["Berth-Deadline-Ms", value]]);
    assert.equal(r.status, 200, JSON.stringify(value));
  }
  for (const value of ["-1", "+5", "1.5", "1e3", "soon", "0x10", "1 2", "", "５"]) {
    const r = await post("/v1/invoke/echo", "{}", [["Berth-Deadline-Ms", value]]);
    assert.equal(r.status, 400, JSON.stringify(value));
    assert.equal(errorCode(r), "bad_request", JSON.stringify(value));
  }
  let r = await post("/v1/invoke/echo", "{}", [["Berth-Deadline-Ms", "5000"], ["berth-deadline-ms", "5000"]]);
  assert.equal(r.status, 400);
  assert.equal(errorCode(r), "bad_request");
  r = await post("/v1/invoke/echo", "{}", [["Berth-Deadline-Ms", "5000, 5000"]]);
  assert.equal(r.status, 400);
});

test("a deadline too large to time means no deadline of our own", async () => {
  const r = await post("/v1/invoke/remaining", "{}", [["Berth-Deadline-Ms", "184467440737095516160"]]);
  assert.equal(r.status, 200);
  assert.equal(json(r).remaining, null);
});

test("the handler sees the deadline, request id and caller", async () => {
  const r = await post("/v1/invoke/remaining", "{}", [
    ["Berth-Deadline-Ms", "3000"],
    ["Berth-Request-Id", "req-7"],
    ["Berth-Caller", "user:ada"],
  ]);
  const body = json(r);
  assert.ok(body.remaining > 2000 && body.remaining <= 3000, String(body.remaining));
  assert.equal(body.request_id, "req-7");
  assert.equal(body.caller, "user:ada");
});

test("when the deadline runs out the handler's signal aborts and 504 is answered at expiry", async () => {
  const started = Date.now();
  const r = await post("/v1/invoke/slow", '{"ms": 5000, "tag": "cancel-me"}', [["Berth-Deadline-Ms", "150"]]);
  const took = Date.now() - started;
  assert.equal(r.status, 504);
  assert.equal(errorCode(r), "deadline_exceeded");
  assert.ok(took >= 140 && took < 2000, `answered after ${took} ms`);
  await delay(20);
  assert.ok(aborted.includes("cancel-me"), "the handler's signal was not aborted");
});

test("a handler that ignores its signal still gets 504 at expiry", async () => {
  const started = Date.now();
  const r = await post("/v1/invoke/stubborn", '{"ms": 1500}', [["Berth-Deadline-Ms", "100"]]);
  assert.equal(r.status, 504);
  assert.ok(Date.now() - started < 1400, "the answer waited for the handler");
});

test("a handler that finishes within its deadline answers 200", async () => {
  const r = await post("/v1/invoke/slow", '{"ms": 20, "tag": "in-time"}', [["Berth-Deadline-Ms", "2000"]]);
  assert.equal(r.status, 200);
  assert.deepEqual(json(r), { slept: 20 });
  assert.ok(!aborted.includes("in-time"));
});

test("the deadline also covers a body still arriving", async () => {
  const c = await RawConnection.open(served.port);
  c.write("POST /v1/invoke/echo HTTP/1.1\r\nHost: p\r\nBerth-Deadline-Ms: 100\r\nContent-Length: 10\r\n\r\n{\"a\"");
  const r = await c.read();
  assert.equal(r.status, 504);
  c.close();
});

test("keep-alive: several requests on one connection, including errors", async () => {
  const c = await RawConnection.open(served.port);
  const a = await c.request("POST", "/v1/invoke/echo", '{"n":1}');
  const b = await c.request("POST", "/v1/invoke/no-such", "{}");
  const d = await c.request("GET", "/healthz");
  const e = await c.request("POST", "/v1/invoke/echo", '{"n":2}');
  assert.deepEqual([a.status, b.status, d.status, e.status], [200, 404, 200, 200]);
  assert.deepEqual(json(e), { n: 2 });
  assert.notEqual(a.headers.connection, "close");
  assert.ok(!c.closed);
  c.close();
});

test("a 413 closes the connection instead of reading the whole body", async () => {
  const c = await RawConnection.open(served.port);
  // Declares 10 GB and sends a little of it: the answer comes at once, then the close.
  c.write("POST /v1/invoke/echo HTTP/1.1\r\nHost: p\r\nContent-Length: 10000000000\r\n\r\n" + "z".repeat(1000));
  const r = await c.read();
  assert.equal(r.status, 413);
  assert.equal(errorCode(r), "payload_too_large");
  assert.equal(r.headers.connection, "close");
  await c.waitClosed();
});

test("keep-alive survives a 504 whose body was not read", async () => {
  const c = await RawConnection.open(served.port);
  let r = await c.request("POST", "/v1/invoke/echo", '"x"', [["Berth-Deadline-Ms", "0"]]);
  assert.equal(r.status, 504);
  r = await c.request("POST", "/v1/invoke/echo", '"again"');
  assert.equal(r.status, 200);
  assert.equal(json(r), "again");
  c.close();
});

test("pipelined requests are answered in order", async () => {
  const c = await RawConnection.open(served.port);
  c.write(
    "POST /v1/invoke/echo HTTP/1.1\r\nHost: p\r\nContent-Length: 1\r\n\r\n1" +
      "POST /v1/invoke/echo HTTP/1.1\r\nHost: p\r\nContent-Length: 1\r\n\r\n2",
  );
  assert.equal((await c.read()).body, "1");
  assert.equal((await c.read()).body, "2");
  c.close();
});

test("a chunked body is accepted", async () => {
  const c = await RawConnection.open(served.port);
  c.write("POST /v1/invoke/echo HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n");
  c.write('4\r\n{"a"\r\n');
  await delay(20);
  c.write('5\r\n:"chu\r\n');
  c.write('5\r\nnked"\r\n1\r\n}\r\n0\r\n\r\n');
  const r = await c.read();
  assert.equal(r.status, 200);
  assert.deepEqual(json(r), { a: "chunked" });
  c.close();
});

test("a chunked body over the limit is 413", async () => {
  const small = await serve((logger) => new Plugin("small", "0.1.0", { logger, maxBodyBytes: 64 }).capability("echo", (x: unknown) => x));
  try {
    const c = await RawConnection.open(small.port);
    c.write("POST /v1/invoke/echo HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n");
    c.write(`40\r\n"${"a".repeat(62)}"\r\n`);
    c.write(`1\r\n \r\n0\r\n\r\n`);
    const r = await c.read();
    assert.equal(r.status, 413);
    assert.equal(errorCode(r), "payload_too_large");
    assert.equal(r.headers.connection, "close");
    await c.waitClosed();
  } finally {
    await small.running.shutdown();
  }
});

test("8 KiB of request headers are accepted", async () => {
  const headers: [string, string][] = [];
  for (let i = 0; i < 8; i++) headers.push([`X-Pad-${i}`, "p".repeat(1000)]);
  const r = await post("/v1/invoke/echo", "{}", headers);
  assert.equal(r.status, 200);
});

test("Berth-Request-Id is echoed on every answer", async () => {
  const id: [string, string][] = [["Berth-Request-Id", "req-42"]];
  const answers = [
    await get("/healthz", id),
    await get("/v1/describe", id),
    await post("/nope", "{}", id),
    await get("/v1/invoke/echo", id),
    await post("/v1/invoke/no-such", "{}", id),
    await post("/v1/invoke/echo", "{}", [...id, ["Berth-Deadline-Ms", "x"]]),
    await post("/v1/invoke/echo", "{}", [...id, ["Berth-Deadline-Ms", "0"]]),
    await post("/v1/invoke/echo", "nope", id),
    await post("/v1/invoke/echo", "{}", id),
    await post("/v1/hooks/after_command", '{"event":{}}', id),
  ];
  for (const r of answers) assert.equal(r.headers["berth-request-id"], "req-42", `status ${r.status}`);
  const none = await post("/v1/invoke/echo", "{}");
  assert.equal(none.headers["berth-request-id"], undefined);
});

test("filter hooks answer continue, modify or veto; nothing returned means continue", async () => {
  const hook = (command: string) => post("/v1/hooks/before_command", JSON.stringify({ event: { command, cwd: "/w" }, extra: 1 }));
  let r = await hook("echo hi");
  assert.equal(r.status, 200);
  assert.deepEqual(json(r), { action: "continue" });
  r = await hook("ls");
  assert.deepEqual(json(r), { action: "modify", event: { command: "ls -la", cwd: "/w" } });
  r = await hook("rm -rf /");
  assert.deepEqual(json(r), { action: "veto", reason: "refusing to wipe the disk" });
  r = await hook("silent");
  assert.deepEqual(json(r), { action: "continue" });
});

test("a filter answering an invalid action is 500 internal", async () => {
  const r = await post("/v1/hooks/bad_filter", '{"event":{}}');
  assert.equal(r.status, 500);
  assert.equal(errorCode(r), "internal");
});

test("observe hooks answer 204 with an empty body after running", async () => {
  const before = runs;
  const r = await post("/v1/hooks/after_command", '{"event":{"command":"ls"}}');
  assert.equal(r.status, 204);
  assert.equal(r.body, "");
  assert.equal(runs, before + 1);
});

test("log lines are JSON with an RFC 3339 UTC timestamp, a level, a message and the request id", async () => {
  await post("/v1/invoke/echo", "{}", [["Berth-Request-Id", "req-log"]]);
  await post("/v1/invoke/no-such", "{}", [["Berth-Request-Id", "req-log-404"]]);
  const lines = served.logs.map((l) => {
    assert.ok(l.endsWith("\n") && !l.slice(0, -1).includes("\n"), "one line per entry");
    return JSON.parse(l);
  });
  for (const line of lines) {
    assert.match(line.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.ok(["DEBUG", "INFO", "WARN", "ERROR"].includes(line.level), line.level);
    assert.equal(typeof line.message, "string");
  }
  const ok = lines.find((l) => l.request_id === "req-log");
  assert.ok(ok, "no line for the request");
  assert.equal(ok.level, "INFO");
  assert.equal(ok.status, 200);
  assert.equal(ok.capability, "echo");
  const refused = lines.find((l) => l.request_id === "req-log-404");
  assert.equal(refused.status, 404);
  assert.equal(refused.code, "unknown_capability");
});

test("the log level filter drops lower levels", () => {
  const lines: string[] = [];
  const logger = new Logger(2, (l) => {
    lines.push(l);
  }).withRequestId("r");
  logger.debug("d");
  logger.info("i");
  logger.warn("w", { request_id: "not-overwritten", extra: 1 });
  logger.error("e");
  const parsed = lines.map((l) => JSON.parse(l));
  assert.deepEqual(parsed.map((l) => l.message), ["w", "e"]);
  assert.equal(parsed[0].request_id, "r");
  assert.equal(parsed[0].extra, 1);
});

test("a PluginError carries its status, code and body", () => {
  const e = new PluginError(418, "teapot", "short and stout");
  assert.ok(e instanceof Error);
  assert.deepEqual(e.body(), { error: { code: "teapot", message: "short and stout" } });
});

test("registering a name twice is refused", () => {
  const p = new Plugin("p", "1").capability("a", () => 1);
  let threw = false;
  try {
    p.capability("a", () => 2);
  } catch {
    threw = true;
  }
  assert.ok(threw);
});

test("an idle keep-alive connection outlives Node's default 5 s keep-alive timeout", async () => {
  const c = await RawConnection.open(served.port);
  assert.equal((await c.request("GET", "/healthz")).status, 200);
  await delay(5500);
  assert.ok(!c.closed, "the server closed the idle connection");
  assert.equal((await c.request("GET", "/healthz")).status, 200);
  c.close();
});

test("a body that is not UTF-8 is 400 malformed_json, not read with replacement characters", async () => {
  const c = await RawConnection.open(served.port);
  const body = Buffer.concat([Buffer.from('{"name":"'), Buffer.from([0xff]), Buffer.from('"}')]);
  c.write(Buffer.concat([Buffer.from(`POST /v1/invoke/echo HTTP/1.1\r\nHost: p\r\nContent-Length: ${body.length}\r\n\r\n`), body]));
  let r = await c.read();
  assert.equal(r.status, 400);
  assert.equal(errorCode(r), "malformed_json");
  // a UTF-8 byte order mark is not JSON either; real UTF-8 is fine
  r = await c.request("POST", "/v1/invoke/echo", '\ufeff{}');
  assert.equal(errorCode(r), "malformed_json");
  r = await c.request("POST", "/v1/invoke/echo", '"caf\u00e9 \u{1F600}"');
  assert.equal(json(r), "caf\u00e9 \u{1F600}");
  c.close();
});

// Sends raw bytes on a fresh connection and reads the one answer.
async function raw(text: string): Promise<{ status: number; code: string; close: string | undefined }> {
  const c = await RawConnection.open(served.port);
  try {
    c.write(text);
    const r = await c.read();
    return { status: r.status, code: errorCode(r), close: r.headers.connection };
  } finally {
    c.close();
  }
}

test("requests Node's parser refuses get a JSON error body and a close", async () => {
  const cases: [string, number, string][] = [
    ["POST /v1/invoke/echo HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "bad_request"],
    ["POST /v1/invoke/echo HTTP/1.1\r\nHost: p\r\nContent-Length: -1\r\n\r\n", 400, "bad_request"],
    [
      "POST /v1/invoke/echo HTTP/1.1\r\nHost: p\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      400,
      "bad_request",
    ],
    ["GET /healthz HTTP/1.1\r\nHost: p\r\nX-A: a\rb\r\n\r\n", 400, "bad_request"],
    [`GET /healthz HTTP/1.1\r\nHost: p\r\nX-Pad: ${"p".repeat(17 * 1024)}\r\n\r\n`, 431, "request_header_fields_too_large"],
    ["POST /v1/invoke/echo HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "not_implemented"],
    ["GET /healthz HTTP/1.2\r\nHost: p\r\n\r\n", 505, "http_version_not_supported"],
  ];
  for (const [text, status, code] of cases) {
    const r = await raw(text);
    assert.deepEqual([r.status, r.code, r.close], [status, code, "close"], JSON.stringify(text.slice(0, 60)));
  }
});

test("request lines of another HTTP version are 505, not served", async () => {
  for (const version of ["HTTP/2.0", "HTTP/0.9"]) {
    const r = await raw(`GET /healthz ${version}\r\nHost: p\r\n\r\n`);
    assert.deepEqual([r.status, r.code], [505, "http_version_not_supported"], version);
  }
});

test("a request without a Host header is served", async () => {
  const c = await RawConnection.open(served.port);
  c.write("GET /healthz HTTP/1.1\r\n\r\n");
  const r = await c.read();
  assert.deepEqual([r.status, json(r)], [200, { status: "ok" }]);
  c.close();
});

test("absolute-form request targets are routed by their path", async () => {
  let r = await get("http://plugin:8080/healthz");
  assert.deepEqual([r.status, json(r)], [200, { status: "ok" }]);
  r = await post("http://plugin/v1/invoke/echo?x=1", "[3]");
  assert.deepEqual([r.status, json(r)], [200, [3]]);
  r = await get("http://plugin/nowhere");
  assert.equal(errorCode(r), "not_found");
});

test("a non-ASCII request id is echoed byte for byte", async () => {
  const c = await RawConnection.open(served.port);
  const id = Buffer.from("caf\u00e9-\u{1F600}", "utf8");
  c.write(Buffer.concat([Buffer.from("GET /healthz HTTP/1.1\r\nHost: p\r\nBerth-Request-Id: "), id, Buffer.from("\r\n\r\n")]));
  const r = await c.read();
  assert.equal(r.status, 200);
  // RawConnection reads heads as latin1, so the bytes come back one character each
  assert.equal(r.headers["berth-request-id"], id.toString("latin1"));
  c.close();
});
