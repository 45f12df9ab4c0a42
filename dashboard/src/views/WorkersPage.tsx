// Workers: each one's name, device, state, current job and last heartbeat.

import { useEffect, useState } from "preact/hooks";
import type { Api, ApiError } from "../api";
import { fmtAge, fmtBytes, fmtTime } from "../format";
import { jobHref } from "../route";
import type { Worker } from "../types";
import { ErrorBox } from "./common";
import { useNow } from "./hooks";

function deviceText(d: Worker["device"]): string {
  const parts = [d.kind, d.name].filter((p) => typeof p === "string" && p);
  if (typeof d.memory_bytes === "number") parts.push(fmtBytes(d.memory_bytes));
  return parts.join(" · ") || JSON.stringify(d);
}

export function WorkersPage({ api }: { api: Api }) {
  const [workers, setWorkers] = useState<Worker[] | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [loadedAt, setLoadedAt] = useState(0);
  const now = useNow(1000);

  const load = () => api.workers().then((w) => {
    setWorkers(w);
    setError(null);
    setLoadedAt(Date.now());
  }, setError);
  useEffect(() => { load(); }, [api]);

  return (
    <section class="page" data-testid="workers-page">
      <div class="page-head">
        <h1>Workers</h1>
        <span class="spacer" />
        {loadedAt ? <span class="muted">as of {fmtAge(new Date(loadedAt).toISOString(), now)} ago</span> : null}
        <button type="button" data-testid="refresh" onClick={load}>Refresh</button>
      </div>
      <ErrorBox error={error} />
      {workers === null && !error ? <p class="empty">Loading workers…</p> : null}
      {workers?.length === 0 ? <p class="empty" data-testid="workers-empty">No worker has registered yet.</p> : null}
      {workers?.length ? (
        <table class="workers" data-testid="workers-table">
          <thead>
            <tr><th>Name</th><th>Device</th><th>Status</th><th>Current job</th><th class="num">Last heartbeat</th><th>Registered</th></tr>
          </thead>
          <tbody>
            {workers.map((w) => (
              <tr key={w.id} data-testid="worker-row" data-worker-id={w.id} data-status={w.status}>
                <td class="name" data-testid="worker-name">{w.name}</td>
                <td data-testid="worker-device">{deviceText(w.device)}</td>
                <td><span class={`badge worker-${w.status}`} data-testid="worker-status">{w.status}</span></td>
                <td>{w.job_id ? <a href={jobHref(w.job_id)} data-testid="worker-job"><code>{w.job_id.slice(0, 8)}</code></a> : "–"}</td>
                <td class="num" data-testid="worker-heartbeat" title={w.last_seen_at}>{fmtAge(w.last_seen_at, now)} ago</td>
                <td>{fmtTime(w.created_at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </section>
  );
}
