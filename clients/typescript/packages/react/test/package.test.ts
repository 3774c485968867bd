// @vitest-environment node
/**
 * The built package (`npm run build` first): ESM and CJS entry points load in
 * plain Node through the `exports` map, types are emitted for both, and React and
 * the core client stay peer dependencies (never bundled).
 */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const pkgDir = join(dirname(fileURLToPath(import.meta.url)), "..");
const workspace = join(pkgDir, "..", "..");
const pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8")) as {
  dependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
};

const EXPECTED = [
  "RosterProvider",
  "useRoster",
  "usePresence",
  "useMyState",
  "useFieldLock",
  "useOnlineStatus",
  "useEntityState",
  "useOthers",
  "useOther",
  "useEventListener",
  "useEmit",
  "useErrorListener",
  "useConnectionStatus",
  "shallowEqual",
  "PresenceIndicator",
  "FieldLockIndicator",
  "LastSeen",
];

describe("the built package", () => {
  it("has been built, with types for ESM and CJS and a default stylesheet", () => {
    for (const f of ["dist/index.js", "dist/index.cjs", "dist/index.d.ts", "dist/index.d.cts", "styles.css"]) {
      expect(existsSync(join(pkgDir, f)), `${f} missing: run npm run build`).toBe(true);
    }
  });

  it("has no runtime dependencies: React and @roster/client are peers, imported, not bundled", () => {
    expect(pkg.dependencies ?? {}).toEqual({});
    expect(Object.keys(pkg.peerDependencies ?? {}).sort()).toEqual(["@roster/client", "react"]);
    const esm = readFileSync(join(pkgDir, "dist", "index.js"), "utf8");
    const imported = [...esm.matchAll(/^import\s.+from\s+"([^"]+)"/gm)].map((m) => m[1]);
    expect([...new Set(imported)].sort()).toEqual(["@roster/client", "react", "react/jsx-runtime"]);
    expect(esm.startsWith('"use client";')).toBe(true);
    expect(esm).not.toMatch(/class RosterClient\b/);
  });

  it("loads as ESM (import) and as CJS (require) in plain Node by its package name", () => {
    const names = JSON.stringify(EXPECTED);
    const esm = execFileSync(
      process.execPath,
      ["--input-type=module", "-e", `import * as m from "@roster/react"; console.log(JSON.stringify(${names}.filter((n) => !(n in m))))`],
      { cwd: workspace, encoding: "utf8" },
    );
    expect(JSON.parse(esm)).toEqual([]);
    const cjs = execFileSync(
      process.execPath,
      ["-e", `const m = require("@roster/react"); console.log(JSON.stringify(${names}.filter((n) => !(n in m))))`],
      { cwd: workspace, encoding: "utf8" },
    );
    expect(JSON.parse(cjs)).toEqual([]);
  });
});
