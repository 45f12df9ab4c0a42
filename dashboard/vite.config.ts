/// <reference types="vitest/config" />
// The dashboard's build: static files into the server's package data, served at "/".
import { defineConfig } from "vite";

export default defineConfig({
  base: "/",
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: {
    outDir: "../server/kiln_server/dashboard",
    emptyOutDir: true,
    assetsDir: "assets",
  },
  server: {
    // `npm run dev`: the API of a server started on the default port (`make run`).
    proxy: { "/v1": { target: process.env.KILN_URL ?? "http://127.0.0.1:8000", changeOrigin: true } },
  },
  test: {
    include: ["test/**/*.test.ts"],
    environment: "node",
  },
});
