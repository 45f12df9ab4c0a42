// Pieces every page uses: the error box, the stream's state, a status badge.

import type { ApiError } from "../api";
import type { StreamState } from "../stream";
import type { Job } from "../types";

/** An API error as the server said it, each field's path with its message. */
export function ErrorBox({ error, testid = "error" }: { error: ApiError | Error | null; testid?: string }) {
  if (!error) return null;
  const fields = "fields" in error ? error.fields : [];
  return (
    <div class="error" role="alert" data-testid={testid}>
      {fields.length ? (
        <ul>
          {fields.map((f, i) => (
            <li key={i}>{f.path ? <><code class="field">{f.path}</code>: </> : null}{f.msg}</li>
          ))}
        </ul>
      ) : <span>{error.message}</span>}
    </div>
  );
}

const STATE_TEXT: Record<StreamState, string> = {
  connecting: "connecting…", open: "live", reconnecting: "reconnecting…", closed: "not live",
};

/** Whether the page is live: "reconnecting…" while its stream is down. */
export function StreamBadge({ state, error }: { state: StreamState | "finished"; error?: ApiError | null }) {
  const text = state === "finished" ? "finished" : STATE_TEXT[state];
  return (
    <span class={`stream stream-${state}`} data-testid="stream-state" data-state={state} role="status"
      title={error ? error.message : undefined}>
      {text}{error && state === "closed" ? `: ${error.message}` : ""}
    </span>
  );
}

export function StatusBadge({ job, testid = "job-status" }: { job: Pick<Job, "status" | "requested">; testid?: string }) {
  return (
    <span class="status-cell">
      <span class={`badge status-${job.status}`} data-testid={testid}>{job.status}</span>
      {job.requested ? (
        <span class="badge requested" data-testid="job-requested">{job.requested} requested</span>
      ) : null}
    </span>
  );
}
