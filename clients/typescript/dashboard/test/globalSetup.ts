/**
 * Vitest `globalSetup` of the dashboard's end-to-end tests: like the shared one
 * (`../../test-support/globalSetup.ts`, whose FAST_TIMINGS it uses), but the
 * server also gets short alert and dashboard intervals, so that a capacity rule
 * fires within a fraction of a second and the live stream pushes every 200 ms:
 *
 *   ROSTER_ALERTS_EVAL_INTERVAL=200ms, ROSTER_DASHBOARD_UPDATE_INTERVAL=200ms
 *
 * The binary is target/release/roster, built with cargo when missing or older
 * than its sources — which here include crates/roster/dashboard, the files the
 * binary embeds (ROSTER_BIN=/path/to/roster uses a given binary as is).
 * The address and secret are provided as `roster`, as the shared setup does, so
 * `../../test-support/server.ts` (tokens, REST, polling) works unchanged.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { TestProject } from "vitest/node";
import { FAST_TIMINGS } from "../../test-support/globalSetup.js";

/** What this suite adds to the shared FAST_TIMINGS. */
export const DASHBOARD_TIMINGS: Record<string, string> = {
  ROSTER_ALERTS_EVAL_INTERVAL: "200ms",
  ROSTER_DASHBOARD_UPDATE_INTERVAL: "200ms",
};

export function repoRoot(): string {
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

export function ensureBinary(root: string): string {
  if (process.env.ROSTER_BIN) return resolve(process.env.ROSTER_BIN);
  const bin = join(root, "target", "release", process.platform === "win32" ? "roster.exe" : "roster");
  const sources = [
    join(root, "crates", "roster", "src"),
    join(root, "crates", "roster", "migrations"),
    join(root, "crates", "roster", "dashboard"),
    join(root, "crates", "roster", "build.rs"),
    join(root, "crates", "roster", "Cargo.toml"),
    join(root, "Cargo.toml"),
    join(root, "Cargo.lock"),
  ];
  const built = existsSync(bin) ? statSync(bin).mtimeMs : 0;
  if (built > 0 && built >= Math.max(...sources.map(newestMtime))) return bin;
  console.log(`[roster] ${built === 0 ? "missing" : "older than its sources (or the dashboard's files)"}: cargo build --release -p roster --bin roster`);
  const r = spawnSync("cargo", ["build", "--release", "--locked", "-p", "roster", "--bin", "roster"], { cwd: root, stdio: "inherit" });
  if (r.status !== 0) throw new Error(`cargo build failed (${r.status ?? r.signal})`);
  return bin;
}

/** Starts `bin` on 127.0.0.1:0 with FAST_TIMINGS + DASHBOARD_TIMINGS; resolves once it listens. */
export function startDashboardServer(
  bin: string,
  dir: string,
  secret: string,
): Promise<{ child: ChildProcess; addr: string; log: string[] }> {
  const env: NodeJS.ProcessEnv = {};
  // The server refuses unknown ROSTER_* variables: start from a clean slate.
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("ROSTER_")) env[k] = v;
  Object.assign(env, FAST_TIMINGS, DASHBOARD_TIMINGS, {
    ROSTER_AUTH_JWT_SECRET: secret,
    ROSTER_DATABASE_URL: `sqlite://${join(dir, "roster.db")}`,
    ROSTER_LOG_LEVEL: "warn",
  });
  const child = spawn(bin, ["--listen", "127.0.0.1:0"], { cwd: dir, env, stdio: ["ignore", "ignore", "pipe"] });
  const log: string[] = [];
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      fail(new Error(`roster did not start within 20 s:\n${log.join("\n")}`));
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
          ok({ child, addr: m[1]!, log });
        }
      }
    });
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      fail(new Error(`roster exited early (${code ?? signal}):\n${log.join("\n")}`));
    });
  });
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const bin = ensureBinary(repoRoot());
  const dir = mkdtempSync(join(tmpdir(), "roster-dashboard-"));
  const secret = randomBytes(24).toString("hex");
  const { child, addr, log } = await startDashboardServer(bin, dir, secret);
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
