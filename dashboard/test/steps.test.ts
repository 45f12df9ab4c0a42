import { describe, expect, it } from "vitest";
import { StepSeries } from "../src/steps";

const raw = (n: number, f = (s: number) => s) => Array.from({ length: n }, (_, i) => f(i + 1));

describe("StepSeries", () => {
  it("takes the server's buckets with their extremes, the last one as long as count says", () => {
    const s = StepSeries.fromServer({
      steps: [1, 5, 9], losses: [2, null, 4], min: [1, null, 3], max: [3, null, 5], stride: 4, count: 10,
    });
    expect(s.columns()).toEqual({ x: [1, 5, 9], mean: [2, null, 4], min: [1, null, 3], max: [3, null, 5], stride: 4 });
    expect(s.lastStep).toBe(10);
  });

  it("appends live steps past the end into buckets of the same stride", () => {
    const s = StepSeries.fromServer({ steps: [1, 3], losses: [1.5, 3.5], stride: 2, count: 4 });
    s.upsert(5, [10, 20, 30]);
    const c = s.columns();
    expect(c.x).toEqual([1, 3, 5, 7]);
    expect(c.mean).toEqual([1.5, 3.5, 15, 30]);
    expect(c.min).toEqual([1.5, 3.5, 10, 30]);
    expect(c.max).toEqual([1.5, 3.5, 20, 30]);
    expect(s.lastStep).toBe(7);
  });

  it("changes nothing when a replay repeats steps it has", () => {
    const losses = raw(8, (s) => s * s);
    const s = StepSeries.fromServer({ steps: [1, 5], losses: [7.5, 43.5], min: [1, 25], max: [16, 64], stride: 4, count: 8 });
    const before = s.columns();
    s.upsert(1, losses.slice(0, 6)); // a batch the first load already counted
    s.upsert(7, losses.slice(6));
    expect(s.columns()).toEqual(before);
    s.upsert(9, [100]);
    expect(s.columns().mean).toEqual([7.5, 43.5, 100]);
  });

  it("lets a batch sent again by a resumed worker replace the steps it covers", () => {
    const s = new StepSeries();
    s.upsert(1, [1, 2, 3, 4]);
    s.upsert(3, [30, 40, 50]);
    expect(s.columns().mean).toEqual([1, 2, 30, 40, 50]);
  });

  it("counts a step without a finite loss in no mean, and a bucket of none as null", () => {
    const s = new StepSeries();
    s.upsert(1, [null, 2, null, null]);
    s.compact(2);
    expect(s.columns()).toEqual({ x: [1, 3], mean: [2, null], min: [2, null], max: [2, null], stride: 2 });
  });

  it("halves its points while over the limit: 100,000 live steps end as few buckets", () => {
    const s = new StepSeries();
    for (let first = 1; first <= 100_000; first += 1000) {
      s.upsert(first, raw(1000, (i) => first + i - 1));
      s.compact(2000);
    }
    const c = s.columns();
    expect(c.x.length).toBeLessThanOrEqual(2000);
    expect(c.x.length).toBeGreaterThan(1000);
    expect(c.stride).toBe(64);
    expect(c.x[1]).toBe(65);
    expect(c.mean[0]).toBe(32.5); // the mean of steps 1..64
    expect(c.min[0]).toBe(1);
    expect(c.max[0]).toBe(64);
    expect(c.max.at(-1)).toBe(100_000);
    expect(s.lastStep).toBe(100_000);
  });
});
