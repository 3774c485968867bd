import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/integration/**/*.test.ts"],
    environment: "node",
    // Builds (if stale) and starts the real `roster` binary once for all files
    // (clients/typescript/test-support, shared with the other packages).
    globalSetup: ["../../test-support/globalSetup.ts"],
    testTimeout: 20_000,
    hookTimeout: 30_000,
  },
});
