// Datasets: the list, an upload with a progress bar, and delete (a dataset an unfinished
// job uses is refused with a 409, shown as the server says it).

import { useEffect, useRef, useState } from "preact/hooks";
import type { Api, ApiError, Upload } from "../api";
import { fmtAge, fmtBytes } from "../format";
import type { Dataset } from "../types";
import { ErrorBox } from "./common";
import { useNow } from "./hooks";

export function DatasetsPage({ api }: { api: Api }) {
  const [datasets, setDatasets] = useState<Dataset[] | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const now = useNow(30_000);

  const load = () => api.datasets().then((d) => { setDatasets(d); setError(null); }, setError);
  useEffect(() => { load(); }, [api]);

  return (
    <section class="page" data-testid="datasets-page">
      <div class="page-head"><h1>Datasets</h1></div>
      <UploadForm api={api} onUploaded={load} />
      <ErrorBox error={error} />
      {datasets === null && !error ? <p class="empty">Loading datasets…</p> : null}
      {datasets?.length === 0 ? <p class="empty" data-testid="datasets-empty">No datasets yet: upload a .npz above.</p> : null}
      {datasets?.length ? (
        <table class="datasets" data-testid="datasets-table">
          <thead>
            <tr><th>Name</th><th>Arrays</th><th class="num">Size</th><th>Id</th><th class="num">Age</th><th /></tr>
          </thead>
          <tbody>
            {datasets.map((d) => (
              <DatasetRow key={d.id} api={api} d={d} age={fmtAge(d.created_at, now)} onDeleted={load} />
            ))}
          </tbody>
        </table>
      ) : null}
    </section>
  );
}

function DatasetRow({ api, d, age, onDeleted }: { api: Api; d: Dataset; age: string; onDeleted: () => void }) {
  const [confirming, setConfirming] = useState(false);
  const [error, setError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);

  const remove = async () => {
    setBusy(true);
    setError(null);
    try {
      await api.deleteDataset(d.id);
      onDeleted();
    } catch (e) {
      setError(e as ApiError);
      setConfirming(false);
    } finally {
      setBusy(false);
    }
  };

  return (
    <>
    <tr data-testid="dataset-row" data-dataset-id={d.id} data-name={d.name}>
      <td class="name" data-testid="dataset-name">{d.name}</td>
      <td class="arrays">
        {d.arrays.map((a) => (
          <span key={a.name} class="array"><b>{a.name}</b> {a.dtype} [{a.shape.join(", ")}]</span>
        ))}
      </td>
      <td class="num">{fmtBytes(d.size_bytes)}</td>
      <td><code title={d.sha256}>{d.id}</code></td>
      <td class="num">{age}</td>
      <td class="row-actions">
        {confirming ? (
          <>
            <button type="button" class="danger" data-testid="confirm-delete" disabled={busy} onClick={remove}>Delete {d.name}</button>
            <button type="button" class="quiet" data-testid="keep-dataset" onClick={() => setConfirming(false)}>Keep</button>
          </>
        ) : (
          <button type="button" data-testid="delete-dataset" aria-label={`Delete ${d.name}`}
            onClick={() => setConfirming(true)}>Delete</button>
        )}
      </td>
    </tr>
    {error ? (
      <tr class="row-error-line" data-testid="dataset-error" data-dataset-id={d.id}>
        <td colSpan={6}><ErrorBox error={error} /></td>
      </tr>
    ) : null}
    </>
  );
}

function UploadForm({ api, onUploaded }: { api: Api; onUploaded: () => void }) {
  const file = useRef<HTMLInputElement>(null);
  const [name, setName] = useState("");
  const [progress, setProgress] = useState<{ sent: number; total: number } | null>(null);
  const [upload, setUpload] = useState<Upload | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [done, setDone] = useState<Dataset | null>(null);

  const submit = async (e: Event) => {
    e.preventDefault();
    const f = file.current?.files?.[0];
    if (!f) return;
    setError(null);
    setDone(null);
    setProgress({ sent: 0, total: f.size });
    const up = api.uploadDataset(f, name.trim(), (sent, total) => setProgress({ sent, total }));
    setUpload(up);
    try {
      setDone(await up.done);
      setName("");
      if (file.current) file.current.value = "";
      onUploaded();
    } catch (err) {
      setError(err as ApiError);
    } finally {
      setUpload(null); // the bar stays, full or as far as it got, until the next upload
    }
  };

  return (
    <form class="upload" onSubmit={submit} data-testid="upload-form" aria-label="Upload a dataset">
      <label>.npz file
        <input ref={file} type="file" accept=".npz" data-testid="upload-file" required />
      </label>
      <label>Name
        <input value={name} placeholder="the file's name" data-testid="upload-name"
          onInput={(e) => setName(e.currentTarget.value)} />
      </label>
      <button type="submit" data-testid="upload-submit" disabled={upload !== null}>Upload</button>
      {upload ? <button type="button" class="quiet" onClick={() => upload.abort()}>Stop</button> : null}
      {progress ? (
        <span class="upload-progress" data-testid="upload-progress-text">
          <progress data-testid="upload-progress" max={progress.total || 1} value={progress.sent} />
          {fmtBytes(progress.sent)} / {fmtBytes(progress.total)}
        </span>
      ) : null}
      {done ? <span class="ok" role="status" data-testid="upload-done">Uploaded {done.name}.</span> : null}
      <ErrorBox error={error} />
    </form>
  );
}
