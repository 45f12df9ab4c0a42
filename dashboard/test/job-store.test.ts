import { describe, expect, it } from "vitest";
import { JobStore, parseJobEvent } from "../src/job-store";
import type { JobEvent } from "../src/types";
import { makeControl, makeEpoch, makeJob } from "./fixtures";

function store() {
  return new JobStore({
    job: makeJob({ status: "running", epoch: 1, step: 4, requested: "pause", finished_at: null }),
    epochs: [makeEpoch(1)],
    controls: [makeControl({ seq: 1 })],
    steps: { steps: [1, 3], losses: [1, 2], stride: 2, count: 4 },
  });
}

describe("JobStore", () => {
  it("merges the stream's replay of what the first load had without duplicates", () => {
    const s = store();
    const replay: JobEvent[] = [
      { kind: "steps", data: { epoch: 1, first_step: 1, losses: [1, 1, 2, 2] } },
      { kind: "epoch", data: makeEpoch(1) },
      { kind: "control", data: makeControl({ seq: 1 }) },
    ];
    const before = s.version;
    s.apply(replay, 100);
    expect(s.epochs).toHaveLength(1);
    expect(s.controls).toHaveLength(1);
    expect(s.steps.columns().mean).toEqual([1, 2]);
    expect(s.steps.lastStep).toBe(4);
    expect(s.version).toBeGreaterThan(before); // drawn once more, the same
  });

  it("appends new steps and epochs in order, replacing an epoch sent again", () => {
    const s = store();
    const r = s.apply([
      { kind: "epoch", data: makeEpoch(3) },
      { kind: "epoch", data: makeEpoch(2) },
      { kind: "epoch", data: makeEpoch(2, { val_loss: 0.25 }) },
      { kind: "steps", data: { epoch: 2, first_step: 5, losses: [3, 5, 7] } },
    ], 100);
    expect(r).toMatchObject({ epochs: true, steps: true, status: false });
    expect(s.epochs.map((e) => [e.epoch, e.val_loss])).toEqual([[1, 1.5], [2, 0.25], [3, 0.5]]);
    expect(s.steps.columns().mean).toEqual([1, 2, 4, 7]);
  });

  it("follows a control from pending to applied, never back", () => {
    const s = store();
    const applied = makeControl({ seq: 1, status: "applied", applied_epoch: 2, applied_step: 5 });
    expect(s.apply([{ kind: "control", data: applied }], 100).resolved).toBe(true);
    expect(s.upsertControl(makeControl({ seq: 1 }))).toBe(false); // a late POST answer
    expect(s.controls[0].status).toBe("applied");
    s.apply([{ kind: "control", data: makeControl({ seq: 2, kind: "freeze", hyper: {} }) }], 100);
    expect(s.controls.map((c) => [c.seq, c.status])).toEqual([[1, "applied"], [2, "pending"]]);
  });

  it("takes a status event into the job, and clears the request it carried out", () => {
    const s = store();
    expect(s.apply([{ kind: "status", data: { status: "running", epoch: 2, step: 8, error: null } }], 100).status).toBe(true);
    expect(s.job).toMatchObject({ status: "running", epoch: 2, step: 8, requested: "pause" });
    s.apply([{ kind: "status", data: { status: "paused", epoch: 2, step: 9, error: null } }], 100);
    expect(s.job).toMatchObject({ status: "paused", requested: null });
    expect(s.apply([{ kind: "status", data: { status: "paused", epoch: 2, step: 9, error: null } }], 100).status).toBe(false);
  });

  it("keeps the step series within the points asked for", () => {
    const s = store();
    s.apply([{ kind: "steps", data: { epoch: 1, first_step: 5, losses: Array(1000).fill(1) } }], 50);
    expect(s.steps.length).toBeLessThanOrEqual(50);
    expect(s.steps.lastStep).toBe(1004);
  });
});

describe("parseJobEvent", () => {
  it("types the known kinds and skips the others", () => {
    expect(parseJobEvent("status", '{"status":"running","epoch":1,"step":2,"error":null}'))
      .toEqual({ kind: "status", data: { status: "running", epoch: 1, step: 2, error: null } });
    expect(parseJobEvent("message", "{}")).toBeNull();
  });
});
