import { defineConfig } from "tsup";

export default defineConfig({
  entry: ["src/index.ts"],
  format: ["esm", "cjs"],
  dts: true,
  sourcemap: true,
  clean: true,
  target: "es2020",
  platform: "neutral",
  // React, react/jsx-runtime and @roster/client are peer dependencies: never bundled.
  external: ["react", "react/jsx-runtime", "@roster/client"],
  // Hooks and components run on the client only (React Server Components).
  banner: { js: '"use client";' },
});
