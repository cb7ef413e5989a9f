// Vite build of the console. Deterministic: content-hashed names, no timestamps, no
// sourcemaps, one CSS file; `console-routes.txt` (the SPA's path prefixes, from
// src/router.ts) is written beside index.html for the gateway's fallback rule.
import { defineConfig } from "vitest/config";
import type { Plugin } from "vite";
import { CONSOLE_PREFIXES } from "./src/router.ts";

function consoleRoutes(): Plugin {
  return {
    name: "stockmesh-console-routes",
    generateBundle() {
      this.emitFile({ type: "asset", fileName: "console-routes.txt", source: `${CONSOLE_PREFIXES.join("\n")}\n` });
    },
  };
}

export default defineConfig({
  plugins: [consoleRoutes()],
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    target: "es2022",
    cssCodeSplit: false,
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
    assetsInlineLimit: 0,
  },
  test: {
    include: ["test/**/*.test.ts"],
    environment: "node",
  },
});
