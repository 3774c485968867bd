import { defineConfig } from "vitest/config";

// End-to-end tests: real headless Chromium (playwright-core, /usr/bin/chromium)
// opening the built app (dist/) against the real `roster` server started by the
// shared globalSetup (clients/typescript/test-support).
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    environment: "node",
    globalSetup: ["../../test-support/globalSetup.ts"],
    fileParallelism: false,
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
