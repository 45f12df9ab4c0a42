// A job page's state: the first load (the job, its epochs, controls and downsampled steps),
// then the events of its stream merged in. Every kind of event is keyed (steps by step,
// epochs by number, controls by seq), so an event that repeats what the page has (the
// stream replays a job's history from its start) changes nothing.

import { StepSeries } from "./steps";
import type { Control, Epoch, Job, JobEvent, Steps } from "./types";
import { FINISHED } from "./types";

export interface Snapshot {
  job: Job;
  epochs: Epoch[];
  controls: Control[];
  steps: Steps;
}

export interface Applied {
  /** The job's status or epochs completed changed (refresh what the event lacks). */
  status: boolean;
  /** A control was applied or rejected (the state tree may have changed). */
  resolved: boolean;
  epochs: boolean;
  steps: boolean;
}

export class JobStore {
  job: Job;
  steps: StepSeries;
  private epochMap = new Map<number, Epoch>();
  private controlMap = new Map<number, Control>();
  private epochList: Epoch[] | null = null;
  private controlList: Control[] | null = null;
  /** Grows with every change. */
  version = 0;

  constructor(snap: Snapshot) {
    this.job = snap.job;
    this.steps = StepSeries.fromServer(snap.steps);
    snap.epochs.forEach((e) => this.epochMap.set(e.epoch, e));
    snap.controls.forEach((c) => this.upsertControl(c));
  }

  get epochs(): Epoch[] {
    this.epochList ??= [...this.epochMap.values()].sort((a, b) => a.epoch - b.epoch);
    return this.epochList;
  }

  get controls(): Control[] {
    this.controlList ??= [...this.controlMap.values()].sort((a, b) => a.seq - b.seq);
    return this.controlList;
  }

  /** A job as a request returned it (an action's answer, or a refresh). */
  setJob(job: Job): void {
    this.job = job;
    this.version++;
  }

  /** A control as the server gave it; a resolved one is never taken back to pending (a
   * POST's answer may arrive after the stream said it was applied). */
  upsertControl(c: Control): boolean {
    const old = this.controlMap.get(c.seq);
    if (old && old.status !== "pending" && c.status === "pending") return false;
    if (old && JSON.stringify(old) === JSON.stringify(c)) return false;
    this.controlMap.set(c.seq, c);
    this.controlList = null;
    this.version++;
    return true;
  }

  /** Merge a burst of stream events; ``maxPoints`` bounds the step series. */
  apply(events: readonly JobEvent[], maxPoints: number): Applied {
    const out: Applied = { status: false, resolved: false, epochs: false, steps: false };
    for (const ev of events) {
      switch (ev.kind) {
        case "steps":
          this.steps.upsert(ev.data.first_step, ev.data.losses);
          out.steps = true;
          break;
        case "epoch":
          this.epochMap.set(ev.data.epoch, ev.data);
          this.epochList = null;
          out.epochs = true;
          break;
        case "control": {
          const changed = this.upsertControl(ev.data);
          if (changed && ev.data.status !== "pending") out.resolved = true;
          break;
        }
        case "status": {
          const { status, epoch, step, error } = ev.data;
          const j = this.job;
          if (j.status !== status || j.epoch !== epoch || j.step !== step || j.error !== error) {
            const settled = FINISHED.has(status) || status === "paused";
            this.job = { ...j, status, epoch, step, error, requested: settled ? null : j.requested };
            out.status = true;
          }
          break;
        }
      }
    }
    if (out.steps) this.steps.compact(maxPoints);
    if (out.steps || out.epochs || out.status || out.resolved) this.version++;
    return out;
  }
}

/** A stream message as a typed event, or null for a kind this page does not know. */
export function parseJobEvent(event: string, data: string): JobEvent | null {
  if (event !== "steps" && event !== "epoch" && event !== "control" && event !== "status") {
    return null;
  }
  return { kind: event, data: JSON.parse(data) } as JobEvent;
}
