// The step-loss series of a job page: the server's downsampled points, then the live
// batches appended, kept at a bounded number of points (buckets of `stride` steps with
// their mean, min and max) so that a run of any length draws at once.

import type { Steps } from "./types";

export interface StepColumns {
  /** The first step of each point. */
  x: number[];
  mean: (number | null)[];
  min: (number | null)[];
  max: (number | null)[];
  /** Steps per point (1: every step as it is). */
  stride: number;
}

export class StepSeries {
  stride = 1;
  /** Per bucket: its first step, the steps it covers, the sum and count of its finite
   * losses, and their extremes (±Infinity while it has none). */
  private start: number[] = [];
  private span: number[] = [];
  private sum: number[] = [];
  private n: number[] = [];
  private lo: number[] = [];
  private hi: number[] = [];

  /** The series as GET …/steps gave it: each point a bucket of ``stride`` steps, the last
   * one shorter when ``count`` (the steps stored) says so. */
  static fromServer(s: Steps): StepSeries {
    const series = new StepSeries();
    series.stride = Math.max(1, s.stride);
    const len = s.steps.length;
    for (let i = 0; i < len; i++) {
      let span = i + 1 < len ? s.steps[i + 1] - s.steps[i] : series.stride;
      if (i + 1 === len && s.count !== undefined) {
        span = Math.max(1, Math.min(series.stride, s.count - series.stride * (len - 1)));
      }
      const mean = s.losses[i];
      const has = mean !== null && Number.isFinite(mean);
      series.start.push(s.steps[i]);
      series.span.push(Math.max(1, span));
      series.n.push(has ? span : 0);
      series.sum.push(has ? (mean as number) * span : 0);
      series.lo.push(has ? (s.min?.[i] ?? (mean as number)) : Infinity);
      series.hi.push(has ? (s.max?.[i] ?? (mean as number)) : -Infinity);
    }
    return series;
  }

  get length(): number {
    return this.start.length;
  }

  /** The last step the series covers (0 when empty). */
  get lastStep(): number {
    const k = this.start.length - 1;
    return k < 0 ? 0 : this.start[k] + this.span[k] - 1;
  }

  /** A batch of step losses from ``first``: steps past the end are appended; steps the
   * series has already (a stream replaying what the first load gave, or a batch a resumed
   * worker sends again) replace the buckets they cover whole. */
  upsert(first: number, losses: readonly (number | null)[]): void {
    let i = 0;
    const last = this.lastStep;
    if (first <= last && losses.length) {
      const end = Math.min(last, first + losses.length - 1);
      for (let k = this.firstAtOrAfter(first); k < this.start.length; k++) {
        const from = this.start[k];
        const to = from + this.span[k] - 1;
        if (to > end) break;
        this.fill(k, losses, from - first, this.span[k]);
      }
      i = end - first + 1;
    }
    for (; i < losses.length; i++) this.push(first + i, losses[i]);
  }

  /** Merge neighbouring buckets until at most ``maxPoints`` remain (stride doubles). */
  compact(maxPoints: number): void {
    const limit = Math.max(2, Math.floor(maxPoints));
    while (this.start.length > limit) {
      const m = Math.ceil(this.start.length / 2);
      const start: number[] = new Array(m);
      const span: number[] = new Array(m);
      const sum: number[] = new Array(m);
      const n: number[] = new Array(m);
      const lo: number[] = new Array(m);
      const hi: number[] = new Array(m);
      for (let j = 0; j < m; j++) {
        const a = 2 * j;
        const b = a + 1 < this.start.length ? a + 1 : -1;
        start[j] = this.start[a];
        span[j] = this.span[a] + (b < 0 ? 0 : this.span[b]);
        sum[j] = this.sum[a] + (b < 0 ? 0 : this.sum[b]);
        n[j] = this.n[a] + (b < 0 ? 0 : this.n[b]);
        lo[j] = b < 0 ? this.lo[a] : Math.min(this.lo[a], this.lo[b]);
        hi[j] = b < 0 ? this.hi[a] : Math.max(this.hi[a], this.hi[b]);
      }
      this.start = start;
      this.span = span;
      this.sum = sum;
      this.n = n;
      this.lo = lo;
      this.hi = hi;
      this.stride *= 2;
    }
  }

  /** The series as columns for a chart: null where a bucket had no finite loss. */
  columns(): StepColumns {
    const len = this.start.length;
    const mean: (number | null)[] = new Array(len);
    const min: (number | null)[] = new Array(len);
    const max: (number | null)[] = new Array(len);
    for (let k = 0; k < len; k++) {
      const has = this.n[k] > 0;
      mean[k] = has ? this.sum[k] / this.n[k] : null;
      min[k] = has ? this.lo[k] : null;
      max[k] = has ? this.hi[k] : null;
    }
    return { x: this.start.slice(), mean, min, max, stride: this.stride };
  }

  private firstAtOrAfter(step: number): number {
    let lo = 0;
    let hi = this.start.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.start[mid] < step) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Bucket ``k`` recomputed from ``count`` losses of ``losses`` from ``offset``. */
  private fill(k: number, losses: readonly (number | null)[], offset: number, count: number): void {
    let sum = 0;
    let n = 0;
    let lo = Infinity;
    let hi = -Infinity;
    for (let j = offset; j < offset + count; j++) {
      const v = losses[j];
      if (v === null || !Number.isFinite(v)) continue;
      sum += v;
      n++;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    this.sum[k] = sum;
    this.n[k] = n;
    this.lo[k] = lo;
    this.hi[k] = hi;
  }

  /** One step past the end: into the last bucket while it has room, else a new one. */
  private push(step: number, v: number | null): void {
    const k = this.start.length - 1;
    const finite = v !== null && Number.isFinite(v);
    if (k >= 0 && step === this.start[k] + this.span[k] && this.span[k] < this.stride) {
      this.span[k]++;
      if (finite) {
        this.sum[k] += v;
        this.n[k]++;
        if (v < this.lo[k]) this.lo[k] = v;
        if (v > this.hi[k]) this.hi[k] = v;
      }
      return;
    }
    this.start.push(step);
    this.span.push(1);
    this.sum.push(finite ? v : 0);
    this.n.push(finite ? 1 : 0);
    this.lo.push(finite ? v : Infinity);
    this.hi.push(finite ? v : -Infinity);
  }
}
