// A job's epoch table (newest first: live rows arrive on top) and control history.

import { fmtDuration, fmtHyper, fmtNum, fmtPath, fmtTime } from "../format";
import { controlLabel } from "../markers";
import type { Control, Epoch } from "../types";
import { ControlOutcome } from "./ModelTree";

export function EpochTable({ epochs }: { epochs: Epoch[] }) {
  if (!epochs.length) return <p class="empty" data-testid="epochs-empty">No epoch has finished yet.</p>;
  const metricNames = [...new Set(epochs.flatMap((e) => Object.keys(e.metrics)))]
    .filter((k) => k !== "train_loss" && k !== "val_loss").sort();
  return (
    <div class="table-scroll">
      <table class="epochs" data-testid="epoch-table">
        <thead>
          <tr>
            <th class="num">Epoch</th><th class="num">Train loss</th><th class="num">Val loss</th>
            {metricNames.map((k) => <th key={k} class="num">{k}</th>)}
            <th>Learning rates</th><th>Frozen</th><th class="num">Skipped</th>
            <th class="num">Samples/s</th><th class="num">Time</th>
          </tr>
        </thead>
        <tbody>
          {[...epochs].reverse().map((e) => (
            <tr key={e.epoch} data-testid="epoch-row" data-epoch={e.epoch}>
              <td class="num">{e.epoch}</td>
              <td class="num">{fmtNum(e.train_loss)}</td>
              <td class="num">{fmtNum(e.val_loss)}</td>
              {metricNames.map((k) => <td key={k} class="num">{fmtNum(e.metrics[k])}</td>)}
              <td data-testid="epoch-rates">
                {Object.entries(e.learning_rates).map(([p, v]) => (
                  <span key={p} class="rate" data-path={p}>{p === "" ? "all" : p} {fmtHyper(v)}</span>
                ))}
              </td>
              <td data-testid="epoch-frozen">{e.frozen.map(fmtPath).join(", ") || "–"}</td>
              <td class="num">{e.skipped_steps}</td>
              <td class="num">{e.samples_per_s === null ? "–" : Math.round(e.samples_per_s)}</td>
              <td class="num">{fmtDuration(e.duration_s)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export function ControlHistory({ controls }: { controls: Control[] }) {
  if (!controls.length) {
    return <p class="empty" data-testid="controls-empty">No controls yet: set a learning rate, freeze or thaw a
      subtree from the model above, or pause the job.</p>;
  }
  return (
    <div class="table-scroll">
      <table class="controls" data-testid="control-history">
        <thead>
          <tr><th class="num">#</th><th>Change</th><th>Outcome</th><th>Sent</th><th>Resolved</th></tr>
        </thead>
        <tbody>
          {[...controls].reverse().map((c) => (
            <tr key={c.seq} data-testid="control-row" data-seq={c.seq} data-status={c.status} data-kind={c.kind}>
              <td class="num">{c.seq}</td>
              <td data-testid="control-label">{controlLabel(c)}</td>
              <td><ControlOutcome c={c} /></td>
              <td>{fmtTime(c.created_at)}</td>
              <td>{fmtTime(c.resolved_at)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
