// The parts of Node the tests use (no @types/node is available to the build).

declare const process: {
  env: Record<string, string | undefined>;
  execPath: string;
  stdout: { write(text: string): boolean };
};
declare const __dirname: string;
declare function setTimeout(callback: () => void, ms: number): unknown;

interface Buffer {
  readonly length: number;
  toString(encoding?: string): string;
  indexOf(value: string): number;
  subarray(start: number, end?: number): Buffer;
}
declare const Buffer: {
  from(data: string | number[], encoding?: string): Buffer;
  alloc(size: number): Buffer;
  concat(chunks: Buffer[]): Buffer;
  byteLength(text: string): number;
};

declare module "node:test" {
  type Body = () => void | Promise<void>;
  export function test(name: string, body: Body): Promise<void>;
  export function test(name: string, options: { timeout?: number }, body: Body): Promise<void>;
  export function before(body: Body): void;
  export function after(body: Body): void;
}

declare module "node:assert/strict" {
  interface Assert {
    (value: unknown, message?: string): asserts value;
    ok(value: unknown, message?: string): asserts value;
    fail(message?: string): never;
    equal<T>(actual: unknown, expected: T, message?: string): asserts actual is T;
    notEqual(actual: unknown, expected: unknown, message?: string): void;
    deepEqual(actual: unknown, expected: unknown, message?: string): void;
    match(actual: string, pattern: RegExp, message?: string): void;
    rejects(promise: Promise<unknown>, expected?: unknown): Promise<void>;
  }
  const assert: Assert;
  export default assert;
}

declare module "node:net" {
  export interface Socket {
    write(data: string | Buffer): boolean;
    end(): void;
    destroy(): void;
    setNoDelay(noDelay: boolean): void;
    on(event: "data", listener: (chunk: Buffer) => void): this;
    on(event: "close" | "end" | "connect", listener: () => void): this;
    on(event: "error", listener: (err: Error) => void): this;
    once(event: "connect", listener: () => void): this;
    once(event: "error", listener: (err: Error) => void): this;
  }
  export interface Server {
    listen(port: number, host: string, callback: () => void): this;
    address(): { port: number };
    close(callback?: () => void): this;
  }
  export function connect(port: number, host: string): Socket;
  export function createServer(): Server;
}

declare module "node:http" {
  export interface IncomingMessage {
    method?: string;
    url?: string;
    headers: Record<string, string | string[] | undefined>;
    on(event: "data", listener: (chunk: Buffer) => void): this;
    on(event: "end", listener: () => void): this;
  }
  export interface ServerResponse {
    statusCode: number;
    setHeader(name: string, value: string): this;
    end(body?: string): this;
  }
  export interface Server {
    listen(port: number, host: string, callback: () => void): this;
    address(): { port: number };
    close(callback?: () => void): this;
    closeAllConnections(): void;
  }
  export function createServer(listener: (req: IncomingMessage, res: ServerResponse) => void): Server;
}

declare module "node:child_process" {
  export interface ChildProcess {
    readonly pid?: number;
    readonly exitCode: number | null;
    stdout: { on(event: "data", listener: (chunk: Buffer) => void): void };
    stderr: { on(event: "data", listener: (chunk: Buffer) => void): void };
    kill(signal?: string): boolean;
    on(event: "exit", listener: (code: number | null, signal: string | null) => void): this;
  }
  export function spawnSync(
    command: string,
    args: string[],
    options: { cwd?: string; encoding: "utf8" },
  ): { status: number | null; stdout: string; stderr: string; error?: Error };
  export function spawn(
    command: string,
    args: string[],
    options: { env: Record<string, string | undefined>; stdio?: string[] },
  ): ChildProcess;
}

declare module "node:fs" {
  export function mkdtempSync(prefix: string): string;
  export function mkdirSync(path: string, options?: { recursive?: boolean }): void;
  export function readFileSync(path: string, encoding: "utf8"): string;
  export function writeFileSync(path: string, data: string): void;
  export function rmSync(path: string, options?: { recursive?: boolean; force?: boolean }): void;
}

declare module "node:os" {
  export function tmpdir(): string;
}
