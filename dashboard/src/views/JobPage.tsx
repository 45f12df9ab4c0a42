// One job, live: loaded once (the job, its epochs, controls, state, and its steps
// downsampled to about the chart's width), then kept current by the job's event stream,
// whose bursts are merged once per frame. Steer it from the model tree; pause, resume,
// cancel; download its weights.

import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import type { Api, ApiError } from "../api";
import { fmtAge, fmtDevice, fmtNum, fmtTime } from "../format";
import { JobStore, parseJobEvent } from "../job-store";
import { formatRoute } from "../route";
import { openStream, type EventStream, type StreamState } from "../stream";
import type { ControlCreate, Job, JobEvent, StateTree } from "../types";
import { FINISHED } from "../types";
import { ErrorBox, StatusBadge, StreamBadge } from "./common";
import { replaceHash, useNow } from "./hooks";
import { JobCharts } from "./JobCharts";
import { ControlHistory, EpochTable } from "./JobTables";
import { ModelTree } from "./ModelTree";

/** When to read the state tree again after a control is resolved (the worker posts it
 * right after the control's result; the second read catches a slow post). */
const STATE_AFTER_CONTROL_MS = [300, 1500];
/** Otherwise read it this long after an epoch row (a schedule moves it every step). */
const STATE_EVERY_MS = 5000;
/** Read the job again at most this often on status events (they lack has_weights...). */
const JOB_EVERY_MS = 1000;

type LiveState = StreamState | "finished";

export function JobPage({ api, id, smooth, log }: { api: Api; id: string; smooth: number; log: boolean }) {
  const [store, setStore] = useState<JobStore | null>(null);
  const [version, setVersion] = useState(0);
  const [state, setState] = useState<StateTree | null>(null);
  const [loadError, setLoadError] = useState<ApiError | null>(null);
  const [live, setLive] = useState<{ state: LiveState; error: ApiError | null }>(
    { state: "connecting", error: null });
  // points to ask for and keep: about the chart's width in pixels
  const maxPoints = useMemo(() => Math.max(300, Math.min(4000, Math.round(innerWidth))), []);

  useEffect(() => {
    let cancelled = false;
    let events: EventStream | null = null;
    let pending: JobEvent[] = [];
    let frame = 0;
    let ended = false; // the stream has sent the job's last status
    const timers = new Set<ReturnType<typeof setTimeout>>();
    const later = (ms: number, f: () => void) => {
      const t = setTimeout(() => { timers.delete(t); if (!cancelled) f(); }, ms);
      timers.add(t);
    };
    // one read of the state tree waits at a time: a request for an earlier one moves it
    let stateTimer: ReturnType<typeof setTimeout> | undefined;
    let stateDueAt = Infinity;
    const readState = (delay: number) => {
      if (Date.now() + delay >= stateDueAt) return;
      clearTimeout(stateTimer);
      stateDueAt = Date.now() + delay;
      stateTimer = setTimeout(() => {
        stateDueAt = Infinity;
        api.state(id).then((s) => { if (!cancelled) setState(s); }, () => undefined);
      }, delay);
    };
    let jobDue = false;
    let jobAt = 0;
    const readJob = (s: JobStore) => {
      if (jobDue) return;
      jobDue = true;
      later(Math.max(0, jobAt + JOB_EVERY_MS - Date.now()), () => {
        jobDue = false;
        jobAt = Date.now();
        api.job(id).then((j) => { if (!cancelled) { s.setJob(j); setVersion(s.version); } }, () => undefined);
      });
    };

    (async () => {
      try {
        const [job, epochs, controls, steps, st] = await Promise.all([
          api.job(id), api.epochs(id), api.controls(id), api.steps(id, maxPoints), api.state(id),
        ]);
        if (cancelled) return;
        const s = new JobStore({ job, epochs, controls, steps });
        setStore(s);
        setState(st);
        if (FINISHED.has(job.status)) {
          setLive({ state: "finished", error: null });
          return;
        }
        const flush = () => {
          frame = 0;
          const evs = pending;
          pending = [];
          const r = s.apply(evs, 2 * maxPoints);
          if (r.status) readJob(s);
          if (r.resolved) STATE_AFTER_CONTROL_MS.forEach((ms) => later(ms, () => readState(0)));
          if (r.epochs) readState(STATE_EVERY_MS);
          if (FINISHED.has(s.job.status)) {
            events?.close();
            setLive({ state: "finished", error: null });
            readState(0);
          }
          setVersion(s.version);
        };
        events = openStream({
          url: api.url(`/jobs/${encodeURIComponent(id)}/events`),
          headers: api.headers(),
          onEvents: (msgs) => {
            for (const m of msgs) {
              const ev = parseJobEvent(m.event, m.data);
              if (ev) pending.push(ev);
              // the job's last event: the server ends the stream, which must not reopen
              if (ev?.kind === "status" && FINISHED.has(ev.data.status)) {
                ended = true;
                events?.close();
              }
            }
            frame ||= requestAnimationFrame(flush);
          },
          onState: (st2, err) => {
            if (!ended) setLive({ state: st2, error: err ?? null });
          },
        });
      } catch (e) {
        if (!cancelled) setLoadError(e as ApiError);
      }
    })();
    return () => {
      cancelled = true;
      events?.close();
      cancelAnimationFrame(frame);
      timers.forEach(clearTimeout);
      clearTimeout(stateTimer);
    };
  }, [api, id]);

  const cols = useMemo(() => store?.steps.columns(), [store, version]);

  if (loadError) {
    return <section class="page"><h1>Job <code>{id}</code></h1><ErrorBox error={loadError} /></section>;
  }
  if (!store || !cols) return <section class="page"><p class="empty">Loading job…</p></section>;

  const job = store.job;
  const bump = () => setVersion(store.version);
  const onControl = async (body: ControlCreate) => {
    store.upsertControl(await api.addControl(id, body));
    bump();
  };

  return (
    <section class="page job" data-testid="job-page" data-job-id={id} data-status={job.status}>
      <div class="page-head">
        <h1 data-testid="job-name">{job.name || id.slice(0, 8)}</h1>
        <StatusBadge job={job} />
        <StreamBadge state={live.state} error={live.error} />
        <span class="spacer" />
        <JobActions api={api} job={job} onJob={(j) => { store.setJob(j); bump(); }} />
      </div>
      <JobFacts job={job} lastStep={Math.max(job.step, store.steps.lastStep)} />
      {job.error ? <pre class="error job-error" role="alert" data-testid="job-error">{job.error}</pre> : null}

      <div class="smoothing">
        <label>Smoothing
          <input type="range" min="0" max="0.99" step="0.01" value={smooth} data-testid="smoothing"
            aria-label="Smoothing" onInput={(e) => replaceHash(formatRoute({
              page: "job", id, smooth: Number(e.currentTarget.value), log,
            }))} />
        </label>
        <output data-testid="smoothing-value">{smooth.toFixed(2)}</output>
        <label><input type="checkbox" checked={log} data-testid="log-scale"
          onChange={(e) => replaceHash(formatRoute({ page: "job", id, smooth, log: e.currentTarget.checked }))} />
          log scale (loss)</label>
      </div>
      <JobCharts job={job} cols={cols} epochs={store.epochs} controls={store.controls} weight={smooth} log={log} />

      <h2>Model</h2>
      <ModelTree state={state} controls={store.controls} editable={!FINISHED.has(job.status)}
        onControl={onControl} />

      <h2>Controls</h2>
      <ControlHistory controls={store.controls} />

      <h2>Epochs</h2>
      <EpochTable epochs={store.epochs} />
    </section>
  );
}

function JobFacts({ job, lastStep }: { job: Job; lastStep: number }) {
  const now = useNow(10_000);
  const latest = job.latest;
  return (
    <dl class="facts" data-testid="job-facts">
      <div><dt>Epoch</dt><dd data-testid="job-epoch">{job.epoch} / {job.epochs}</dd></div>
      <div><dt>Step</dt><dd data-testid="job-step">{lastStep}{job.steps_per_epoch ? ` (${job.steps_per_epoch} an epoch)` : ""}</dd></div>
      {latest ? <div><dt>Latest</dt><dd>train {fmtNum(latest.train_loss)} · val {fmtNum(latest.val_loss)}</dd></div> : null}
      <div><dt>Parameters</dt><dd>{job.parameters.toLocaleString()}</dd></div>
      <div><dt>Optimiser</dt><dd>{job.spec.optimiser.rule} · loss {job.spec.loss} · batch {job.spec.batch_size}</dd></div>
      <div><dt>Device</dt><dd data-testid="job-device">{fmtDevice(job.device)}</dd></div>
      {job.worker ? <div><dt>Worker</dt><dd data-testid="job-worker">{job.worker.name}</dd></div> : null}
      <div><dt>Attempt</dt><dd>{job.attempt}</dd></div>
      <div><dt>Submitted</dt><dd title={fmtTime(job.created_at)}>{fmtAge(job.created_at, now)} ago</dd></div>
      {job.finished_at ? <div><dt>Finished</dt><dd>{fmtTime(job.finished_at)}</dd></div> : null}
      <div><dt>Id</dt><dd><code data-testid="job-id">{job.id}</code></dd></div>
    </dl>
  );
}

function JobActions({ api, job, onJob }: {
  api: Api; job: Job; onJob: (j: Job) => void;
}) {
  const [error, setError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);
  const link = useRef<HTMLAnchorElement>(null);
  const finished = FINISHED.has(job.status);

  const act = async (action: "pause" | "resume" | "cancel") => {
    setBusy(true);
    setError(null);
    try {
      onJob(await api.act(job.id, action));
    } catch (e) {
      setError(e as ApiError);
    } finally {
      setBusy(false);
    }
  };

  const download = async () => {
    setBusy(true);
    setError(null);
    try {
      const url = URL.createObjectURL(await api.weights(job.id));
      const a = link.current!;
      a.href = url;
      a.download = `${job.name || job.id}.safetensors`.replace(/[^\w.-]+/g, "_");
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (e) {
      setError(e as ApiError);
    } finally {
      setBusy(false);
    }
  };

  return (
    <div class="job-actions">
      <button type="button" data-testid="pause" disabled={busy || !(job.status === "queued" || job.status === "running") || job.requested !== null}
        onClick={() => act("pause")}>Pause</button>
      <button type="button" data-testid="resume" disabled={busy || job.status !== "paused"}
        onClick={() => act("resume")}>Resume</button>
      <button type="button" class="danger" data-testid="cancel" disabled={busy || finished || job.requested === "cancel"}
        onClick={() => act("cancel")}>Cancel</button>
      <button type="button" data-testid="download-weights" disabled={busy || !job.has_weights}
        title={job.has_weights ? "The latest weights (safetensors)" : "No weights yet: the first checkpoint makes some"}
        onClick={download}>Download weights</button>
      <a ref={link} hidden data-testid="weights-link" />
      <ErrorBox error={error} />
    </div>
  );
}
