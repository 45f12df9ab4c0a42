// Every job of the user, live: the list loaded a page at a time, then the jobs stream
// (from just before the first page) upserting each job that changes. Only the rows in
// view (and a few around) are in the DOM, each of one fixed height, so a thousand jobs
// draw as fast as fifty; rows are memoised, so an event redraws one row; a burst of
// events is merged once per frame.

import { memo } from "preact/compat";
import { useCallback, useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import type { Api, ApiError } from "../api";
import { fmtAge, fmtNum } from "../format";
import { JobsStore } from "../jobs-store";
import { formatRoute, jobHref } from "../route";
import { openStream, type EventStream, type StreamState } from "../stream";
import type { Job, JobStatus } from "../types";
import { JOB_STATUSES } from "../types";
import { ErrorBox, StatusBadge, StreamBadge } from "./common";
import { useNow } from "./hooks";

const PAGE = 500;
/** Each row's height in pixels (the stylesheet's tr.job-row), and the rows drawn beyond
 * each edge of the window. */
const ROW_HEIGHT = 36;
const OVERSCAN = 12;

/** The rows of ``count`` in view of the window, given the table body's element. */
function useVisibleRows(count: number, body: { current: HTMLElement | null }): [number, number] {
  const [range, setRange] = useState<[number, number]>([0, Math.min(count, 40)]);
  useLayoutEffect(() => {
    const update = () => {
      const top = body.current ? body.current.getBoundingClientRect().top : 0;
      const first = Math.max(0, Math.floor(-top / ROW_HEIGHT) - OVERSCAN);
      const last = Math.min(count, Math.max(first, Math.ceil((innerHeight - top) / ROW_HEIGHT) + OVERSCAN));
      setRange((r) => (r[0] === first && r[1] === last ? r : [first, last]));
    };
    update();
    let frame = 0;
    const later = () => { frame ||= requestAnimationFrame(() => { frame = 0; update(); }); };
    addEventListener("scroll", later, { passive: true });
    addEventListener("resize", later);
    return () => {
      removeEventListener("scroll", later);
      removeEventListener("resize", later);
      cancelAnimationFrame(frame);
    };
  }, [count, body.current]);
  return range;
}

export function JobsPage({ api, status }: { api: Api; status: JobStatus | null }) {
  const store = useRef(new JobsStore()).current;
  const [, setVersion] = useState(0);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<ApiError | null>(null);
  const [stream, setStream] = useState<{ state: StreamState; error: ApiError | null }>(
    { state: "connecting", error: null });
  const [selected, setSelected] = useState<ReadonlySet<string>>(new Set());
  const now = useNow(10_000);

  useEffect(() => {
    let cancelled = false;
    let events: EventStream | null = null;
    let pending: Job[] = [];
    let frame = 0;
    const flush = () => {
      frame = 0;
      const jobs = pending;
      pending = [];
      if (store.upsert(jobs)) setVersion(store.version);
    };
    (async () => {
      try {
        const started = Date.now();
        let since: Date | null = null;
        let cursor: string | null = null;
        do {
          const { page, date } = await api.jobsPage({ cursor, limit: PAGE });
          if (cancelled) return;
          // the stream replays from a little before the first page was read, so that no
          // change made while the pages load is missed (a job sent twice is upserted)
          since ??= new Date((date ? +date : started) - 2000);
          store.upsert(page.data);
          setVersion(store.version);
          cursor = page.next_cursor;
        } while (cursor);
        setLoading(false);
        events = openStream({
          url: api.url("/jobs/events", { since: since.toISOString() }),
          headers: api.headers(),
          onEvents: (evs) => {
            for (const e of evs) if (e.event === "job") pending.push(JSON.parse(e.data) as Job);
            frame ||= requestAnimationFrame(flush);
          },
          onState: (state, err) => setStream({ state, error: err ?? null }),
        });
      } catch (e) {
        if (!cancelled) {
          setError(e as ApiError);
          setLoading(false);
        }
      }
    })();
    return () => {
      cancelled = true;
      events?.close();
      cancelAnimationFrame(frame);
    };
  }, [api]);

  const toggle = useCallback((id: string) => setSelected((s) => {
    const next = new Set(s);
    if (!next.delete(id)) next.add(id);
    return next;
  }), []);

  const jobs = store.list(status);
  const body = useRef<HTMLTableSectionElement>(null);
  const [first, last] = useVisibleRows(jobs.length, body);
  const counts = store.counts();
  const chosen = [...selected].filter((id) => store.get(id));
  const allShown = jobs.length > 0 && jobs.every((j) => selected.has(j.id));

  return (
    <section class="page" data-testid="jobs-page">
      <div class="page-head">
        <h1>Jobs</h1>
        <StreamBadge state={stream.state} error={stream.error} />
        <span class="spacer" />
        <button type="button" data-testid="compare" disabled={chosen.length < 2}
          title="Overlay the curves of the selected jobs"
          onClick={() => { location.hash = formatRoute({ page: "compare", ids: chosen, smooth: 0.6 }); }}>
          Compare{chosen.length ? ` (${chosen.length})` : ""}
        </button>
      </div>
      <nav class="filters" aria-label="Filter by status">
        <a href="#/jobs" data-testid="filter-all" aria-current={status === null ? "true" : undefined}>
          all <span class="count">{store.size}</span></a>
        {JOB_STATUSES.map((s) => (
          <a key={s} href={formatRoute({ page: "jobs", status: s })} data-testid={`filter-${s}`}
            aria-current={status === s ? "true" : undefined}>
            {s} <span class="count">{counts[s] ?? 0}</span></a>
        ))}
      </nav>
      <ErrorBox error={error} />
      {loading && !store.size ? <p class="empty">Loading jobs…</p> : null}
      {!loading && !jobs.length && !error ? (
        <p class="empty" data-testid="jobs-empty">
          {status ? `No ${status} jobs.` : "No jobs yet: submit one with the SDK or `kiln submit`."}
        </p>
      ) : null}
      {jobs.length ? (
        <table class="jobs" data-testid="jobs-table" data-total={jobs.length}>
          <thead>
            <tr>
              <th class="sel"><input type="checkbox" aria-label="Select every job shown" checked={allShown}
                data-testid="select-all"
                onChange={() => setSelected(allShown ? new Set() : new Set(jobs.map((j) => j.id)))} /></th>
              <th>Status</th><th>Name</th><th>Progress</th><th class="num">Train loss</th>
              <th class="num">Val loss</th><th>Metrics</th><th>Worker</th><th class="num">Age</th>
            </tr>
          </thead>
          <tbody ref={body}>
            {first > 0 ? <tr class="spacer-row" aria-hidden="true" style={{ height: `${first * ROW_HEIGHT}px` }} /> : null}
            {jobs.slice(first, last).map((j) => (
              <JobRow key={j.id} job={j} selected={selected.has(j.id)} age={fmtAge(j.created_at, now)}
                onToggle={toggle} />
            ))}
            {last < jobs.length ? (
              <tr class="spacer-row" aria-hidden="true" style={{ height: `${(jobs.length - last) * ROW_HEIGHT}px` }} />
            ) : null}
          </tbody>
        </table>
      ) : null}
    </section>
  );
}

const JobRow = memo(function JobRow({ job, selected, age, onToggle }: {
  job: Job; selected: boolean; age: string; onToggle: (id: string) => void;
}) {
  const latest = job.latest ?? null;
  const metrics = latest ? Object.entries(latest.metrics)
    .filter(([k]) => k !== "train_loss" && k !== "val_loss") : [];
  const name = job.name || job.id.slice(0, 8);
  const pct = job.epochs ? Math.min(100, (100 * job.epoch) / job.epochs) : 0;
  return (
    <tr class="job-row" data-testid="job-row" data-job-id={job.id} data-status={job.status}>
      <td class="sel"><input type="checkbox" aria-label={`Select ${name}`} data-testid="select-job"
        checked={selected} onChange={() => onToggle(job.id)} /></td>
      <td title={job.error ?? undefined}><StatusBadge job={job} /></td>
      <td class="name"><a href={jobHref(job.id)} data-testid="job-link">{name}</a>
        {job.error ? <span class="row-error" data-testid="job-error">{job.error}</span> : null}</td>
      <td data-testid="job-progress">
        <div class="progress" aria-hidden="true"><div style={{ width: `${pct}%` }} /></div>
        {job.epoch} / {job.epochs}
      </td>
      <td class="num" data-testid="job-train-loss">{fmtNum(latest?.train_loss)}</td>
      <td class="num" data-testid="job-val-loss">{fmtNum(latest?.val_loss)}</td>
      <td class="metrics">{metrics.map(([k, v]) => <span key={k}>{k} {fmtNum(v)}</span>)}</td>
      <td data-testid="job-worker">{job.worker?.name ?? "–"}</td>
      <td class="num" title={job.created_at}>{age}</td>
    </tr>
  );
});
