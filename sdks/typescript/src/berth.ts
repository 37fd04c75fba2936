// Berth plugin SDK for TypeScript: serves protocol v1 (docs/protocol.md) with Node's
// built-in `node:http`, no dependencies.
//
// This file is self-contained so it can be copied into a plugin as `src/berth.ts`: it
// declares the few Node APIs it uses itself instead of needing `@types/node`, and is
// compiled as CommonJS (`"module": "commonjs"` in tsconfig.json) for Node 18 or newer.
//
//   const plugin = new Plugin("hello", "0.1.0");
//   plugin.capability("greet", async (input: { name?: string }) => ({
//     message: `Hello, ${input.name ?? "world"}!`,
//   }));
//   plugin.hook("before_command", "filter", async (event) => continue_());
//   plugin.run();

/** Largest request body accepted unless `PluginOptions.maxBodyBytes` says otherwise. */
export const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024;
/** How long requests in flight may run after SIGTERM unless `PluginOptions.drainTimeoutMs` says otherwise. */
export const DEFAULT_DRAIN_TIMEOUT_MS = 10_000;
/** Port used when `BERTH_PORT` is not set. */
export const DEFAULT_PORT = 8080;
/** How long an idle keep-alive connection stays open; longer than the gateway's pool keeps it. */
export const KEEP_ALIVE_TIMEOUT_MS = 65_000;
/** Request headers accepted in total; the protocol asks for at least 8 KiB. */
export const MAX_HEADER_BYTES = 16 * 1024;

/** `Berth-Request-Id`: the invocation's id, echoed on every answer. */
export const HEADER_REQUEST_ID = "Berth-Request-Id";
/** `Berth-Deadline-Ms`: milliseconds the caller still waits. */
export const HEADER_DEADLINE_MS = "Berth-Deadline-Ms";
/** `Berth-Caller`: who asked. */
export const HEADER_CALLER = "Berth-Caller";

// setTimeout cannot hold a longer delay; a larger deadline means "no deadline of our own".
const MAX_TIMER_MS = 2_147_483_647;

// The Node APIs this file uses, declared here so that no @types/node is needed.

/** The subset of Node's `AbortSignal` a handler needs. */
export interface AbortSignalLike {
  readonly aborted: boolean;
  readonly reason: unknown;
  addEventListener(type: "abort", listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: "abort", listener: () => void): void;
}
interface AbortControllerLike {
  readonly signal: AbortSignalLike;
  abort(reason?: unknown): void;
}
interface TimerHandle {
  unref(): void;
}
interface BufferLike {
  readonly length: number;
  toString(encoding: "utf8"): string;
}
interface TextDecoderLike {
  decode(input: BufferLike): string;
}
interface IncomingMessage {
  readonly method?: string;
  readonly url?: string;
  readonly httpVersionMajor: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly rawHeaders: string[];
  on(event: "data", listener: (chunk: BufferLike) => void): this;
  on(event: "end" | "close", listener: () => void): this;
  on(event: "error", listener: (err: Error) => void): this;
  resume(): this;
}
interface ServerResponse {
  statusCode: number;
  readonly headersSent: boolean;
  readonly writableEnded: boolean;
  readonly writableFinished: boolean;
  setHeader(name: string, value: string | number): this;
  end(body?: BufferLike): this;
  on(event: "close" | "finish", listener: () => void): this;
}
interface Socket {
  setNoDelay(noDelay: boolean): void;
}
// The socket `clientError` hands over; `_httpMessage` is the answer in progress on it, if any.
interface ClientSocket {
  readonly writable: boolean;
  readonly _httpMessage?: { readonly headersSent: boolean } | null;
  end(data: string): void;
  destroy(): void;
}
interface HttpServer {
  keepAliveTimeout: number;
  headersTimeout: number;
  requestTimeout: number;
  listen(port: number, host: string, callback: () => void): this;
  close(callback?: (err?: Error) => void): this;
  closeIdleConnections(): void;
  address(): { port: number } | string | null;
  on(event: "error", listener: (err: Error & { code?: string }) => void): this;
  on(event: "connection", listener: (socket: Socket) => void): this;
  on(event: "clientError", listener: (err: Error & { code?: string }, socket: ClientSocket) => void): this;
}
interface HttpModule {
  readonly STATUS_CODES: Record<number, string | undefined>;
  createServer(
    options: { maxHeaderSize?: number; requireHostHeader?: boolean },
    listener: (req: IncomingMessage, res: ServerResponse) => void,
  ): HttpServer;
}
interface FetchResponse {
  readonly status: number;
  text(): Promise<string>;
}
interface NodeProcess {
  readonly env: Record<string, string | undefined>;
  readonly stdout: { write(text: string): boolean };
  exitCode?: number;
  exit(code?: number): never;
  on(event: "SIGTERM" | "SIGINT", listener: () => void): this;
  hrtime: { bigint(): bigint };
}
declare const require: (id: string) => unknown;
declare const process: NodeProcess;
declare const Buffer: {
  concat(chunks: BufferLike[]): BufferLike;
  byteLength(text: string): number;
  from(text: string, encoding: "utf8"): BufferLike;
};
declare const TextDecoder: {
  new (label: "utf-8", options: { fatal: boolean; ignoreBOM: boolean }): TextDecoderLike;
};
declare const AbortController: { new (): AbortControllerLike };
declare function setTimeout(callback: () => void, ms: number): TimerHandle;
declare function clearTimeout(handle: TimerHandle | undefined): void;
declare function fetch(
  url: string,
  init: { method: string; headers: Record<string, string>; body: string; signal: AbortSignalLike },
): Promise<FetchResponse>;

/** An error answer: an HTTP status, a stable `lower_snake_case` code and a message for people. */
export class PluginError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "PluginError";
  }

  /** The JSON body this error is answered with. */
  body(): { error: { code: string; message: string } } {
    return { error: { code: this.code, message: this.message } };
  }
}

/** 400 `invalid_input`: the input parsed but is not what the capability accepts. */
export function invalidInput(message: string): PluginError {
  return new PluginError(400, "invalid_input", message);
}
/** 422 with a specific code: the input is well-formed but cannot be processed. */
export function unprocessable(code: string, message: string): PluginError {
  return new PluginError(422, code, message);
}
/** 404 with a specific code: something the input names does not exist. */
export function notFound(code: string, message: string): PluginError {
  return new PluginError(404, code, message);
}
/** 500 `internal`: a fault in the plugin itself. */
export function internal(message: string): PluginError {
  return new PluginError(500, "internal", message);
}
/** 502 with a specific code: something the plugin called answered badly. */
export function badGateway(code: string, message: string): PluginError {
  return new PluginError(502, code, message);
}
/** 503 with a specific code: a dependency of the plugin is not there. */
export function unavailable(code: string, message: string): PluginError {
  return new PluginError(503, code, message);
}
/** 504 `deadline_exceeded`: the caller's `Berth-Deadline-Ms` ran out. */
export function deadlineExceeded(budgetMs: number): PluginError {
  return new PluginError(
    504,
    "deadline_exceeded",
    `the request did not finish within its deadline of ${budgetMs} ms`,
  );
}

/** What a hook handler is answering with. */
export type HookMode = "filter" | "observe";

/** A JSON object, as hook events are. */
export type JsonObject = { [key: string]: unknown };

/** A filter hook's answer. */
export type HookAction =
  | { action: "continue" }
  | { action: "modify"; event: JsonObject }
  | { action: "veto"; reason: string };

/** Let the event through unchanged. */
export function continue_(): HookAction {
  return { action: "continue" };
}
/** Replace the event; later filters and the emitter see `event`. */
export function modify(event: JsonObject): HookAction {
  return { action: "modify", event };
}
/** Stop the event; `reason` is shown to whoever caused it. */
export function veto(reason: string): HookAction {
  return { action: "veto", reason };
}

function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

// A handler's answer is checked here so a plugin bug is a clear 500, not a confused gateway.
function checkAction(value: unknown): HookAction {
  if (value === undefined) return continue_();
  if (isObject(value)) {
    if (value.action === "continue") return continue_();
    if (value.action === "modify") {
      if (isObject(value.event)) return modify(value.event);
      throw internal("the hook handler answered modify without an event object");
    }
    if (value.action === "veto") {
      if (typeof value.reason === "string" && value.reason.trim() !== "") {
        return veto(value.reason);
      }
      throw internal("the hook handler answered veto without a reason");
    }
  }
  throw internal("the hook handler answered something other than continue_(), modify() or veto()");
}

/** Log levels, lowest first. `BERTH_LOG` picks the lowest one written (default `info`). */
export type LogLevel = "DEBUG" | "INFO" | "WARN" | "ERROR";
const LEVEL_RANK: Record<LogLevel, number> = { DEBUG: 0, INFO: 1, WARN: 2, ERROR: 3 };
const OFF = 4;

/** The lowest level `filter` (a `BERTH_LOG` value such as `debug` or `warn`) lets through. */
export function logThreshold(filter: string | undefined): number {
  // Accept the Rust-style `target=level,level` form by honouring its bare level.
  for (const part of (filter ?? "").split(",").reverse()) {
    switch (part.trim().toLowerCase()) {
      case "trace":
      case "debug":
        return LEVEL_RANK.DEBUG;
      case "info":
        return LEVEL_RANK.INFO;
      case "warn":
      case "warning":
        return LEVEL_RANK.WARN;
      case "error":
        return LEVEL_RANK.ERROR;
      case "off":
        return OFF;
    }
  }
  return LEVEL_RANK.INFO;
}

/** Writes one JSON object per line: `timestamp`, `level`, `message`, `request_id`, then fields. */
export class Logger {
  constructor(
    private readonly threshold: number,
    private readonly write: (line: string) => void,
    private readonly requestId?: string,
  ) {}

  /** The same logger, stamping `request_id` on every line. */
  withRequestId(requestId: string | undefined): Logger {
    return new Logger(this.threshold, this.write, requestId);
  }

  debug(message: string, fields?: JsonObject): void {
    this.log("DEBUG", message, fields);
  }
  info(message: string, fields?: JsonObject): void {
    this.log("INFO", message, fields);
  }
  warn(message: string, fields?: JsonObject): void {
    this.log("WARN", message, fields);
  }
  error(message: string, fields?: JsonObject): void {
    this.log("ERROR", message, fields);
  }

  log(level: LogLevel, message: string, fields?: JsonObject): void {
    if (LEVEL_RANK[level] < this.threshold) return;
    const line: JsonObject = { timestamp: new Date().toISOString(), level, message };
    if (this.requestId !== undefined) line.request_id = this.requestId;
    for (const [key, value] of Object.entries(fields ?? {})) {
      if (!(key in line)) line[key] = value;
    }
    this.write(JSON.stringify(line) + "\n");
  }
}

/** The logger the SDK uses: stdout, level from `BERTH_LOG`. */
export function defaultLogger(): Logger {
  return new Logger(logThreshold(process.env.BERTH_LOG), (line) => {
    process.stdout.write(line);
  });
}

/** How a `Context` is made by hand, for calling handlers directly in tests. */
export interface ContextOptions {
  requestId?: string;
  caller?: string;
  /** Milliseconds from now until the deadline. */
  budgetMs?: number;
  signal?: AbortSignalLike;
  logger?: Logger;
  /** Defaults to `process.env`. */
  env?: Record<string, string | undefined>;
}

/** What a handler knows about the request besides its input. */
export class Context {
  /** `Berth-Request-Id`, when the caller sent one. Pass it on to plugins you call. */
  readonly requestId?: string;
  /** `Berth-Caller`: who asked, when known. */
  readonly caller?: string;
  /** When the answer is no longer wanted, in `Date.now()` milliseconds; undefined without a deadline. */
  readonly deadline?: number;
  /** Aborted when the deadline runs out or the caller goes away: stop working then. */
  readonly signal: AbortSignalLike;
  /** Logs with this request's id. */
  readonly log: Logger;
  private readonly env: Record<string, string | undefined>;

  constructor(options: ContextOptions = {}) {
    this.requestId = options.requestId;
    this.caller = options.caller;
    this.deadline = options.budgetMs === undefined ? undefined : Date.now() + options.budgetMs;
    this.signal = options.signal ?? new AbortController().signal;
    this.log = (options.logger ?? defaultLogger()).withRequestId(options.requestId);
    this.env = options.env ?? process.env;
  }

  /** Milliseconds left before the deadline (0 once it passed); undefined without a deadline. */
  remainingMs(): number | undefined {
    return this.deadline === undefined ? undefined : Math.max(0, this.deadline - Date.now());
  }

  /** Throws the abort reason (504 `deadline_exceeded` on expiry) when the request was cancelled. */
  throwIfAborted(): void {
    if (this.signal.aborted) throw this.signal.reason;
  }

  /**
   * Calls `capability` of another plugin through the gateway (protocol §5), passing on this
   * request's id and remaining deadline. Resolves to the callee's output; rejects with
   * 503 `gateway_unavailable` when the plugin runs without a gateway and 502
   * `plugin_call_failed` when the call fails (the callee's status, code and message are in
   * the error's message and in `PluginCallError.answer`).
   */
  async call(plugin: string, capability: string, input: unknown): Promise<unknown> {
    const gateway = this.env.BERTH_GATEWAY_URL;
    if (gateway === undefined || gateway.trim() === "") {
      throw unavailable(
        "gateway_unavailable",
        `cannot call ${plugin}/${capability}: BERTH_GATEWAY_URL is not set (the plugin runs without a gateway)`,
      );
    }
    const headers: Record<string, string> = { "Content-Type": "application/json" };
    const token = this.env.BERTH_PLUGIN_TOKEN;
    if (token !== undefined && token !== "") headers.Authorization = `Bearer ${token}`;
    if (this.requestId !== undefined) headers[HEADER_REQUEST_ID] = this.requestId;
    const remaining = this.remainingMs();
    if (remaining !== undefined) headers[HEADER_DEADLINE_MS] = String(Math.floor(remaining));
    const url =
      `${gateway.replace(/\/+$/, "")}/v1/plugins/${encodeURIComponent(plugin)}` +
      `/invoke/${encodeURIComponent(capability)}`;
    this.throwIfAborted();
    let status: number;
    let text: string;
    try {
      const response = await fetch(url, {
        method: "POST",
        headers,
        body: JSON.stringify(input ?? null),
        signal: this.signal,
      });
      status = response.status;
      text = await response.text();
    } catch (e) {
      this.throwIfAborted();
      throw new PluginCallError(
        `calling ${plugin}/${capability} through the gateway failed: ${describeThrown(e)}`,
        undefined,
      );
    }
    let body: unknown;
    try {
      body = text === "" ? null : JSON.parse(text);
    } catch {
      body = undefined;
    }
    if (status >= 200 && status < 300) {
      if (body === undefined) {
        throw new PluginCallError(`${plugin}/${capability} answered ${status} with a body that is not JSON`, {
          status,
        });
      }
      return body;
    }
    const detail = isObject(body) && isObject(body.error) ? body.error : {};
    const code = typeof detail.code === "string" ? detail.code : undefined;
    const message = typeof detail.message === "string" ? detail.message : undefined;
    throw new PluginCallError(
      `${plugin}/${capability} answered ${status}${code ? ` ${code}` : ""}${message ? `: ${message}` : ""}`,
      { status, code, message },
    );
  }
}

/** 502 `plugin_call_failed` from `Context.call`; `answer` holds what the callee said, if it answered. */
export class PluginCallError extends PluginError {
  constructor(
    message: string,
    readonly answer: { status: number; code?: string; message?: string } | undefined,
  ) {
    super(502, "plugin_call_failed", message);
    this.name = "PluginCallError";
  }
}

function describeThrown(e: unknown): string {
  if (e instanceof Error) {
    const cause = (e as { cause?: unknown }).cause;
    return cause instanceof Error ? `${e.message} (${cause.message})` : e.message;
  }
  return String(e);
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignalLike): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** A capability handler: typed input in, JSON-encodable output out (or a thrown `PluginError`). */
export type CapabilityHandler<I, O> = (input: I, ctx: Context) => O | Promise<O>;
/** A hook handler: a filter answers a `HookAction` (nothing means continue); an observe hook's answer is ignored. */
export type HookHandler<E> = (
  event: E,
  ctx: Context,
) => HookAction | void | Promise<HookAction | void>;

/** Options of `Plugin.capability`. */
export interface CapabilityOptions<I> {
  /**
   * Turns the parsed JSON body into the handler's input, throwing when it does not fit; a
   * `PluginError` is answered as is, anything else as 400 `invalid_input` with its message.
   * Without it the body is passed on unchecked (the gateway validated it against the schema).
   */
  parse?: (body: unknown) => I;
}

/** Options of `new Plugin`. */
export interface PluginOptions {
  /** Largest request body; larger ones get 413 `payload_too_large`. */
  maxBodyBytes?: number;
  /** How long requests in flight may still run after SIGTERM before the process exits anyway. */
  drainTimeoutMs?: number;
  /** Where logs go; defaults to JSON lines on stdout filtered by `BERTH_LOG`. */
  logger?: Logger;
  /** Environment for `Context.call`; defaults to `process.env`. */
  env?: Record<string, string | undefined>;
}

/** What `GET /v1/describe` answers. */
export interface Describe {
  name: string;
  version: string;
  capabilities: { name: string }[];
  hooks: { name: string; mode: HookMode }[];
}

/** A server started by `Plugin.listen`. */
export interface RunningPlugin {
  /** The port it listens on. */
  readonly port: number;
  /**
   * Stops accepting connections, closes idle ones, lets requests in flight finish (at most
   * the drain timeout) and resolves with whether everything finished in time.
   */
  shutdown(): Promise<boolean>;
}

type Dispatch = (body: unknown, ctx: Context) => Promise<Answer>;
interface Answer {
  status: number;
  body?: string;
}

interface Route {
  kind: "healthz" | "describe" | "invoke" | "hook";
  name?: string;
}

// The path of a request target: the absolute form (`http://host/path?query`, which proxies
// send) is reduced to its path; the query is dropped.
function pathOf(url: string): string {
  let target = url;
  if (!target.startsWith("/")) {
    const absolute = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#]*(.*)$/.exec(target);
    if (absolute !== null) target = absolute[1].startsWith("/") ? absolute[1] : `/${absolute[1]}`;
  }
  return target.split("?", 1)[0].split("#", 1)[0];
}

// The protocol endpoint a request path names (its name percent-decoded); undefined for any other path.
function routeOf(path: string): Route | undefined {
  if (path === "/healthz") return { kind: "healthz" };
  if (path === "/v1/describe") return { kind: "describe" };
  const match = /^\/v1\/(invoke|hooks)\/([^/]+)$/.exec(path);
  if (match === null) return undefined;
  let name: string;
  try {
    name = decodeURIComponent(match[2]);
  } catch {
    return undefined;
  }
  return { kind: match[1] === "invoke" ? "invoke" : "hook", name };
}

/**
 * Reads `Berth-Deadline-Ms` from the raw header list: undefined when absent or too large to
 * time (no deadline of our own), a number of milliseconds otherwise. Throws 400
 * `bad_request` when it is malformed or sent more than once.
 */
export function deadlineFromHeaders(rawHeaders: string[]): number | undefined {
  const values: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    if (rawHeaders[i].toLowerCase() === "berth-deadline-ms") values.push(rawHeaders[i + 1]);
  }
  if (values.length === 0) return undefined;
  if (values.length > 1) {
    throw new PluginError(400, "bad_request", `the ${HEADER_DEADLINE_MS} header was sent ${values.length} times; send it once`);
  }
  const match = /^[ \t]*([0-9]+)[ \t]*$/.exec(values[0]);
  if (match === null) {
    throw new PluginError(
      400,
      "bad_request",
      `the ${HEADER_DEADLINE_MS} header must be a whole number of milliseconds, got ${JSON.stringify(values[0])}`,
    );
  }
  const ms = Number(match[1]);
  return ms > MAX_TIMER_MS ? undefined : ms;
}

function firstHeader(req: IncomingMessage, name: string): string | undefined {
  const lower = name.toLowerCase();
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    if (req.rawHeaders[i].toLowerCase() === lower) return req.rawHeaders[i + 1];
  }
  return undefined;
}

function errorAnswer(error: PluginError): Answer {
  return { status: error.status, body: JSON.stringify(error.body()) };
}

function thrownToError(thrown: unknown): PluginError | undefined {
  return thrown instanceof PluginError ? thrown : undefined;
}

function elapsedMs(started: bigint): number {
  return Math.round(Number(process.hrtime.bigint() - started) / 1e4) / 100;
}

/** A plugin: its name, version, capabilities and hooks, served as protocol v1. */
export class Plugin {
  private readonly capabilities = new Map<string, Dispatch>();
  private readonly hooks = new Map<string, { mode: HookMode; dispatch: Dispatch }>();
  private readonly maxBodyBytes: number;
  private readonly drainTimeoutMs: number;
  private readonly logger: Logger;
  private readonly env?: Record<string, string | undefined>;
  private draining = false;

  /** `name` and `version` must equal the manifest's `metadata.name` and `spec.version`. */
  constructor(
    readonly name: string,
    readonly version: string,
    options: PluginOptions = {},
  ) {
    this.maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    this.drainTimeoutMs = options.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS;
    this.logger = options.logger ?? defaultLogger();
    this.env = options.env;
  }

  /**
   * Serves `POST /v1/invoke/{name}`: the body is parsed as JSON (and by `options.parse`),
   * `handler` runs, and what it returns is answered as JSON with 200. A thrown
   * `PluginError` is answered as itself; anything else thrown is logged and answered
   * 500 `internal`.
   */
  capability<I = unknown, O = unknown>(
    name: string,
    handler: CapabilityHandler<I, O>,
    options: CapabilityOptions<I> = {},
  ): this {
    if (this.capabilities.has(name)) throw new Error(`capability ${JSON.stringify(name)} is registered twice`);
    this.capabilities.set(name, async (body, ctx) => {
      let input: I;
      if (options.parse === undefined) {
        input = body as I;
      } else {
        try {
          input = options.parse(body);
        } catch (e) {
          throw thrownToError(e) ?? invalidInput(`the input does not fit: ${describeThrown(e)}`);
        }
      }
      const output = await handler(input, ctx);
      return { status: 200, body: JSON.stringify(output === undefined ? null : output) };
    });
    return this;
  }

  /**
   * Serves `POST /v1/hooks/{name}`: the envelope's `event` (which must be a JSON object)
   * goes to `handler`. A filter answers 200 with the returned action (nothing returned
   * means continue); an observe hook answers 204.
   */
  hook<E extends JsonObject = JsonObject>(name: string, mode: HookMode, handler: HookHandler<E>): this {
    if (this.hooks.has(name)) throw new Error(`hook ${JSON.stringify(name)} is registered twice`);
    if (mode !== "filter" && mode !== "observe") throw new Error(`hook mode must be "filter" or "observe", got ${JSON.stringify(mode)}`);
    const dispatch: Dispatch = async (body, ctx) => {
      if (!isObject(body) || !("event" in body)) {
        throw invalidInput('a hook request is {"event": {...}}; the body has no "event"');
      }
      if (!isObject(body.event)) throw invalidInput('the hook request\'s "event" must be a JSON object');
      const action = await handler(body.event as E, ctx);
      if (mode === "observe") return { status: 204 };
      return { status: 200, body: JSON.stringify(checkAction(action)) };
    };
    this.hooks.set(name, { mode, dispatch });
    return this;
  }

  /** What `GET /v1/describe` answers: everything registered, in registration order. */
  describe(): Describe {
    return {
      name: this.name,
      version: this.version,
      capabilities: [...this.capabilities.keys()].map((name) => ({ name })),
      hooks: [...this.hooks].map(([name, hook]) => ({ name, mode: hook.mode })),
    };
  }

  /**
   * Listens on `host:port` (port 0 picks a free one) and serves until `shutdown()`.
   * `run()` is this plus the environment, signals and exit code.
   */
  listen(port: number, host = "0.0.0.0"): Promise<RunningPlugin> {
    const http = require("node:http") as HttpModule;
    // No Host header is needed (Node would refuse HTTP/1.1 requests without one, with an empty body).
    const server = http.createServer({ maxHeaderSize: MAX_HEADER_BYTES, requireHostHeader: false }, (req, res) =>
      this.serve(req, res),
    );
    // Requests Node cannot parse are answered with a JSON error body too, then the connection closes.
    server.on("clientError", (err, socket) => {
      const inProgress = socket._httpMessage;
      if (err.code === "ECONNRESET" || !socket.writable || (inProgress != null && inProgress.headersSent)) {
        socket.destroy();
        return;
      }
      const error = clientErrorOf(err);
      this.logger.info("refused", { status: error.status, code: error.code, message: error.message });
      socket.end(rawErrorAnswer(error, http.STATUS_CODES[error.status] ?? "Error"));
    });
    server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
    // Node closes a keep-alive connection whose next headers take longer than this.
    server.headersTimeout = KEEP_ALIVE_TIMEOUT_MS + 5_000;
    // A deadline-free request may legitimately run long; Berth-Deadline-Ms bounds the rest.
    server.requestTimeout = 0;
    server.on("connection", (socket) => socket.setNoDelay(true));
    return new Promise((resolve, reject) => {
      server.on("error", reject);
      server.listen(port, host, () => {
        const address = server.address();
        const bound = typeof address === "object" && address !== null ? address.port : port;
        resolve({ port: bound, shutdown: () => this.shutdown(server) });
      });
    });
  }

  private shutdown(server: HttpServer): Promise<boolean> {
    this.draining = true;
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), this.drainTimeoutMs);
      server.close(() => {
        clearTimeout(timer);
        resolve(true);
      });
      server.closeIdleConnections();
    });
  }

  /**
   * The whole `main` of a plugin: listens on `0.0.0.0:$BERTH_PORT` (8080 when unset), logs
   * JSON lines, and on SIGTERM or SIGINT finishes the requests in flight and exits 0.
   * Exits 1 when `BERTH_PORT` is not a port or the port cannot be opened.
   */
  run(): void {
    const raw = process.env.BERTH_PORT;
    const port = raw === undefined ? DEFAULT_PORT : parsePort(raw);
    if (port === undefined) {
      this.logger.error(`BERTH_PORT=${JSON.stringify(raw)} is not a port number (use 1-65535, e.g. 8080)`);
      process.exit(1);
    }
    this.listen(port).then(
      (running) => {
        let stopping = false;
        const stop = (signal: string): void => {
          if (stopping) return;
          stopping = true;
          this.logger.info("shutting down: finishing requests in flight", { signal });
          running.shutdown().then((finished) => {
            if (finished) {
              this.logger.info("stopped");
            } else {
              this.logger.warn("requests still in flight after the drain timeout; exiting anyway", {
                drain_ms: this.drainTimeoutMs,
              });
            }
            process.exit(0);
          });
        };
        process.on("SIGTERM", () => stop("SIGTERM"));
        process.on("SIGINT", () => stop("SIGINT"));
        // Only now: whoever waits for this line may signal the process at once.
        this.logger.info("listening", { plugin: this.name, version: this.version, port: running.port });
      },
      (e: unknown) => {
        this.logger.error(`could not listen on 0.0.0.0:${port}: ${describeThrown(e)}`);
        process.exit(1);
      },
    );
  }

  // One request, in the order of the protocol's error precedence.
  private serve(req: IncomingMessage, res: ServerResponse): void {
    const started = process.hrtime.bigint();
    const requestId = firstHeader(req, HEADER_REQUEST_ID);
    const log = this.logger.withRequestId(requestId);
    const path = pathOf(req.url ?? "/");
    const method = req.method ?? "GET";
    const route = req.httpVersionMajor === 1 ? routeOf(path) : undefined;
    let answered = false;
    const answer = (a: Answer, fields: JsonObject = {}): void => {
      if (answered) return;
      answered = true;
      res.statusCode = a.status;
      if (requestId !== undefined) res.setHeader(HEADER_REQUEST_ID, requestId);
      // While draining, a connection closes after its answer instead of waiting idle. After
      // a 413 it closes too, rather than reading a body of any size to keep it usable; so
      // does it after a request in another HTTP version.
      if (this.draining || a.status === 413 || a.status === 505) res.setHeader("Connection", "close");
      if (a.body !== undefined) {
        res.setHeader("Content-Type", "application/json");
        res.setHeader("Content-Length", Buffer.byteLength(a.body));
        // As bytes: with a string body Node writes the head as UTF-8 too, which would
        // re-encode a non-ASCII request id it read as latin1.
        res.end(Buffer.from(a.body, "utf8"));
      } else {
        res.end();
      }
      const line = { method, path, status: a.status, elapsed_ms: elapsedMs(started), ...fields };
      if (route?.kind === "healthz" || route?.kind === "describe") log.debug("answered", line);
      else if (a.status >= 500) log.warn("failed", line);
      else if (a.status >= 400) log.info("refused", line);
      else log.info("answered", line);
    };
    const fail = (error: PluginError): void =>
      answer(errorAnswer(error), { code: error.code, message: error.message });

    if (req.httpVersionMajor !== 1) {
      drain(req);
      return fail(new PluginError(505, "http_version_not_supported", "this plugin speaks HTTP/1.1 only"));
    }
    if (route === undefined) {
      drain(req);
      return fail(
        notFound(
          "not_found",
          "no such endpoint; protocol v1 serves /healthz, /v1/describe, /v1/invoke/{capability} and /v1/hooks/{hook}",
        ),
      );
    }
    const isGetRoute = route.kind === "healthz" || route.kind === "describe";
    const allowed = isGetRoute ? method === "GET" || method === "HEAD" : method === "POST";
    if (!allowed) {
      drain(req);
      res.setHeader("Allow", isGetRoute ? "GET, HEAD" : "POST");
      return fail(
        new PluginError(
          405,
          "method_not_allowed",
          `wrong method ${method} for ${path}: /healthz and /v1/describe take GET, /v1/invoke and /v1/hooks take POST`,
        ),
      );
    }
    if (route.kind === "healthz") {
      drain(req);
      return answer({ status: 200, body: '{"status":"ok"}' });
    }
    if (route.kind === "describe") {
      drain(req);
      return answer({ status: 200, body: JSON.stringify(this.describe()) });
    }

    const name = route.name ?? "";
    const dispatch = route.kind === "invoke" ? this.capabilities.get(name) : this.hooks.get(name)?.dispatch;
    const target = route.kind === "invoke" ? { capability: name } : { hook: name };
    if (dispatch === undefined) {
      drain(req);
      return fail(
        route.kind === "invoke"
          ? notFound(
              "unknown_capability",
              `this plugin has no capability ${JSON.stringify(name)}; GET /v1/describe lists the ones it has`,
            )
          : notFound(
              "unknown_hook",
              `this plugin does not subscribe to hook ${JSON.stringify(name)}; GET /v1/describe lists its hooks`,
            ),
      );
    }

    let budget: number | undefined;
    try {
      budget = deadlineFromHeaders(req.rawHeaders);
    } catch (e) {
      drain(req);
      return fail(thrownToError(e) ?? internal(describeThrown(e)));
    }
    if (budget === 0) {
      drain(req);
      return fail(deadlineExceeded(0));
    }

    const controller = new AbortController();
    let timer: TimerHandle | undefined;
    if (budget !== undefined) {
      const expired = deadlineExceeded(budget);
      timer = setTimeout(() => {
        controller.abort(expired);
        fail(expired);
      }, budget);
    }
    // A caller that hangs up has stopped listening too.
    res.on("close", () => {
      clearTimeout(timer);
      if (!res.writableFinished && !controller.signal.aborted) {
        controller.abort(new PluginError(499, "client_closed", "the caller closed the connection"));
      }
    });

    const ctx = new Context({
      requestId,
      caller: firstHeader(req, HEADER_CALLER),
      budgetMs: budget,
      signal: controller.signal,
      logger: this.logger,
      env: this.env,
    });

    readBody(req, this.maxBodyBytes)
      .then((bytes) => {
        if (answered) return undefined;
        let body: unknown;
        try {
          // JSON is UTF-8 (RFC 8259): bytes that are not are refused, not replaced with U+FFFD.
          body = JSON.parse(new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes));
        } catch (e) {
          throw new PluginError(400, "malformed_json", `the request body is not valid JSON: ${describeThrown(e)}`);
        }
        return dispatch(body, ctx);
      })
      .then(
        (result) => {
          clearTimeout(timer);
          if (result !== undefined) answer(result, target);
        },
        (e: unknown) => {
          clearTimeout(timer);
          const known = thrownToError(e);
          if (known !== undefined) return fail(known);
          log.error("the handler threw", { ...target, error: describeThrown(e), stack: (e as Error)?.stack });
          fail(internal("the plugin failed unexpectedly; its logs have the details"));
        },
      )
      // Answering can only fail on a socket already gone; never let that end the process.
      .catch((e: unknown) => log.warn("could not answer", { ...target, error: describeThrown(e) }));
  }
}

// The answer to a request Node's parser refused (its `clientError`).
function clientErrorOf(err: Error & { code?: string }): PluginError {
  switch (err.code) {
    case "HPE_HEADER_OVERFLOW":
      return new PluginError(
        431,
        "request_header_fields_too_large",
        `the request head is larger than this plugin's limit of ${MAX_HEADER_BYTES} bytes`,
      );
    case "HPE_INVALID_VERSION":
    case "HPE_PAUSED_H2_UPGRADE":
      return new PluginError(505, "http_version_not_supported", "this plugin speaks HTTP/1.1 only");
    case "HPE_INVALID_TRANSFER_ENCODING":
      if (!/content-length/i.test(err.message)) {
        return new PluginError(501, "not_implemented", "only the chunked transfer coding is accepted");
      }
      break;
    case "HPE_CHUNK_EXTENSIONS_OVERFLOW":
      return new PluginError(413, "payload_too_large", "the chunk extensions are too large");
    case "ERR_HTTP_REQUEST_TIMEOUT":
      return new PluginError(408, "request_timeout", "the request head did not arrive in time");
  }
  return new PluginError(400, "bad_request", `the request is not valid HTTP/1.1: ${err.message}`);
}

// A whole error answer as raw bytes, for a socket that has no ServerResponse.
function rawErrorAnswer(error: PluginError, reason: string): string {
  const body = JSON.stringify(error.body());
  return (
    `HTTP/1.1 ${error.status} ${reason}\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
  );
}

function parsePort(raw: string): number | undefined {
  const trimmed = raw.trim();
  if (!/^[0-9]{1,5}$/.test(trimmed)) return undefined;
  const port = Number(trimmed);
  return port >= 1 && port <= 65535 ? port : undefined;
}

// Reads the body without keeping it, so the connection can carry the next request.
function drain(req: IncomingMessage): void {
  req.resume();
}

// The body, or 413 `payload_too_large` as soon as it passes `limit` (the rest is then read
// and dropped so the connection stays usable).
function readBody(req: IncomingMessage, limit: number): Promise<BufferLike> {
  return new Promise((resolve, reject) => {
    const tooLarge = (): PluginError =>
      new PluginError(
        413,
        "payload_too_large",
        `the request body is larger than this plugin's limit of ${limit} bytes`,
      );
    const declared = req.headers["content-length"];
    if (typeof declared === "string" && /^[0-9]+$/.test(declared) && Number(declared) > limit) {
      req.resume();
      reject(tooLarge());
      return;
    }
    const chunks: BufferLike[] = [];
    let size = 0;
    let over = false;
    req.on("data", (chunk) => {
      if (over) return;
      size += chunk.length;
      if (size > limit) {
        over = true;
        chunks.length = 0;
        reject(tooLarge());
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => {
      if (!over) resolve(Buffer.concat(chunks));
    });
    req.on("error", (e) =>
      reject(new PluginError(400, "bad_request", `could not read the request body: ${e.message}`)),
    );
  });
}
