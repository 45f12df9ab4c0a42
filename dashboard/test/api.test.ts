import { describe, expect, it, vi } from "vitest";
import { Api, ApiError, errorFromBody, locPath } from "../src/api";

function fakeFetch(status: number, body: unknown, headers: Record<string, string> = {}) {
  return vi.fn(async (_url: string | URL | Request, _init?: RequestInit) =>
    new Response(typeof body === "string" ? body : JSON.stringify(body), {
      status, headers: { "Content-Type": "application/json", ...headers },
    }));
}

describe("locPath", () => {
  it("drops where the field was and writes indices in brackets", () => {
    expect(locPath(["body", "hyper", "eta"])).toBe("hyper.eta");
    expect(locPath(["body", "model", "layers", "enc", "layers", 0, "out"]))
      .toBe("model.layers.enc.layers[0].out");
    expect(locPath(["query", "max_points"])).toBe("max_points");
    expect(locPath(["body"])).toBe("body");
  });
});

describe("errorFromBody", () => {
  it("joins each 422 field's path to its message", () => {
    const e = errorFromBody(422, "Unprocessable Entity", {
      detail: [
        { loc: ["body", "hyper", "eta"], msg: "must be >= 0; got -1", type: "value_error" },
        { loc: ["body", "path"], msg: "no subtree 'x'", type: "value_error" },
      ],
    });
    expect(e.status).toBe(422);
    expect(e.message).toBe("hyper.eta: must be >= 0; got -1\npath: no subtree 'x'");
    expect(e.fields).toEqual([
      { path: "hyper.eta", msg: "must be >= 0; got -1" },
      { path: "path", msg: "no subtree 'x'" },
    ]);
  });

  it("keeps a string detail as the server wrote it", () => {
    const e = errorFromBody(409, "Conflict", { detail: "dataset 'd' is used by job 'j'" });
    expect(e.message).toBe("dataset 'd' is used by job 'j'");
    expect(e.fields).toEqual([]);
  });

  it("shows a body that is not the API's error shape as text, with the status", () => {
    const e = errorFromBody(502, "Bad Gateway", "<html>upstream down</html>");
    expect(e.message).toBe("502 Bad Gateway: <html>upstream down</html>");
  });
});

describe("Api", () => {
  it("sends the bearer token and returns the JSON", async () => {
    const f = fakeFetch(200, { name: "ada", admin: false });
    const me = await new Api("kiln_abc", { fetch: f }).me();
    expect(me).toEqual({ name: "ada", admin: false });
    const [url, init] = f.mock.calls[0];
    expect(url).toBe("/v1/me");
    expect((init?.headers as Record<string, string>).Authorization).toBe("Bearer kiln_abc");
  });

  it("throws the server's error, and tells about a 401", async () => {
    const onUnauthorized = vi.fn();
    const api = new Api("bad", { fetch: fakeFetch(401, { detail: "invalid token" }), onUnauthorized });
    const err = await api.me().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(401);
    expect((err as ApiError).message).toBe("invalid token");
    expect(onUnauthorized).toHaveBeenCalledOnce();
  });

  it("posts a control as JSON and reads a 422 with the field path", async () => {
    const f = fakeFetch(422, {
      detail: [{ loc: ["body", "hyper"], msg: "Adam: eta must be >= 0; got -1.0", type: "value_error" }],
    });
    const err = await new Api("t", { fetch: f })
      .addControl("j1", { kind: "adjust", path: "layers.enc", hyper: { eta: -1 } })
      .catch((e: ApiError) => e) as ApiError;
    expect(err.message).toBe("hyper: Adam: eta must be >= 0; got -1.0");
    const [url, init] = f.mock.calls[0];
    expect(url).toBe("/v1/jobs/j1/controls");
    expect(init?.method).toBe("POST");
    expect(JSON.parse(String(init?.body))).toEqual({ kind: "adjust", path: "layers.enc", hyper: { eta: -1 } });
  });

  it("says when the server cannot be reached", async () => {
    const f = vi.fn(async () => { throw new TypeError("Failed to fetch"); });
    const err = await new Api("t", { fetch: f }).workers().catch((e: ApiError) => e) as ApiError;
    expect(err.status).toBe(0);
    expect(err.message).toBe("cannot reach the server (Failed to fetch)");
  });

  it("gives the server's clock with a page of jobs, and the query", async () => {
    const f = fakeFetch(200, { data: [], next_cursor: null }, { Date: "Sun, 06 Dec 2026 22:57:04 GMT" });
    const { date } = await new Api("t", { fetch: f }).jobsPage({ status: "running", limit: 500 });
    expect(date?.toISOString()).toBe("2026-12-06T22:57:04.000Z");
    expect(f.mock.calls[0][0]).toBe("/v1/jobs?status=running&limit=500");
  });
});

class FakeXhr {
  static last: FakeXhr;
  upload: { onprogress: ((e: ProgressEvent) => void) | null } = { onprogress: null };
  onload: (() => void) | null = null;
  onerror: (() => void) | null = null;
  onabort: (() => void) | null = null;
  status = 0;
  statusText = "";
  responseText = "";
  headers: Record<string, string> = {};
  url = "";
  sent: FormData | null = null;
  constructor() { FakeXhr.last = this; }
  open(_m: string, url: string) { this.url = url; }
  setRequestHeader(k: string, v: string) { this.headers[k] = v; }
  send(body: FormData) { this.sent = body; }
  abort() { this.onabort?.(); }
  answer(status: number, body: unknown) {
    this.status = status;
    this.responseText = JSON.stringify(body);
    this.onload?.();
  }
}

describe("uploadDataset", () => {
  const xhr = () => new FakeXhr() as unknown as XMLHttpRequest;

  it("reports progress and resolves with the dataset", async () => {
    const progress: number[][] = [];
    const up = new Api("t", { xhr }).uploadDataset(new Blob(["npz"]), "digits",
      (sent, total) => progress.push([sent, total]));
    const x = FakeXhr.last;
    expect(x.url).toBe("/v1/datasets?name=digits");
    expect(x.headers.Authorization).toBe("Bearer t");
    expect(x.sent?.get("file")).toBeInstanceOf(Blob);
    x.upload.onprogress?.({ lengthComputable: true, loaded: 5, total: 10 } as ProgressEvent);
    x.answer(201, { id: "d1", name: "digits" });
    expect(await up.done).toEqual({ id: "d1", name: "digits" });
    expect(progress).toEqual([[5, 10]]);
  });

  it("rejects with the server's message", async () => {
    const up = new Api("t", { xhr }).uploadDataset(new Blob(["x"]), "", () => undefined);
    FakeXhr.last.answer(422, { detail: [{ loc: ["body", "file"], msg: "not a .npz", type: "value_error" }] });
    await expect(up.done).rejects.toThrow("file: not a .npz");
  });
});
