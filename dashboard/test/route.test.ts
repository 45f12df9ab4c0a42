import { describe, expect, it } from "vitest";
import { formatRoute, parseRoute, type Route } from "../src/route";

describe("routes", () => {
  it("read every page and its state from the hash", () => {
    expect(parseRoute("")).toEqual({ page: "jobs", status: null });
    expect(parseRoute("#/jobs?status=running")).toEqual({ page: "jobs", status: "running" });
    expect(parseRoute("#/jobs?status=bogus")).toEqual({ page: "jobs", status: null });
    expect(parseRoute("#/jobs/abc?smooth=0.9")).toEqual({ page: "job", id: "abc", smooth: 0.9, log: false });
    expect(parseRoute("#/jobs/abc?log=1")).toEqual({ page: "job", id: "abc", smooth: 0.6, log: true });
    expect(parseRoute("#/jobs/abc?smooth=7")).toEqual({ page: "job", id: "abc", smooth: 0.99, log: false });
    expect(parseRoute("#/jobs/abc")).toEqual({ page: "job", id: "abc", smooth: 0.6, log: false });
    expect(parseRoute("#/compare?ids=a,b,,c")).toEqual({ page: "compare", ids: ["a", "b", "c"], smooth: 0.6 });
    expect(parseRoute("#/datasets")).toEqual({ page: "datasets" });
    expect(parseRoute("#/workers")).toEqual({ page: "workers" });
    expect(parseRoute("#/nope")).toEqual({ page: "notfound", hash: "/nope" });
  });

  it("write back what they read", () => {
    const routes: Route[] = [
      { page: "jobs", status: null }, { page: "jobs", status: "failed" },
      { page: "job", id: "j1", smooth: 0.6, log: false }, { page: "job", id: "j1", smooth: 0, log: true },
      { page: "compare", ids: ["a", "b"], smooth: 0.8 }, { page: "datasets" }, { page: "workers" },
    ];
    for (const r of routes) expect(parseRoute(formatRoute(r))).toEqual(r);
    expect(formatRoute({ page: "compare", ids: ["a", "b"], smooth: 0.6 })).toBe("#/compare?ids=a,b");
  });
});
