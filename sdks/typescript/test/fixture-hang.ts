// A plugin whose `hang` capability never finishes and ignores cancellation, to test the
// drain timeout. Run by process.test.ts with BERTH_PORT and DRAIN_MS set; without DRAIN_MS
// (as when `node --test` is given the whole folder) it does nothing.

import { Plugin } from "../src/berth.js";

declare const process: { env: Record<string, string | undefined> };

if (process.env.DRAIN_MS !== undefined) {
  new Plugin("hang", "0.1.0", { drainTimeoutMs: Number(process.env.DRAIN_MS) })
    .capability("hang", () => new Promise(() => undefined))
    .run();
}
