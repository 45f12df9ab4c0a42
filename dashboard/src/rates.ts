// The learning rate of each subtree over time, by step: what the epoch rows say was in
// force at each epoch's end, and what each applied adjust set from the step it took
// effect. Drawn as steps (a rate holds until the next point).

import type { Control, Epoch, RuleSpec } from "./types";

export interface RateSeries {
  /** One series per subtree path ("" is the whole model). */
  paths: string[];
  /** Steps of the points. */
  x: number[];
  /** ``values[i][j]``: the rate of ``paths[i]`` at ``x[j]``; null while its leaves differ. */
  values: (number | null)[][];
}

function under(path: string, ancestor: string): boolean {
  return ancestor === "" ? path !== "" : path.startsWith(`${ancestor}.`);
}

/** The rate of the subtree ``path`` in a map of rates by subtree (as an epoch row lists
 * them: the deepest listed path at or above it), or null when the subtrees listed below
 * it disagree (so its leaves do not share one rate). */
export function rateOf(rates: Readonly<Record<string, number>>, path: string): number | null {
  let value: number | undefined;
  let depth = -1;
  for (const [key, v] of Object.entries(rates)) {
    if ((key === path || under(path, key)) && key.length > depth) {
      value = v;
      depth = key.length;
    }
  }
  for (const [key, v] of Object.entries(rates)) {
    if (!under(key, path)) continue;
    if (value === undefined) value = v;
    else if (v !== value) return null;
  }
  return value ?? null;
}

/** The learning rate a rule spec starts with (eta; in a chain, its member's that has one). */
export function ruleEta(rule: RuleSpec | null | undefined): number | null {
  if (!rule) return null;
  if (typeof rule.eta === "number") return rule.eta;
  let eta: number | null = null;
  for (const r of rule.rules ?? []) eta = ruleEta(r) ?? eta;
  return eta;
}

interface Point {
  step: number;
  /** Controls come before the epoch row that ends at the same step (the row counts them). */
  order: number;
  apply: (rates: Record<string, number>) => Record<string, number>;
}

/** The rates of every subtree the rows or the controls name, at each point where they may
 * have changed, up to ``lastStep``. ``initial`` is the rate at step 1 (null if unknown,
 * e.g. under a schedule); epoch rows need ``stepsPerEpoch`` to be placed. */
export function learningRates(epochs: readonly Epoch[], controls: readonly Control[],
  stepsPerEpoch: number | null, initial: number | null, lastStep: number): RateSeries {
  const paths = new Set<string>();
  const points: Point[] = [];
  if (initial !== null) {
    paths.add("");
    points.push({ step: 1, order: 0, apply: () => ({ "": initial }) });
  }
  if (stepsPerEpoch && stepsPerEpoch > 0) {
    for (const e of epochs) {
      Object.keys(e.learning_rates).forEach((p) => paths.add(p));
      points.push({ step: e.epoch * stepsPerEpoch, order: 2, apply: () => ({ ...e.learning_rates }) });
    }
  }
  for (const c of controls) {
    const eta = c.hyper.eta;
    if (c.kind !== "adjust" || c.status !== "applied" || c.applied_step === null ||
        typeof eta !== "number") continue;
    paths.add(c.path);
    points.push({
      step: c.applied_step, order: 1, apply: (rates) => {
        const next: Record<string, number> = {};
        for (const [k, v] of Object.entries(rates)) if (!under(k, c.path)) next[k] = v;
        next[c.path] = eta;
        return next;
      },
    });
  }
  points.sort((a, b) => a.step - b.step || a.order - b.order);
  const ordered = [...paths].sort();
  const x: number[] = [];
  const values: (number | null)[][] = ordered.map(() => []);
  let rates: Record<string, number> = {};
  const emit = (step: number) => {
    if (x.length && x[x.length - 1] === step) {
      x.pop();
      values.forEach((v) => v.pop());
    }
    x.push(step);
    ordered.forEach((p, i) => values[i].push(rateOf(rates, p)));
  };
  for (const point of points) {
    rates = point.apply(rates);
    emit(point.step);
  }
  if (x.length && lastStep > x[x.length - 1]) emit(lastStep);
  return { paths: ordered, x, values };
}
