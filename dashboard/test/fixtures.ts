// JSON the server gave (captured from a real run of the digits MLP, with an adjust of
// layers.enc's eta and a freeze of layers.dec applied in epoch 10), for the unit tests.

import controls from "./fixtures/controls.json";
import epochs from "./fixtures/epochs.json";
import job from "./fixtures/job.json";
import state from "./fixtures/state.json";
import type { Control, Epoch, Job, StateTree } from "../src/types";

export const JOB = job as unknown as Job;
export const STATE = state as unknown as StateTree;
export const CONTROLS = controls as unknown as Control[];
export const EPOCHS = epochs as unknown as Epoch[];

export function makeJob(over: Partial<Job> = {}): Job {
  return { ...JOB, ...over };
}

export function makeControl(over: Partial<Control> = {}): Control {
  return {
    seq: 1, kind: "adjust", path: "layers.enc", hyper: { eta: 0.001 }, status: "pending",
    applied_epoch: null, applied_step: null, reason: null,
    created_at: "2026-12-06T22:57:08.585156Z", resolved_at: null, ...over,
  };
}

export function makeEpoch(epoch: number, over: Partial<Epoch> = {}): Epoch {
  return {
    epoch, train_loss: 1 / epoch, val_loss: 1.5 / epoch, metrics: { val_accuracy: 0.5 + epoch / 100 },
    learning_rates: { "": 0.003 }, frozen: [], skipped_steps: 0, samples_per_s: 1000,
    duration_s: 1, ...over,
  };
}
