// Test plumbing: a raw HTTP/1.1 client over one TCP connection, so tests control every
// byte (repeated headers, chunked bodies, half-sent bodies, keep-alive reuse).

import * as net from "node:net";
import { spawn, ChildProcess } from "node:child_process";
import { Logger, Plugin, RunningPlugin } from "../src/berth.js";

/** One parsed answer. */
export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** The JSON body of an answer. */
export function json(response: RawResponse): any {
  return JSON.parse(response.body);
}

/** The error code of an error answer, checking the error body's shape on the way. */
export function errorCode(response: RawResponse): string {
  const body = json(response);
  if (typeof body?.error?.code !== "string" || typeof body?.error?.message !== "string") {
    throw new Error(`not an error body: ${response.body}`);
  }
  if (response.headers["content-type"] !== "application/json") {
    throw new Error(`error answered with content-type ${response.headers["content-type"]}`);
  }
  return body.error.code;
}

/** A client connection that sends raw bytes and reads answers one at a time. */
export class RawConnection {
  private buffer: Buffer = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  closed = false;

  private constructor(private readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on("data", (chunk) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.wake();
    });
    socket.on("close", () => {
      this.closed = true;
      this.wake();
    });
    socket.on("error", () => {
      this.closed = true;
      this.wake();
    });
  }

  static open(port: number): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, "127.0.0.1");
      socket.once("connect", () => resolve(new RawConnection(socket)));
      socket.once("error", reject);
    });
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  private more(): Promise<void> {
    if (this.closed) return Promise.reject(new Error("connection closed before a full answer"));
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  close(): void {
    this.socket.destroy();
  }

  /** Resolves once the server has closed the connection. */
  async waitClosed(): Promise<void> {
    while (!this.closed) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  /** Reads the next answer (Content-Length or chunked bodies). */
  async read(): Promise<RawResponse> {
    let end: number;
    while ((end = this.buffer.indexOf("\r\n\r\n")) < 0) await this.more();
    const head = this.buffer.subarray(0, end).toString("latin1").split("\r\n");
    this.buffer = this.buffer.subarray(end + 4);
    const status = Number(head[0].split(" ")[1]);
    const headers: Record<string, string> = {};
    for (const line of head.slice(1)) {
      const colon = line.indexOf(":");
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    let body = "";
    if (headers["content-length"] !== undefined) {
      const length = Number(headers["content-length"]);
      while (this.buffer.length < length) await this.more();
      body = this.buffer.subarray(0, length).toString("utf8");
      this.buffer = this.buffer.subarray(length);
    } else if (headers["transfer-encoding"] === "chunked") {
      for (;;) {
        let lineEnd: number;
        while ((lineEnd = this.buffer.indexOf("\r\n")) < 0) await this.more();
        const size = parseInt(this.buffer.subarray(0, lineEnd).toString("latin1"), 16);
        while (this.buffer.length < lineEnd + 2 + size + 2) await this.more();
        body += this.buffer.subarray(lineEnd + 2, lineEnd + 2 + size).toString("utf8");
        this.buffer = this.buffer.subarray(lineEnd + 2 + size + 2);
        if (size === 0) break;
      }
    }
    return { status, headers, body };
  }

  /** Sends one request and reads its answer. */
  async request(
    method: string,
    path: string,
    body?: string,
    headers: [string, string][] = [],
  ): Promise<RawResponse> {
    this.write(requestText(method, path, body, headers));
    return this.read();
  }
}

/** A request's bytes, with Content-Length when there is a body. */
export function requestText(
  method: string,
  path: string,
  body?: string,
  headers: [string, string][] = [],
): string {
  let text = `${method} ${path} HTTP/1.1\r\nHost: plugin\r\n`;
  for (const [name, value] of headers) text += `${name}: ${value}\r\n`;
  if (body !== undefined) text += `Content-Length: ${Buffer.byteLength(body)}\r\n`;
  return text + "\r\n" + (body ?? "");
}

/** One request on a fresh connection. */
export async function request(
  port: number,
  method: string,
  path: string,
  body?: string,
  headers: [string, string][] = [],
): Promise<RawResponse> {
  const connection = await RawConnection.open(port);
  try {
    return await connection.request(method, path, body, headers);
  } finally {
    connection.close();
  }
}

/** A plugin served on a free port of 127.0.0.1, with its log lines kept. */
export interface Served {
  port: number;
  logs: string[];
  running: RunningPlugin;
}

/** Builds a plugin with a logger that keeps its lines (at `threshold`, default DEBUG) and serves it. */
export async function serve(build: (logger: Logger) => Plugin, threshold = 0): Promise<Served> {
  const logs: string[] = [];
  const logger = new Logger(threshold, (line) => {
    logs.push(line);
  });
  const running = await build(logger).listen(0, "127.0.0.1");
  return { port: running.port, logs, running };
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A port nothing listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** A child process running a compiled plugin script, with its stdout kept. */
export class Child {
  stdout = "";
  stderr = "";
  readonly exited: Promise<{ code: number | null; signal: string | null }>;
  readonly process: ChildProcess;

  constructor(script: string, env: Record<string, string | undefined>) {
    this.process = spawn(process.execPath, [script], { env: { ...process.env, ...env } });
    this.process.stdout.on("data", (chunk) => (this.stdout += chunk.toString("utf8")));
    this.process.stderr.on("data", (chunk) => (this.stderr += chunk.toString("utf8")));
    this.exited = new Promise((resolve) =>
      this.process.on("exit", (code, signal) => resolve({ code, signal })),
    );
  }

  /** stdout's lines parsed as JSON (every line must be a JSON object). */
  logLines(): any[] {
    return this.stdout
      .split("\n")
      .filter((line) => line !== "")
      .map((line) => JSON.parse(line));
  }

  /** Waits until a log line says `message`, failing after `ms`. */
  async waitForLog(message: string, ms = 5000): Promise<any> {
    const until = Date.now() + ms;
    for (;;) {
      const line = this.stdout
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l))
        .find((l) => l.message === message);
      if (line !== undefined) return line;
      if (Date.now() > until || this.process.exitCode !== null) {
        throw new Error(`no log line ${JSON.stringify(message)}; stdout: ${this.stdout} stderr: ${this.stderr}`);
      }
      await delay(20);
    }
  }
}
