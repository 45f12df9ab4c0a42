// The API client: fetch with the bearer token, and one error type carrying the server's
// message and the path of each field it names (the one error shape of errors.py).

import type {
  Control, ControlCreate, Dataset, Epoch, Job, JobsPage, JobStatus, StateTree, Steps, User,
  Worker,
} from "./types";

export interface FieldError {
  /** The field's path in the request, e.g. ``hyper.eta`` or ``model.layers[0].out``. */
  path: string;
  msg: string;
}

/** A refused or failed request: ``status`` 0 when the server could not be reached. */
export class ApiError extends Error {
  readonly status: number;
  readonly fields: FieldError[];

  constructor(status: number, message: string, fields: FieldError[] = []) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.fields = fields;
  }
}

const WHERE = new Set(["body", "query", "path", "header", "cookie"]);

/** FastAPI's ``loc`` as a path: ``["body", "layers", 0, "out"]`` -> ``layers[0].out``. */
export function locPath(loc: readonly unknown[]): string {
  const parts = loc.length > 1 && WHERE.has(String(loc[0])) ? loc.slice(1) : loc;
  let out = "";
  for (const part of parts) {
    if (typeof part === "number") out += `[${part}]`;
    else out += out ? `.${String(part)}` : String(part);
  }
  return out;
}

/** The error a response's status and body stand for, with the server's words. */
export function errorFromBody(status: number, statusText: string, body: unknown): ApiError {
  const detail = body !== null && typeof body === "object" ? (body as { detail?: unknown }).detail
    : undefined;
  if (typeof detail === "string") return new ApiError(status, detail);
  if (Array.isArray(detail)) {
    const fields = detail.map((d: { loc?: unknown; msg?: unknown }) => ({
      path: Array.isArray(d?.loc) ? locPath(d.loc) : "",
      msg: typeof d?.msg === "string" ? d.msg : JSON.stringify(d),
    }));
    return new ApiError(status, fields.map(formatField).join("\n"), fields);
  }
  const text = typeof body === "string" ? body.trim().slice(0, 300) : "";
  return new ApiError(status, `${status} ${statusText}`.trim() + (text ? `: ${text}` : ""));
}

export function formatField(f: FieldError): string {
  return f.path ? `${f.path}: ${f.msg}` : f.msg;
}

/** The error of a failed response (its body read as JSON when it is some). */
export async function errorFromResponse(res: Response): Promise<ApiError> {
  const text = await res.text().catch(() => "");
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON (a proxy's page): shown as text
  }
  return errorFromBody(res.status, res.statusText, body);
}

export function unreachable(e: unknown): ApiError {
  const why = e instanceof Error ? e.message : String(e);
  return new ApiError(0, `cannot reach the server (${why})`);
}

export interface ApiOptions {
  /** The server's origin; "" for the page's own. */
  base?: string;
  fetch?: typeof fetch;
  /** Called with every 401, so that the page can ask for a token again. */
  onUnauthorized?: (e: ApiError) => void;
  /** Makes the XMLHttpRequest of an upload (for tests). */
  xhr?: () => XMLHttpRequest;
}

export interface Upload {
  done: Promise<Dataset>;
  abort: () => void;
}

export class Api {
  readonly token: string;
  readonly base: string;
  private readonly fetchFn: typeof fetch;
  private readonly opts: ApiOptions;

  constructor(token: string, opts: ApiOptions = {}) {
    this.token = token;
    this.base = opts.base ?? "";
    this.fetchFn = opts.fetch ?? ((...args) => fetch(...args));
    this.opts = opts;
  }

  headers(extra: Record<string, string> = {}): Record<string, string> {
    return { Authorization: `Bearer ${this.token}`, ...extra };
  }

  url(path: string, query: Record<string, string | number | null | undefined> = {}): string {
    const q = Object.entries(query).filter(([, v]) => v !== null && v !== undefined && v !== "")
      .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`).join("&");
    return `${this.base}/v1${path}${q ? `?${q}` : ""}`;
  }

  /** A request whose success is any 2xx; a refusal throws the server's ApiError. */
  async send(method: string, url: string, body?: unknown, signal?: AbortSignal): Promise<Response> {
    const headers = this.headers({ Accept: "application/json" });
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res: Response;
    try {
      res = await this.fetchFn(url, {
        method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      if (signal?.aborted) throw e;
      throw unreachable(e);
    }
    if (!res.ok) {
      const err = await errorFromResponse(res);
      if (res.status === 401) this.opts.onUnauthorized?.(err);
      throw err;
    }
    return res;
  }

  async json<T>(method: string, path: string, body?: unknown,
    query: Record<string, string | number | null | undefined> = {}, signal?: AbortSignal,
  ): Promise<T> {
    const res = await this.send(method, this.url(path, query), body, signal);
    return res.status === 204 ? (undefined as T) : ((await res.json()) as T);
  }

  me(): Promise<User> {
    return this.json("GET", "/me");
  }

  /** One page of jobs, and the server's clock when it answered (for a stream's ``since``). */
  async jobsPage(q: { status?: JobStatus | null; cursor?: string | null; limit?: number } = {},
  ): Promise<{ page: JobsPage; date: Date | null }> {
    const res = await this.send("GET", this.url("/jobs", q));
    const header = res.headers.get("Date");
    const date = header ? new Date(header) : null;
    return { page: (await res.json()) as JobsPage, date: date && !isNaN(+date) ? date : null };
  }

  job(id: string): Promise<Job> {
    return this.json("GET", `/jobs/${encodeURIComponent(id)}`);
  }

  act(id: string, action: "pause" | "resume" | "cancel"): Promise<Job> {
    return this.json("POST", `/jobs/${encodeURIComponent(id)}/${action}`);
  }

  addControl(id: string, body: ControlCreate): Promise<Control> {
    return this.json("POST", `/jobs/${encodeURIComponent(id)}/controls`, body);
  }

  controls(id: string): Promise<Control[]> {
    return this.json("GET", `/jobs/${encodeURIComponent(id)}/controls`);
  }

  epochs(id: string): Promise<Epoch[]> {
    return this.json("GET", `/jobs/${encodeURIComponent(id)}/epochs`);
  }

  state(id: string): Promise<StateTree> {
    return this.json("GET", `/jobs/${encodeURIComponent(id)}/state`);
  }

  steps(id: string, maxPoints: number): Promise<Steps> {
    return this.json("GET", `/jobs/${encodeURIComponent(id)}/steps`, undefined,
      { max_points: Math.max(1, Math.round(maxPoints)) });
  }

  async weights(id: string): Promise<Blob> {
    const res = await this.send("GET", this.url(`/jobs/${encodeURIComponent(id)}/weights`));
    return res.blob();
  }

  async datasets(): Promise<Dataset[]> {
    return (await this.json<{ data: Dataset[] }>("GET", "/datasets")).data;
  }

  deleteDataset(id: string): Promise<void> {
    return this.json("DELETE", `/datasets/${encodeURIComponent(id)}`);
  }

  async workers(): Promise<Worker[]> {
    return (await this.json<{ data: Worker[] }>("GET", "/workers")).data;
  }

  /** Upload a .npz as a multipart form (XMLHttpRequest: fetch reports no upload progress). */
  uploadDataset(file: Blob, name: string, onProgress: (sent: number, total: number) => void,
  ): Upload {
    const xhr = this.opts.xhr ? this.opts.xhr() : new XMLHttpRequest();
    const done = new Promise<Dataset>((resolve, reject) => {
      xhr.open("POST", this.url("/datasets", { name }));
      for (const [k, v] of Object.entries(this.headers({ Accept: "application/json" }))) {
        xhr.setRequestHeader(k, v);
      }
      xhr.upload.onprogress = (e: ProgressEvent) => {
        if (e.lengthComputable) onProgress(e.loaded, e.total);
      };
      xhr.onload = () => {
        let body: unknown = xhr.responseText;
        try {
          body = JSON.parse(xhr.responseText);
        } catch {
          // shown as text
        }
        if (xhr.status >= 200 && xhr.status < 300) resolve(body as Dataset);
        else {
          const err = errorFromBody(xhr.status, xhr.statusText, body);
          if (xhr.status === 401) this.opts.onUnauthorized?.(err);
          reject(err);
        }
      };
      xhr.onerror = () => reject(unreachable(new Error("the upload failed")));
      xhr.onabort = () => reject(new ApiError(0, "the upload was cancelled"));
      const form = new FormData();
      form.append("file", file, file instanceof File ? file.name : "data.npz");
      xhr.send(form);
    });
    return { done, abort: () => xhr.abort() };
  }
}
