import { describe, expect, it } from "vitest";
import { JobsStore } from "../src/jobs-store";
import { makeJob } from "./fixtures";

describe("JobsStore", () => {
  const a = makeJob({ id: "a", created_at: "2026-12-06T10:00:00Z", status: "running" });
  const b = makeJob({ id: "b", created_at: "2026-12-06T10:00:00.500000Z", status: "queued" });
  const c = makeJob({ id: "c", created_at: "2026-12-06T09:00:00Z", status: "succeeded" });

  it("lists newest first (times compared as times, not text), filtered by status", () => {
    const s = new JobsStore();
    s.upsert([a, c, b]);
    expect(s.list().map((j) => j.id)).toEqual(["b", "a", "c"]);
    expect(s.list("running").map((j) => j.id)).toEqual(["a"]);
    expect(s.counts()).toEqual({ running: 1, queued: 1, succeeded: 1 });
  });

  it("upserts by id: a job the list has is replaced, not repeated", () => {
    const s = new JobsStore();
    s.upsert([a, b]);
    const v = s.version;
    expect(s.upsert([{ ...a }])).toBe(false); // the same snapshot again
    expect(s.version).toBe(v);
    expect(s.upsert([{ ...a, status: "paused", epoch: 3 }])).toBe(true);
    expect(s.size).toBe(2);
    expect(s.get("a")).toMatchObject({ status: "paused", epoch: 3 });
    expect(s.list("running")).toEqual([]);
  });

  it("sees a change in the latest epoch or the worker", () => {
    const s = new JobsStore();
    s.upsert([{ ...a, latest: null, worker: null }]);
    expect(s.upsert([{ ...a, latest: { epoch: 1, train_loss: 0.5, val_loss: 0.6, metrics: {} }, worker: null }])).toBe(true);
    expect(s.upsert([{ ...a, latest: { epoch: 1, train_loss: 0.5, val_loss: 0.6, metrics: {} }, worker: { id: "w", name: "h" } }])).toBe(true);
  });
});
