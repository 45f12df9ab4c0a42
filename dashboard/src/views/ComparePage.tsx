// Compare: the smoothed step loss and the epoch validation curves of several jobs, overlaid.

import { useEffect, useMemo, useState } from "preact/hooks";
import uPlot from "uplot";
import type { Api, ApiError } from "../api";
import { fmtNum } from "../format";
import { formatRoute, jobHref } from "../route";
import { smooth } from "../smoothing";
import { StepSeries } from "../steps";
import type { Epoch, Job } from "../types";
import { Chart, PALETTE } from "./Chart";
import { ErrorBox, StatusBadge } from "./common";
import { replaceHash } from "./hooks";

interface Run {
  job: Job;
  x: number[];
  mean: (number | null)[];
  epochs: Epoch[];
}

export function ComparePage({ api, ids, smooth: weight }: { api: Api; ids: string[]; smooth: number }) {
  const [runs, setRuns] = useState<Run[] | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [reload, setReload] = useState(0);
  const maxPoints = Math.max(300, Math.min(2000, Math.round(innerWidth)));
  const key = ids.join(",");

  useEffect(() => {
    let cancelled = false;
    setError(null);
    Promise.all(ids.map(async (id) => {
      const [job, steps, epochs] = await Promise.all([api.job(id), api.steps(id, maxPoints), api.epochs(id)]);
      const cols = StepSeries.fromServer(steps).columns();
      return { job, x: cols.x, mean: cols.mean, epochs };
    })).then((r) => { if (!cancelled) setRuns(r); }, (e) => { if (!cancelled) setError(e); });
    return () => { cancelled = true; };
  }, [api, key, reload]);

  const charts = useMemo(() => {
    if (!runs?.length) return null;
    const label = (r: Run) => r.job.name || r.job.id.slice(0, 8);
    const steps = uPlot.join(runs.map((r) => [r.x, smooth(r.mean, weight)] as uPlot.AlignedData));
    const epochTable = (pick: (e: Epoch) => number | null) =>
      uPlot.join(runs.map((r) => [r.epochs.map((e) => e.epoch), r.epochs.map(pick)] as uPlot.AlignedData));
    const val = epochTable((e) => e.val_loss);
    const acc = runs.some((r) => r.epochs.some((e) => typeof e.metrics.val_accuracy === "number"))
      ? epochTable((e) => e.metrics.val_accuracy ?? null) : null;
    const series = (suffix: string) => runs.map((r, i) => ({
      label: `${label(r)}${suffix}`, stroke: PALETTE[i % PALETTE.length], width: 2, spanGaps: true,
    }));
    return { steps, val, acc, series, label };
  }, [runs, weight]);

  if (ids.length === 0) {
    return <section class="page"><h1>Compare</h1><p class="empty">Select jobs on the <a href="#/jobs">jobs page</a> to compare them.</p></section>;
  }
  return (
    <section class="page" data-testid="compare-page">
      <div class="page-head">
        <h1>Compare {ids.length} jobs</h1>
        <span class="spacer" />
        <button type="button" data-testid="refresh" onClick={() => setReload((n) => n + 1)}>Refresh</button>
      </div>
      <ErrorBox error={error} />
      {runs ? (
        <table class="compare-jobs" data-testid="compare-jobs">
          <thead><tr><th /><th>Job</th><th>Status</th><th>Progress</th><th class="num">Val loss</th><th /></tr></thead>
          <tbody>
            {runs.map((r, i) => (
              <tr key={r.job.id} data-testid="compare-job" data-job-id={r.job.id}>
                <td><span class="swatch" style={{ background: PALETTE[i % PALETTE.length] }} /></td>
                <td><a href={jobHref(r.job.id)}>{r.job.name || r.job.id.slice(0, 8)}</a></td>
                <td><StatusBadge job={r.job} /></td>
                <td>{r.job.epoch} / {r.job.epochs}</td>
                <td class="num">{fmtNum(r.epochs.at(-1)?.val_loss)}</td>
                <td><a href={formatRoute({ page: "compare", ids: ids.filter((x) => x !== r.job.id), smooth: weight })}>remove</a></td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : !error ? <p class="empty">Loading…</p> : null}
      <div class="smoothing">
        <label>Smoothing
          <input type="range" min="0" max="0.99" step="0.01" value={weight} data-testid="smoothing" aria-label="Smoothing"
            onInput={(e) => replaceHash(formatRoute({ page: "compare", ids, smooth: Number(e.currentTarget.value) }))} />
        </label>
        <output>{weight.toFixed(2)}</output>
      </div>
      {charts ? (
        <div class="charts">
          <Chart testid="compare-step-loss" title="Loss by step (smoothed)" data={charts.steps} xLabel="step"
            series={charts.series("")} height={280} />
          <div class="chart-pair">
            <Chart testid="compare-val-loss" title="Validation loss by epoch" data={charts.val} xLabel="epoch"
              series={charts.series("")} />
            {charts.acc ? (
              <Chart testid="compare-val-accuracy" title="Validation accuracy by epoch" data={charts.acc} xLabel="epoch"
                series={charts.series("")} />
            ) : null}
          </div>
        </div>
      ) : null}
    </section>
  );
}
