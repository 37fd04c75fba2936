// templates/typescript as `berth new NAME --lang typescript` lays it out (the template with
// `berth-template` replaced, plus this SDK as src/berth.ts) compiles with tsc and serves
// what its berth.yaml promises.

import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import { spawnSync } from "node:child_process";
import { Child, errorCode, freePort, json, request } from "./support.js";

const sdk = `${__dirname}/../../src/berth.ts`;
const template = `${__dirname}/../../../../templates/typescript`;
const NAME = "my-plugin";

function copy(from: string, to: string): void {
  fs.writeFileSync(to, fs.readFileSync(from, "utf8").split("berth-template").join(NAME));
}

test("the TypeScript template compiles with the SDK and answers its manifest's examples", { timeout: 60_000 }, async () => {
  const dir = fs.mkdtempSync(`${os.tmpdir()}/berth-ts-template-`);
  try {
    fs.mkdirSync(`${dir}/src`);
    for (const file of ["tsconfig.json", "berth.yaml", "package.json", "src/main.ts"]) copy(`${template}/${file}`, `${dir}/${file}`);
    fs.writeFileSync(`${dir}/src/berth.ts`, fs.readFileSync(sdk, "utf8"));
    const manifest = fs.readFileSync(`${dir}/berth.yaml`, "utf8");
    assert.match(manifest, /name: my-plugin\n/);
    assert.match(manifest, /image: berth\/my-plugin:0\.1\.0/);
    const tsc = spawnSync("tsc", ["-p", "."], { cwd: dir, encoding: "utf8" });
    assert.equal(tsc.status, 0, `tsc failed: ${tsc.error?.message ?? ""}${tsc.stdout}${tsc.stderr}`);

    const port = await freePort();
    const child = new Child(`${dir}/dist/main.js`, { BERTH_PORT: String(port) });
    try {
      await child.waitForLog("listening");
      let r = await request(port, "GET", "/v1/describe");
      assert.deepEqual(json(r), {
        name: NAME,
        version: "0.1.0",
        capabilities: [{ name: "greet" }],
        hooks: [{ name: "before_command", mode: "filter" }],
      });
      r = await request(port, "POST", "/v1/invoke/greet", '{"name":"Berth"}');
      assert.deepEqual(json(r), { message: "Hello, Berth!" });
      r = await request(port, "POST", "/v1/invoke/greet", "{}");
      assert.deepEqual(json(r), { message: "Hello, world!" });
      r = await request(port, "POST", "/v1/invoke/greet", '{"name":7}');
      assert.equal(errorCode(r), "invalid_input");
      for (const notAnObject of ["[]", "null", "42", '"x"']) {
        r = await request(port, "POST", "/v1/invoke/greet", notAnObject);
        assert.equal(errorCode(r), "invalid_input", notAnObject);
      }
      const event = (command: string) => JSON.stringify({ event: { command, args: [], cwd: "/workspace" } });
      r = await request(port, "POST", "/v1/hooks/before_command", event("sudo rm -rf / --no-preserve-root"));
      assert.equal(json(r).action, "veto");
      r = await request(port, "POST", "/v1/hooks/before_command", event("echo hello"));
      assert.deepEqual(json(r), { action: "continue" });
      child.process.kill("SIGTERM");
      assert.equal((await child.exited).code, 0);
    } finally {
      child.process.kill("SIGKILL");
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
