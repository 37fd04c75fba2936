// ts-hello: the TypeScript SDK's example plugin (berth.yaml beside this folder).

import {
  Context,
  JsonObject,
  Plugin,
  continue_,
  invalidInput,
  modify,
  sleep,
  veto,
} from "../src/berth.js";

/** The plugin's name; equals `metadata.name` in berth.yaml. */
export const NAME = "ts-hello";
/** The plugin's version; equals `spec.version` in berth.yaml. */
export const VERSION = "0.1.0";

interface GreetInput {
  name?: string;
}

function parseGreet(body: unknown): GreetInput {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw invalidInput("the input must be an object such as {\"name\": \"Berth\"}");
  }
  const name = (body as { name?: unknown }).name;
  if (name !== undefined && typeof name !== "string") throw invalidInput("name must be a string");
  // Counted in characters (code points) as the manifest's maxLength is, not in UTF-16 units.
  if (typeof name === "string" && [...name].length > 256) throw invalidInput("name is longer than 256 characters");
  return { name };
}

/** `greet`: `{"name": "Berth"}` → `{"message": "Hello, Berth!"}`; the name defaults to "world". */
export async function greet(input: GreetInput, ctx: Context): Promise<{ message: string }> {
  const name = input.name ?? "world";
  ctx.log.debug("greeting", { name });
  return { message: `Hello, ${name}!` };
}

interface SleepInput {
  ms: number;
}

function parseSleep(body: unknown): SleepInput {
  const ms = (body as { ms?: unknown } | null)?.ms;
  if (typeof ms !== "number" || !Number.isInteger(ms) || ms < 0 || ms > 60_000) {
    throw invalidInput("ms must be a whole number of milliseconds from 0 to 60000");
  }
  return { ms };
}

/**
 * `sleep`: waits `ms` milliseconds and says so. It honours cancellation: when the caller's
 * deadline runs out first, `ctx.signal` aborts, the wait stops at once and the SDK answers
 * 504 deadline_exceeded.
 */
export async function sleepFor(input: SleepInput, ctx: Context): Promise<{ slept_ms: number }> {
  await sleep(input.ms, ctx.signal);
  return { slept_ms: input.ms };
}

/**
 * `before_command` filter: vetoes wiping the disk, turns `git push --force` into the safer
 * `--force-with-lease`, and lets everything else through.
 */
export async function beforeCommand(event: JsonObject) {
  const command = typeof event.command === "string" ? event.command : "";
  if (command.includes("rm -rf /")) return veto("refusing to run `rm -rf /`: it would wipe the disk");
  if (/^git push (.* )?--force( |$)/.test(command)) {
    return modify({ ...event, command: command.replace("--force", "--force-with-lease") });
  }
  return continue_();
}

/** The plugin with everything registered, for `main` and for tests. */
export function plugin(): Plugin {
  return new Plugin(NAME, VERSION)
    .capability("greet", greet, { parse: parseGreet })
    .capability("sleep", sleepFor, { parse: parseSleep })
    .hook("before_command", "filter", beforeCommand);
}

declare const require: { main: unknown };
declare const module: unknown;

if (require.main === module) plugin().run();
