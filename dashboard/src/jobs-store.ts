// The jobs page's jobs: loaded a page at a time, then kept live by the jobs stream; each
// job upserted by id (a stream may send a job the list already has), newest first.

import type { Job, JobStatus } from "./types";

export class JobsStore {
  private byId = new Map<string, Job>();
  private createdMs = new Map<string, number>();
  private sorted: Job[] | null = null;
  /** Grows with every change, so that views can tell a new state from an old one. */
  version = 0;

  get size(): number {
    return this.byId.size;
  }

  get(id: string): Job | undefined {
    return this.byId.get(id);
  }

  /** Add or replace jobs by id; whether anything changed. */
  upsert(jobs: readonly Job[]): boolean {
    let changed = false;
    for (const job of jobs) {
      const old = this.byId.get(job.id);
      if (old && sameJob(old, job)) continue;
      if (!old) this.createdMs.set(job.id, Date.parse(job.created_at) || 0);
      this.byId.set(job.id, job);
      changed = true;
    }
    if (changed) {
      this.sorted = null;
      this.version++;
    }
    return changed;
  }

  /** The jobs, newest first, only those of ``status`` if given. */
  list(status: JobStatus | null = null): Job[] {
    if (!this.sorted) {
      this.sorted = [...this.byId.values()].sort((a, b) =>
        (this.createdMs.get(b.id) ?? 0) - (this.createdMs.get(a.id) ?? 0) ||
        (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
    }
    return status ? this.sorted.filter((j) => j.status === status) : this.sorted;
  }

  /** How many jobs are in each status. */
  counts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const j of this.byId.values()) out[j.status] = (out[j.status] ?? 0) + 1;
    return out;
  }
}

/** Whether two snapshots of a job read the same (so its row need not be drawn again). */
function sameJob(a: Job, b: Job): boolean {
  return a.status === b.status && a.requested === b.requested && a.epoch === b.epoch &&
    a.step === b.step && a.attempt === b.attempt && a.error === b.error &&
    a.has_weights === b.has_weights && a.name === b.name &&
    a.finished_at === b.finished_at && a.started_at === b.started_at &&
    (a.worker?.id ?? null) === (b.worker?.id ?? null) &&
    JSON.stringify(a.latest ?? null) === JSON.stringify(b.latest ?? null);
}
