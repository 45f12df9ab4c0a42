// Hash routes: the URL is the state of the view, so a link shows a colleague the same page
// (#/jobs?status=running, #/jobs/<id>?smooth=0.6, #/compare?ids=a,b).

import type { JobStatus } from "./types";
import { JOB_STATUSES } from "./types";

export type Route =
  | { page: "jobs"; status: JobStatus | null }
  | { page: "job"; id: string; smooth: number; log: boolean }
  | { page: "datasets" }
  | { page: "workers" }
  | { page: "compare"; ids: string[]; smooth: number }
  | { page: "notfound"; hash: string };

export const DEFAULT_SMOOTH = 0.6;

function smoothOf(q: URLSearchParams): number {
  const raw = q.get("smooth");
  const v = raw === null || raw === "" ? NaN : Number(raw);
  return Number.isFinite(v) ? Math.min(0.99, Math.max(0, v)) : DEFAULT_SMOOTH;
}

export function parseRoute(hash: string): Route {
  const text = hash.replace(/^#/, "");
  const [pathPart, queryPart = ""] = text.split("?", 2);
  const q = new URLSearchParams(queryPart);
  const parts = pathPart.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0 || (parts[0] === "jobs" && parts.length === 1)) {
    const s = q.get("status");
    return { page: "jobs", status: JOB_STATUSES.includes(s as JobStatus) ? (s as JobStatus) : null };
  }
  if (parts[0] === "jobs" && parts.length === 2) {
    return { page: "job", id: parts[1], smooth: smoothOf(q), log: q.get("log") === "1" };
  }
  if (parts[0] === "datasets" && parts.length === 1) return { page: "datasets" };
  if (parts[0] === "workers" && parts.length === 1) return { page: "workers" };
  if (parts[0] === "compare" && parts.length === 1) {
    const ids = (q.get("ids") ?? "").split(",").map((s) => s.trim()).filter(Boolean);
    return { page: "compare", ids, smooth: smoothOf(q) };
  }
  return { page: "notfound", hash: text };
}

export function formatRoute(r: Route): string {
  switch (r.page) {
    case "jobs":
      return r.status ? `#/jobs?status=${r.status}` : "#/jobs";
    case "job": {
      const q = new URLSearchParams();
      if (r.smooth !== DEFAULT_SMOOTH) q.set("smooth", String(r.smooth));
      if (r.log) q.set("log", "1");
      return `#/jobs/${encodeURIComponent(r.id)}${q.size ? `?${q}` : ""}`;
    }
    case "datasets":
      return "#/datasets";
    case "workers":
      return "#/workers";
    case "compare": {
      const q = new URLSearchParams();
      q.set("ids", r.ids.join(","));
      if (r.smooth !== DEFAULT_SMOOTH) q.set("smooth", String(r.smooth));
      return `#/compare?${q.toString().replace(/%2C/g, ",")}`;
    }
    case "notfound":
      return `#${r.hash}`;
  }
}

export const jobHref = (id: string) => formatRoute({ page: "job", id, smooth: DEFAULT_SMOOTH, log: false });
