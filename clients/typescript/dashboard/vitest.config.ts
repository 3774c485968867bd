import { defineConfig } from "vitest/config";

// End-to-end tests of the dashboard: real headless Chromium (playwright-core,
// /usr/bin/chromium) opening /dashboard as served by the real `roster` binary,
// started by ./test/globalSetup.ts with short alert and dashboard intervals.
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    environment: "node",
    globalSetup: ["./test/globalSetup.ts"],
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 120_000,
  },
});
