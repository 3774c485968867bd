import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.{ts,tsx}"],
    environment: "jsdom",
    setupFiles: ["test/helpers/setup.ts"],
    // The real `roster` server, started once for all files (shared with
    // @roster/client's integration tests: clients/typescript/test-support).
    globalSetup: ["../../test-support/globalSetup.ts"],
    testTimeout: 20_000,
    hookTimeout: 30_000,
  },
});
