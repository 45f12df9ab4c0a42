// How numbers, sizes and ages read on the pages.

import type { JobDevice } from "./types";

/** A measured value in four significant digits: 0.1235, 0.0001235, 1.235e-5, 12350. */
export function fmtNum(v: number | null | undefined, digits = 4): string {
  if (v === null || v === undefined) return "–";
  if (!Number.isFinite(v)) return String(v);
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a < 1e-4 || a >= 1e6) return v.toExponential(digits - 1).replace(/\.?0+e/, "e");
  return String(Number(v.toPrecision(digits)));
}

/** A hyper-parameter as it was set: exact (0.001, 1e-8), arrays as JSON. */
export function fmtHyper(v: unknown): string {
  if (typeof v === "number") return String(v);
  if (typeof v === "string") return v;
  return JSON.stringify(v);
}

export function fmtBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

/** How long ago ``iso`` was, from ``now`` (ms): "12 s", "5 min", "3 h", "2 d". */
export function fmtAge(iso: string | null | undefined, now: number): string {
  if (!iso) return "–";
  const s = Math.max(0, (now - Date.parse(iso)) / 1000);
  if (!Number.isFinite(s)) return "–";
  if (s < 60) return `${Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86400)} d`;
}

export function fmtDuration(s: number | null | undefined): string {
  if (s === null || s === undefined) return "–";
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

export function fmtTime(iso: string | null | undefined): string {
  if (!iso) return "–";
  const d = new Date(iso);
  return isNaN(+d) ? iso : d.toLocaleString();
}

/** A subtree's path as people read it: "" is the whole model. */
/** What a job asked to be trained on, as the facts of its page say it. */
export function fmtDevice(device: JobDevice | undefined): string {
  return device === "gpu" ? "a GPU" : device === "cpu" ? "a CPU" : "any: CPU or GPU";
}

export function fmtPath(path: string): string {
  return path === "" ? "the model" : path;
}
