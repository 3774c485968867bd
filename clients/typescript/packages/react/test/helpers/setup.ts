import { cleanup, configure } from "@testing-library/react";
import { afterEach } from "vitest";

// The hooks talk to the real server: give `waitFor`/`findBy*` a deadline that
// holds on a busy machine (they return as soon as the condition is met).
configure({ asyncUtilTimeout: 5000 });

// Vitest runs without globals, so Testing Library cannot register this itself.
afterEach(() => {
  cleanup();
});
