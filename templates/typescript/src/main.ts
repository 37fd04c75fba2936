// berth-template: a Berth plugin. `berth.ts` beside this file is the Berth SDK for
// TypeScript; the plugin's manifest is ../berth.yaml.

import { Context, JsonObject, Plugin, continue_, invalidInput, veto } from "./berth.js";

/** The plugin's name; equals `metadata.name` in berth.yaml. */
const NAME = "berth-template";
/** The plugin's version; equals `spec.version` in berth.yaml. */
const VERSION = "0.1.0";

interface GreetInput {
  name?: string;
}

/** Checks the input at run time: TypeScript's types are gone once compiled. */
function parseGreet(body: unknown): GreetInput {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw invalidInput('the input must be an object such as {"name": "Berth"}');
  }
  const name = (body as { name?: unknown }).name;
  if (name !== undefined && typeof name !== "string") throw invalidInput("name must be a string");
  return { name };
}

/** `{"name": "Berth"}` → `{"message": "Hello, Berth!"}`; the name defaults to "world". */
async function greet(input: GreetInput, ctx: Context): Promise<{ message: string }> {
  const name = input.name ?? "world";
  ctx.log.debug("greeting", { name });
  return { message: `Hello, ${name}!` };
}

/** Vetoes a command that would wipe the disk; lets every other command through. */
async function beforeCommand(event: JsonObject) {
  const command = typeof event.command === "string" ? event.command : "";
  if (command.includes("rm -rf /")) return veto("refusing to run `rm -rf /`: it would wipe the disk");
  return continue_();
}

new Plugin(NAME, VERSION)
  .capability("greet", greet, { parse: parseGreet })
  .hook("before_command", "filter", beforeCommand)
  .run();
