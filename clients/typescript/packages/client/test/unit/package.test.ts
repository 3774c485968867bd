/**
 * The built package (`npm run build` first): ESM and CJS entry points load in
 * plain Node through the `exports` map, types are emitted for both, and the core
 * client has no runtime dependencies.
 */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import type { WebSocketConstructor } from "../../src/index.js";

const pkgDir = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const workspace = join(pkgDir, "..", "..");
const pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8")) as {
  dependencies?: Record<string, string>;
  exports: Record<string, { import: { types: string; default: string }; require: { types: string; default: string } }>;
};

const EXPECTED = ["RosterClient", "Room", "Watch", "RosterError", "RosterState", "formatLastSeen", "CloseCode", "SERVER_ERROR_CODES", "MAX_EVENT_NAME_LENGTH", "MAX_EVENT_DATA_BYTES"];

describe("the built package", () => {
  it("has been built", () => {
    for (const f of ["index.js", "index.cjs", "index.d.ts", "index.d.cts"]) {
      expect(existsSync(join(pkgDir, "dist", f)), `dist/${f} missing: run npm run build`).toBe(true);
    }
    const e = pkg.exports["."]!;
    for (const f of [e.import.types, e.import.default, e.require.types, e.require.default]) {
      expect(existsSync(join(pkgDir, f)), f).toBe(true);
    }
  });

  it("has no runtime dependencies and imports nothing at run time", () => {
    expect(pkg.dependencies ?? {}).toEqual({});
    const esm = readFileSync(join(pkgDir, "dist", "index.js"), "utf8");
    const cjs = readFileSync(join(pkgDir, "dist", "index.cjs"), "utf8");
    expect(esm).not.toMatch(/^\s*import\s.+from\s/m);
    expect(cjs).not.toMatch(/require\(["'][^"']+["']\)/);
  });

  it("loads as ESM (import) and as CJS (require) in plain Node by its package name", () => {
    const names = JSON.stringify(EXPECTED);
    const esm = execFileSync(
      process.execPath,
      ["--input-type=module", "-e", `import * as m from "@roster/client"; console.log(JSON.stringify(${names}.filter((n) => !(n in m))))`],
      { cwd: workspace, encoding: "utf8" },
    );
    expect(JSON.parse(esm)).toEqual([]);
    const cjs = execFileSync(
      process.execPath,
      ["-e", `const m = require("@roster/client"); console.log(JSON.stringify(${names}.filter((n) => !(n in m))))`],
      { cwd: workspace, encoding: "utf8" },
    );
    expect(JSON.parse(cjs)).toEqual([]);
    const fmt = execFileSync(
      process.execPath,
      ["-e", `const { formatLastSeen } = require("@roster/client"); console.log(formatLastSeen(Date.now() - 3 * 60000, "en"))`],
      { cwd: workspace, encoding: "utf8" },
    );
    expect(fmt.trim()).toBe("3 minutes ago");
  });

  it("accepts the browser's WebSocket type (compile-time check)", () => {
    // Type-checked by `npm run typecheck`: the DOM WebSocket fits the option.
    const ctor: WebSocketConstructor | undefined = (globalThis as { WebSocket?: typeof WebSocket }).WebSocket;
    expect(ctor === undefined || typeof ctor === "function").toBe(true);
  });
});
