import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// Static build (dist/), served as is; relative asset paths so any server/path works.
export default defineConfig({
  base: "./",
  plugins: [react()],
  server: { host: "127.0.0.1" },
  preview: { host: "127.0.0.1" },
  build: { outDir: "dist", emptyOutDir: true },
});
