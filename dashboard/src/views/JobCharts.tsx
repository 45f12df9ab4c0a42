// A job's charts: step loss (raw and smoothed, the min/max band when downsampled), the
// learning rate of each subtree over the steps, and the epoch losses and metrics; every
// chart marks where each control took effect.

import { useMemo } from "preact/hooks";
import uPlot from "uplot";
import { fmtPath } from "../format";
import { markers as controlMarkers } from "../markers";
import { learningRates, ruleEta } from "../rates";
import { smooth } from "../smoothing";
import type { StepColumns } from "../steps";
import type { Control, Epoch, Job } from "../types";
import { Chart, PALETTE, type ChartMarker } from "./Chart";

const stepped = uPlot.paths.stepped!({ align: 1 });

/** Values a log axis can show: others (a loss of exactly 0) left out. */
function positive(values: (number | null)[]): (number | null)[] {
  return values.map((v) => (v !== null && v > 0 ? v : null));
}

function stepLossSeries(cols: StepColumns, weight: number, log = false) {
  const y = log ? positive : (v: (number | null)[]) => v;
  const smoothed = smooth(cols.mean, weight);
  const banded = cols.stride > 1;
  const data: uPlot.AlignedData = banded
    ? [cols.x, y(cols.max), y(cols.min), y(cols.mean), y(smoothed)]
    : [cols.x, y(cols.mean), y(smoothed)];
  const raw = banded ? `loss (mean of ${cols.stride} steps)` : "loss";
  const series: uPlot.Series[] = [
    ...(banded ? [
      // the band does not set the axis: a spike would flatten the curve people read
      { label: "max", stroke: "rgba(37,99,235,0.25)", width: 1, auto: false },
      { label: "min", stroke: "rgba(37,99,235,0.25)", width: 1, auto: false },
    ] : []),
    { label: raw, stroke: "rgba(37,99,235,0.45)", width: 1 },
    { label: `smoothed (${weight})`, stroke: PALETTE[0], width: 2 },
  ];
  const bands: uPlot.Band[] = banded ? [{ series: [1, 2], fill: "rgba(37,99,235,0.10)" }] : [];
  return { data, series, bands };
}

export function JobCharts({ job, cols, epochs, controls, weight, log }: {
  job: Job;
  cols: StepColumns;
  /** The store's lists: a new array whenever they change. */
  epochs: Epoch[];
  controls: Control[];
  weight: number;
  /** Loss axes on a log scale. */
  log: boolean;
}) {
  const spe = job.steps_per_epoch;
  const marks = useMemo(() => controlMarkers(controls, spe), [controls, spe]);
  const stepMarks: ChartMarker[] = marks.map((m) => ({ key: m.seq, x: m.step, label: m.label, kind: m.kind }));
  const epochMarks: ChartMarker[] = marks.map((m) => ({ key: m.seq, x: m.epochX, label: m.label, kind: m.kind }));

  const loss = useMemo(() => stepLossSeries(cols, weight, log), [cols, weight, log]);

  const rates = useMemo(() => {
    const initial = job.spec.schedule ? null : ruleEta(job.spec.optimiser);
    const lastStep = Math.max(cols.x.length ? cols.x[cols.x.length - 1] : 0, job.step);
    return learningRates(epochs, controls, spe, initial, lastStep);
  }, [epochs, controls, spe, cols, job.step, job.spec]);
  const rateValues = rates.values.flat().filter((v): v is number => v !== null);
  const rateLog = rateValues.length > 0 && rateValues.every((v) => v > 0);

  const epochData = useMemo(() => {
    const x = epochs.map((e) => e.epoch);
    const metricNames = [...new Set(epochs.flatMap((e) => Object.keys(e.metrics)))]
      .filter((k) => k !== "train_loss" && k !== "val_loss")
      .filter((k) => epochs.some((e) => e.metrics[k] !== null && e.metrics[k] !== undefined))
      .sort();
    return {
      losses: [x, ...[epochs.map((e) => e.train_loss), epochs.map((e) => e.val_loss)]
        .map((v) => (log ? positive(v) : v))] as uPlot.AlignedData,
      hasVal: epochs.some((e) => e.val_loss !== null),
      metricNames,
      metrics: [x, ...metricNames.map((k) => epochs.map((e) => e.metrics[k] ?? null))] as uPlot.AlignedData,
    };
  }, [epochs, log]);

  const points = { show: epochs.length <= 60, size: 5 };
  return (
    <div class="charts">
      <Chart testid="chart-step-loss" title="Loss by step" data={loss.data} series={loss.series}
        bands={loss.bands} markers={stepMarks} xLabel="step" yLog={log} syncKey={`steps-${job.id}`} height={260}
        empty="No steps yet." />
      <Chart testid="chart-learning-rate" title="Learning rate of each subtree" xLabel="step"
        data={[rates.x, ...rates.values]} markers={stepMarks} yLog={rateLog} syncKey={`steps-${job.id}`}
        series={rates.paths.map((p, i) => ({
          label: fmtPath(p), stroke: PALETTE[i % PALETTE.length], width: 2, paths: stepped, points: { show: false },
        }))}
        empty="No learning rates known yet." />
      <div class="chart-pair">
        <Chart testid="chart-epoch-loss" title="Loss by epoch" data={epochData.losses} xLabel="epoch" yLog={log}
          markers={epochMarks} empty="No epochs yet."
          series={[
            { label: "train loss", stroke: PALETTE[0], width: 2, points },
            { label: "val loss", stroke: PALETTE[1], width: 2, points, show: epochData.hasVal },
          ]} />
        {epochData.metricNames.length ? (
          <Chart testid="chart-epoch-metrics" title="Metrics by epoch" data={epochData.metrics} xLabel="epoch"
            markers={epochMarks}
            series={epochData.metricNames.map((k, i) => ({
              label: k, stroke: PALETTE[(i + 2) % PALETTE.length], width: 2, points,
            }))} />
        ) : null}
      </div>
    </div>
  );
}
