import { describe, expect, it } from "vitest";
import { learningRates, rateOf, ruleEta } from "../src/rates";
import { CONTROLS, EPOCHS, JOB, makeControl, makeEpoch } from "./fixtures";

describe("rateOf", () => {
  const rates = { "layers.enc": 0.001, "layers.dec": 0.003 };
  it("reads a subtree's rate from itself or the deepest listed path above it", () => {
    expect(rateOf(rates, "layers.enc")).toBe(0.001);
    expect(rateOf(rates, "layers.enc.layers.0.weight")).toBe(0.001);
    expect(rateOf({ "": 0.003 }, "layers.dec")).toBe(0.003);
  });
  it("is null for a subtree whose parts have different rates", () => {
    expect(rateOf(rates, "")).toBeNull();
    expect(rateOf(rates, "layers")).toBeNull();
    expect(rateOf({ "": 0.003, "layers.enc": 0.001 }, "")).toBeNull();
  });
  it("is the shared rate of parts listed apart that agree, and null when nothing is listed", () => {
    expect(rateOf({ "layers.enc": 0.1, "layers.dec": 0.1 }, "layers")).toBe(0.1);
    expect(rateOf({ "layers.enc": 0.1 }, "other")).toBeNull();
  });
  it("does not take a sibling with a common prefix for an ancestor", () => {
    expect(rateOf({ "layers.en": 0.5 }, "layers.enc")).toBeNull();
  });
});

describe("ruleEta", () => {
  it("finds eta in a rule or its chain", () => {
    expect(ruleEta(JOB.spec.optimiser)).toBe(0.003);
    expect(ruleEta({ rule: "Descent", eta: 0.1 })).toBe(0.1);
    expect(ruleEta({ rule: "WeightDecay", lambda: 0.1 })).toBeNull();
  });
});

describe("learningRates", () => {
  it("follows each subtree from the start, through an adjust, to the epoch rows after it", () => {
    const epochs = [1, 2, 3].map((e) => makeEpoch(e, {
      learning_rates: e < 2 ? { "": 0.003 } : { "layers.enc": 0.001, "layers.dec": 0.003 },
    }));
    const controls = [makeControl({ status: "applied", applied_step: 15, applied_epoch: 2 })];
    const r = learningRates(epochs, controls, 10, 0.003, 34);
    expect(r.paths).toEqual(["", "layers.dec", "layers.enc"]);
    expect(r.x).toEqual([1, 10, 15, 20, 30, 34]);
    expect(r.values).toEqual([
      [0.003, 0.003, null, null, null, null],
      [0.003, 0.003, 0.003, 0.003, 0.003, 0.003],
      [0.003, 0.003, 0.001, 0.001, 0.001, 0.001],
    ]);
  });

  it("counts a control applied at an epoch's last step in that row's point", () => {
    const epochs = [makeEpoch(1, { learning_rates: { "": 0.5 } })];
    const controls = [makeControl({ path: "", hyper: { eta: 0.5 }, status: "applied", applied_step: 10 })];
    const r = learningRates(epochs, controls, 10, 0.1, 10);
    expect(r.x).toEqual([1, 10]);
    expect(r.values).toEqual([[0.1, 0.5]]);
  });

  it("ignores controls that set no eta, or were not applied, and rows it cannot place", () => {
    const controls = [
      makeControl({ hyper: { beta: [0.8, 0.9] }, status: "applied", applied_step: 5 }),
      makeControl({ seq: 2, status: "rejected" }),
      makeControl({ seq: 3, kind: "freeze", hyper: {}, status: "applied", applied_step: 6 }),
    ];
    const r = learningRates([makeEpoch(1)], controls, null, 0.003, 8);
    expect(r).toEqual({ paths: [""], x: [1, 8], values: [[0.003, 0.003]] });
  });

  it("reads the captured run: enc lowered at step 12601, the whole model mixed from then", () => {
    const r = learningRates(EPOCHS, CONTROLS, 1400, 0.003, 56000);
    expect(r.paths).toEqual(["", "layers.dec", "layers.enc"]);
    const at = (step: number) => r.values.map((v) => v[r.x.indexOf(step)]);
    expect(at(12600)).toEqual([0.003, 0.003, 0.003]);
    expect(at(12601)).toEqual([null, 0.003, 0.001]);
    expect(at(56000)).toEqual([null, 0.003, 0.001]);
  });
});
