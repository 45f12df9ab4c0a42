// Where each control took effect, as markers on the charts: a step, the same point in
// epochs (for the epoch charts), and what it did ("eta → 0.001 on layers.enc").

import { fmtHyper, fmtPath } from "./format";
import type { Control } from "./types";

export interface Marker {
  seq: number;
  kind: Control["kind"];
  /** The step it took effect at (for adjust, freeze, thaw: the first step trained under it). */
  step: number;
  /** The same point on an epoch axis (epoch e's row is drawn at x = e). */
  epochX: number;
  label: string;
}

/** What a control does, in a few words. */
export function controlLabel(c: Pick<Control, "kind" | "path" | "hyper">): string {
  switch (c.kind) {
    case "adjust": {
      const set = Object.entries(c.hyper).map(([k, v]) => `${k} → ${fmtHyper(v)}`).join(", ");
      return `${set} on ${fmtPath(c.path)}`;
    }
    case "freeze":
    case "thaw":
      return `${c.kind} ${fmtPath(c.path)}`;
    default:
      return c.kind;
  }
}

/** ``step`` on an epoch axis: the epochs completed before it, fractional. */
export function stepToEpochX(step: number, stepsPerEpoch: number | null, epoch: number | null,
): number {
  if (stepsPerEpoch && stepsPerEpoch > 0) return (step - 1) / stepsPerEpoch;
  return Math.max(0, (epoch ?? 1) - 1);
}

/** A marker per applied control, in the order they took effect. */
export function markers(controls: readonly Control[], stepsPerEpoch: number | null): Marker[] {
  return controls
    .filter((c) => c.status === "applied" && c.applied_step !== null)
    .map((c) => ({
      seq: c.seq,
      kind: c.kind,
      step: c.applied_step as number,
      epochX: stepToEpochX(c.applied_step as number, stepsPerEpoch, c.applied_epoch),
      label: controlLabel(c),
    }))
    .sort((a, b) => a.step - b.step || a.seq - b.seq);
}
