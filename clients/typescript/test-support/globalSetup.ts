/**
 * Vitest `globalSetup` shared by the packages' tests against the real server
 * (`packages/client` integration tests, `packages/react` hook and component tests).
 * Starts the real `roster` server once per Vitest run:
 *
 * 1. finds the repository root (the directory with `crates/roster`);
 * 2. builds `target/release/roster` with cargo if it is missing or older than the
 *    sources it is built from (set `ROSTER_BIN` to use another binary as is);
 * 3. runs it on 127.0.0.1:0 with a fresh SQLite database, a random JWT secret and
 *    short timings, and reads the bound address from its stderr;
 * 4. hands the address and secret to the tests (`inject("roster")`, read by
 *    `./server.ts`).
 *
 * A package that needs a config file (e.g. `compat`, for `[[pusher.apps]]`) has a
 * `globalSetup` of its own that calls {@link setupServer} with `configToml`.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { TestProject } from "vitest/node";

export interface RosterServerInfo {
  /** `127.0.0.1:PORT` */
  addr: string;
  secret: string;
  /** The binary, for tests that run a server of their own (`ownServer` in `./server.ts`). */
  bin: string;
}

declare module "vitest" {
  export interface ProvidedContext {
    roster: RosterServerInfo;
  }
}

/** Timings short enough for tests that wait on grace periods. */
export const FAST_TIMINGS: Record<string, string> = {
  ROSTER_TIMING_HEARTBEAT_INTERVAL: "500ms",
  ROSTER_TIMING_SESSION_TIMEOUT: "2s",
  ROSTER_TIMING_LEAVE_GRACE: "1s",
  ROSTER_TIMING_DIFF_WINDOW: "20ms",
  ROSTER_TIMING_AWAY_AFTER: "1s",
};

function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, "crates", "roster", "Cargo.toml"))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error("cannot find the repository root (a directory with crates/roster)");
    dir = up;
  }
}

function newestMtime(path: string): number {
  if (!existsSync(path)) return 0;
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = st.mtimeMs;
  for (const e of readdirSync(path)) newest = Math.max(newest, newestMtime(join(path, e)));
  return newest;
}

function ensureBinary(root: string): string {
  if (process.env.ROSTER_BIN) return resolve(process.env.ROSTER_BIN);
  const bin = join(root, "target", "release", process.platform === "win32" ? "roster.exe" : "roster");
  const sources = [
    join(root, "crates", "roster", "src"),
    join(root, "crates", "roster", "migrations"),
    // The dashboard's files and the build script are compiled in too.
    join(root, "crates", "roster", "dashboard"),
    join(root, "crates", "roster", "build.rs"),
    join(root, "crates", "roster", "Cargo.toml"),
    join(root, "Cargo.toml"),
    join(root, "Cargo.lock"),
  ];
  const built = existsSync(bin) ? statSync(bin).mtimeMs : 0;
  const newest = Math.max(...sources.map(newestMtime));
  if (built > 0 && built >= newest) return bin;
  console.log(
    built === 0
      ? `[roster] ${bin} is missing: cargo build --release -p roster --bin roster`
      : "[roster] release binary older than its sources: cargo build --release -p roster --bin roster",
  );
  const r = spawnSync("cargo", ["build", "--release", "--locked", "-p", "roster", "--bin", "roster"], {
    cwd: root,
    stdio: "inherit",
  });
  if (r.status !== 0) throw new Error(`cargo build failed (${r.status ?? r.signal})`);
  return bin;
}

/**
 * Starts `bin` with FAST_TIMINGS on `listen` (default any free port) and resolves once it listens.
 * `configFile`: a TOML file passed as `--config` (for what only the file sets, such as
 * `[[pusher.apps]]`); the environment's settings still apply on top of it.
 */
export function startServer(
  bin: string,
  dir: string,
  secret: string,
  listen = "127.0.0.1:0",
  configFile?: string,
): Promise<{ child: ChildProcess; addr: string; log: string[] }> {
  const env: NodeJS.ProcessEnv = {};
  // The server refuses unknown ROSTER_* variables: start from a clean slate.
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("ROSTER_")) env[k] = v;
  Object.assign(env, FAST_TIMINGS, {
    ROSTER_AUTH_JWT_SECRET: secret,
    ROSTER_DATABASE_URL: `sqlite://${join(dir, "roster.db")}`,
    ROSTER_LOG_LEVEL: "warn",
  });
  const args = configFile ? ["--config", configFile, "--listen", listen] : ["--listen", listen];
  const child = spawn(bin, args, { cwd: dir, env, stdio: ["ignore", "ignore", "pipe"] });
  const log: string[] = [];
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`roster did not start within 20 s:\n${log.join("\n")}`));
    }, 20_000);
    let buf = "";
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        log.push(line);
        if (log.length > 500) log.shift();
        const m = /roster listening on http:\/\/(\S+)/.exec(line);
        if (m) {
          clearTimeout(timer);
          resolvePromise({ child, addr: m[1]!, log });
        }
      }
    });
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`roster exited early (${code ?? signal}):\n${log.join("\n")}`));
    });
  });
}

export interface SetupOptions {
  /**
   * TOML written to `roster.toml` in the server's directory and passed as
   * `--config` (e.g. `[[pusher.apps]]`, which only the file can set).
   */
  configToml?: string;
}

/** The shared server, started with {@link SetupOptions}: for `globalSetup` files of their own. */
export async function setupServer(project: TestProject, options: SetupOptions = {}): Promise<() => Promise<void>> {
  const root = repoRoot();
  const bin = ensureBinary(root);
  const dir = mkdtempSync(join(tmpdir(), "roster-ts-"));
  const secret = randomBytes(24).toString("hex");
  let configFile: string | undefined;
  if (options.configToml !== undefined) {
    configFile = join(dir, "roster.toml");
    writeFileSync(configFile, options.configToml);
  }
  const { child, addr, log } = await startServer(bin, dir, secret, "127.0.0.1:0", configFile);
  child.removeAllListeners("exit");
  let exited = false;
  child.on("exit", () => {
    exited = true;
  });
  project.provide("roster", { addr, secret, bin });
  return async () => {
    if (!exited) {
      child.kill("SIGTERM");
      const deadline = Date.now() + 5000;
      while (!exited && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      if (!exited) child.kill("SIGKILL");
    }
    rmSync(dir, { recursive: true, force: true });
    if (process.env.ROSTER_TEST_LOG) console.log(log.join("\n"));
  };
}

export default function setup(project: TestProject): Promise<() => Promise<void>> {
  return setupServer(project);
}
