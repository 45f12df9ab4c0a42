import { describe, expect, it } from "vitest";
import { controlLabel, markers } from "../src/markers";
import { CONTROLS, makeControl } from "./fixtures";

describe("controlLabel", () => {
  it("says what each control did", () => {
    expect(controlLabel({ kind: "adjust", path: "layers.enc", hyper: { eta: 0.001 } })).toBe("eta → 0.001 on layers.enc");
    expect(controlLabel({ kind: "adjust", path: "", hyper: { eta: 1e-4, beta: [0.8, 0.9] } }))
      .toBe("eta → 0.0001, beta → [0.8,0.9] on the model");
    expect(controlLabel({ kind: "freeze", path: "layers.dec", hyper: {} })).toBe("freeze layers.dec");
    expect(controlLabel({ kind: "pause", path: "", hyper: {} })).toBe("pause");
  });
});

describe("markers", () => {
  it("marks each applied control at its step, and the same point in epochs", () => {
    // the fixture: adjust at step 12601 and freeze at 12739, 1400 steps an epoch
    expect(markers(CONTROLS, 1400)).toEqual([
      { seq: 1, kind: "adjust", step: 12601, epochX: 9, label: "eta → 0.001 on layers.enc" },
      { seq: 2, kind: "freeze", step: 12739, epochX: 12738 / 1400, label: "freeze layers.dec" },
    ]);
  });

  it("leaves out pending and rejected controls, and orders by step", () => {
    const cs = [
      makeControl({ seq: 1, status: "applied", applied_step: 50, applied_epoch: 2 }),
      makeControl({ seq: 2, status: "pending" }),
      makeControl({ seq: 3, status: "rejected", reason: "no such path" }),
      makeControl({ seq: 4, kind: "thaw", hyper: {}, status: "applied", applied_step: 20, applied_epoch: 1 }),
    ];
    expect(markers(cs, null).map((m) => [m.seq, m.step, m.epochX])).toEqual([[4, 20, 0], [1, 50, 1]]);
  });
});
