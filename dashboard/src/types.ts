// The server's JSON shapes (server/kiln_server/schemas.py), as the dashboard reads them.

export type JobStatus = "queued" | "running" | "paused" | "succeeded" | "failed" | "cancelled";
export const JOB_STATUSES: JobStatus[] = [
  "queued", "running", "paused", "succeeded", "failed", "cancelled",
];
export const FINISHED: ReadonlySet<JobStatus> = new Set(["succeeded", "failed", "cancelled"]);

export type Metrics = Record<string, number | null>;

export interface JobLatest {
  epoch: number;
  train_loss: number | null;
  val_loss: number | null;
  metrics: Metrics;
}

export interface JobSpec {
  model: Record<string, unknown>;
  optimiser: RuleSpec;
  loss: string;
  batch_size: number;
  epochs: number;
  metrics?: string[];
  [key: string]: unknown;
}

export interface Job {
  id: string;
  name: string;
  status: JobStatus;
  requested: "pause" | "cancel" | null;
  spec: JobSpec;
  parameters: number;
  attempt: number;
  epoch: number;
  epochs: number;
  step: number;
  steps_per_epoch: number | null;
  error: string | null;
  has_weights: boolean;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  /** The last finished epoch's losses and metrics (newer servers; absent or null before). */
  latest?: JobLatest | null;
  /** The worker that holds the job (newer servers; absent or null when none). */
  worker?: { id: string; name: string } | null;
  /** What it asked to be trained on (newer servers; absent before: any). */
  device?: JobDevice;
}

export type JobDevice = "any" | "cpu" | "gpu";

export interface JobsPage {
  data: Job[];
  next_cursor: string | null;
}

export type ControlKind = "adjust" | "freeze" | "thaw" | "pause" | "resume" | "cancel";

export interface Control {
  seq: number;
  kind: ControlKind;
  path: string;
  hyper: Record<string, unknown>;
  status: "pending" | "applied" | "rejected";
  applied_epoch: number | null;
  applied_step: number | null;
  reason: string | null;
  created_at: string;
  resolved_at: string | null;
}

export interface ControlCreate {
  kind: "adjust" | "freeze" | "thaw";
  path: string;
  hyper?: Record<string, unknown>;
}

export interface Epoch {
  epoch: number;
  train_loss: number | null;
  val_loss: number | null;
  metrics: Metrics;
  learning_rates: Record<string, number>;
  frozen: string[];
  skipped_steps: number;
  samples_per_s: number | null;
  duration_s: number | null;
}

/** GET /v1/jobs/{id}/steps: buckets of ``stride`` steps (min and max only on newer servers). */
export interface Steps {
  steps: number[];
  losses: (number | null)[];
  min?: (number | null)[];
  max?: (number | null)[];
  stride: number;
  count?: number;
}

/** An optimiser rule's spec: ``{rule: "Adam", eta: 0.001, ...}`` or an OptimiserChain. */
export interface RuleSpec {
  rule: string;
  rules?: RuleSpec[];
  [hyper: string]: unknown;
}

export interface LeafState {
  rule: RuleSpec;
  frozen: boolean;
  scheduled?: Record<string, string>;
}

/** GET /v1/jobs/{id}/state: per parameter leaf path. */
export type StateTree = Record<string, LeafState>;

export interface DatasetArray {
  name: string;
  shape: number[];
  dtype: string;
  min?: number | null;
  max?: number | null;
}

export interface Dataset {
  id: string;
  name: string;
  sha256: string;
  size_bytes: number;
  arrays: DatasetArray[];
  created_at: string;
}

export interface Worker {
  id: string;
  name: string;
  device: { kind?: string; name?: string; memory_bytes?: number; [k: string]: unknown };
  status: "busy" | "idle" | "gone";
  job_id: string | null;
  created_at: string;
  last_seen_at: string;
}

export interface User {
  name: string;
  admin: boolean;
}

/** The per-job stream's ``status`` event. */
export interface StatusEvent {
  status: JobStatus;
  epoch: number;
  step: number;
  error: string | null;
}

/** The per-job stream's ``steps`` event: a batch of step losses from ``first_step``. */
export interface StepsEvent {
  epoch: number;
  first_step: number;
  losses: (number | null)[];
}

export type JobEvent =
  | { kind: "steps"; data: StepsEvent }
  | { kind: "epoch"; data: Epoch }
  | { kind: "control"; data: Control }
  | { kind: "status"; data: StatusEvent };
