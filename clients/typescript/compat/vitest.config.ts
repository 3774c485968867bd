import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    environment: "node",
    // Builds (if stale) and starts the real `roster` binary once for all files, with a
    // config file holding three Pusher apps, one with a webhook receiver (test/globalSetup.ts, over
    // clients/typescript/test-support/globalSetup.ts).
    globalSetup: ["./test/globalSetup.ts"],
    testTimeout: 20_000,
    hookTimeout: 30_000,
  },
});
