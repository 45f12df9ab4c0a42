import { describe, expect, it } from "vitest";
import { smooth } from "../src/smoothing";

describe("smooth", () => {
  it("is the identity at weight 0", () => {
    expect(smooth([3, 1, 2], 0)).toEqual([3, 1, 2]);
  });

  it("debiases: the first point is itself, not pulled towards zero", () => {
    const out = smooth([10, 0], 0.5) as number[];
    expect(out[0]).toBe(10);
    // EMA 0.5*10*0.5 + 0 = 2.5, debiased by 1 - 0.5^2 = 0.75
    expect(out[1]).toBeCloseTo(10 / 3, 12);
  });

  it("keeps a constant series constant", () => {
    expect(smooth([2, 2, 2, 2], 0.9).map((v) => Number(v?.toFixed(12)))).toEqual([2, 2, 2, 2]);
  });

  it("skips nulls and non-finite values without breaking the average", () => {
    const out = smooth([4, null, NaN, 4], 0.8);
    expect(out[1]).toBeNull();
    expect(out[2]).toBeNull();
    expect(out[3]).toBeCloseTo(4, 12);
  });
});
