// Context.call: calls to other plugins through the gateway (protocol §5).

import { test } from "node:test";
import assert from "node:assert/strict";
import * as http from "node:http";
import { Context, Logger, PluginCallError, PluginError } from "../src/berth.js";

const quiet = new Logger(4, () => undefined);

interface Seen {
  method?: string;
  url?: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

async function gateway(answer: (seen: Seen) => { status: number; body: string }): Promise<{ url: string; seen: Seen[]; close(): Promise<void> }> {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c.toString("utf8")));
    req.on("end", () => {
      const s = { method: req.method, url: req.url, headers: req.headers, body };
      seen.push(s);
      const a = answer(s);
      res.statusCode = a.status;
      res.setHeader("Content-Type", "application/json");
      res.end(a.body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

test("without BERTH_GATEWAY_URL a call is 503 gateway_unavailable", async () => {
  const ctx = new Context({ logger: quiet, env: {} });
  try {
    await ctx.call("calc", "evaluate", {});
    assert.fail("the call succeeded");
  } catch (e) {
    assert.ok(e instanceof PluginError);
    assert.equal(e.status, 503);
    assert.equal(e.code, "gateway_unavailable");
  }
});

test("a call posts the input to the gateway with the token, request id and remaining deadline", async () => {
  const g = await gateway(() => ({ status: 200, body: '{"value": 3}' }));
  try {
    const ctx = new Context({
      logger: quiet,
      requestId: "req-9",
      budgetMs: 5000,
      env: { BERTH_GATEWAY_URL: g.url + "/", BERTH_PLUGIN_TOKEN: "tok" },
    });
    const out = await ctx.call("calc", "evaluate", { expr: "1+2" });
    assert.deepEqual(out, { value: 3 });
    const s = g.seen[0];
    assert.equal(s.method, "POST");
    assert.equal(s.url, "/v1/plugins/calc/invoke/evaluate");
    assert.equal(s.headers.authorization, "Bearer tok");
    assert.equal(s.headers["berth-request-id"], "req-9");
    const deadline = Number(s.headers["berth-deadline-ms"]);
    assert.ok(deadline > 4000 && deadline <= 5000, String(deadline));
    assert.equal(s.headers["content-type"], "application/json");
    assert.deepEqual(JSON.parse(s.body), { expr: "1+2" });
  } finally {
    await g.close();
  }
});

test("an error answer becomes 502 plugin_call_failed carrying the callee's answer", async () => {
  const g = await gateway(() => ({ status: 403, body: '{"error":{"code":"forbidden","message":"not allowed"}}' }));
  try {
    const ctx = new Context({ logger: quiet, env: { BERTH_GATEWAY_URL: g.url } });
    try {
      await ctx.call("calc", "evaluate", {});
      assert.fail("the call succeeded");
    } catch (e) {
      assert.ok(e instanceof PluginCallError);
      assert.equal(e.status, 502);
      assert.equal(e.code, "plugin_call_failed");
      assert.deepEqual(e.answer, { status: 403, code: "forbidden", message: "not allowed" });
      assert.match(e.message, /403 forbidden: not allowed/);
    }
  } finally {
    await g.close();
  }
});

test("an unreachable gateway is 502 plugin_call_failed", async () => {
  const g = await gateway(() => ({ status: 200, body: "{}" }));
  const url = g.url;
  await g.close();
  const ctx = new Context({ logger: quiet, env: { BERTH_GATEWAY_URL: url } });
  try {
    await ctx.call("calc", "evaluate", {});
    assert.fail("the call succeeded");
  } catch (e) {
    assert.ok(e instanceof PluginCallError);
    assert.equal(e.answer, undefined);
  }
});
