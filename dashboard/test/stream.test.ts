import { describe, expect, it, vi } from "vitest";
import { backoff, openStream, SseParser, type SseMessage, type StreamState } from "../src/stream";

describe("SseParser", () => {
  it("parses events, ids, multi-line data, comments and retry", () => {
    const p = new SseParser();
    const out = p.feed("retry: 2000\n\n: ping\n\nid: a1\nevent: steps\ndata: {\"x\":\ndata: 1}\n\n" +
      "data: plain\n\n");
    expect(out).toEqual([
      { event: "steps", data: "{\"x\":\n1}", id: "a1" },
      { event: "message", data: "plain", id: "a1" },
    ]);
    expect(p.retry).toBe(2000);
    expect(p.lastEventId).toBe("a1");
  });

  it("joins an event split anywhere across chunks, CRLF included", () => {
    const text = "id: 7\r\nevent: epoch\r\ndata: {\"epoch\": 3}\r\n\r\n";
    for (let cut = 1; cut < text.length; cut++) {
      const p = new SseParser();
      const out = [...p.feed(text.slice(0, cut)), ...p.feed(text.slice(cut))];
      expect(out, `cut at ${cut}`).toEqual([{ event: "epoch", data: "{\"epoch\": 3}", id: "7" }]);
    }
  });

  it("dispatches nothing for an event without data, but keeps its id", () => {
    const p = new SseParser();
    expect(p.feed("id: 9\nevent: steps\n\n")).toEqual([]);
    expect(p.lastEventId).toBe("9");
    expect(p.feed("data: x\n\n")).toEqual([{ event: "message", data: "x", id: "9" }]);
  });

  it("waits for the blank line before dispatching", () => {
    const p = new SseParser();
    expect(p.feed("event: status\ndata: {}\n")).toEqual([]);
    expect(p.feed("\n")).toHaveLength(1);
  });
});

describe("backoff", () => {
  it("doubles from the retry delay up to the maximum", () => {
    const mid = () => 0.5; // no jitter
    expect([0, 1, 2, 3, 10].map((n) => backoff(n, 1000, 5000, mid))).toEqual([1000, 2000, 4000, 5000, 5000]);
    expect(backoff(0, 1000, 5000, () => 0)).toBe(750);
  });
});

/** A fetch whose every call answers with the next of ``scripts``: a status, and chunks
 * sent one after the other, then the end (or a network error when ``error``). */
type Script = {
  status?: number; chunks?: string[]; error?: boolean; hang?: boolean; body?: string;
  /** End the body this many ms after the last chunk. */
  end?: number;
};

function scriptedFetch(scripts: Script[]) {
  const calls: { url: string; headers: Record<string, string> }[] = [];
  const f = vi.fn(async (url: string | URL | Request, init?: RequestInit) => {
    calls.push({ url: String(url), headers: { ...(init?.headers as Record<string, string>) } });
    const s = scripts.shift() ?? { hang: true };
    if (s.status && s.status !== 200) return new Response(s.body ?? "{}", { status: s.status });
    const enc = new TextEncoder();
    const body = new ReadableStream<Uint8Array>({
      async start(ctrl) {
        for (const c of s.chunks ?? []) {
          await new Promise((r) => setTimeout(r, 1));
          ctrl.enqueue(enc.encode(c));
        }
        if (s.end) await new Promise((r) => setTimeout(r, s.end));
        if (s.error) ctrl.error(new TypeError("network error"));
        else if (s.hang) init?.signal?.addEventListener("abort", () => ctrl.error(new Error("aborted")));
        else ctrl.close();
      },
    });
    return new Response(body, { status: 200 });
  });
  return { f, calls };
}

function until(cond: () => boolean, ms = 2000): Promise<void> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const tick = () => cond() ? resolve() : Date.now() - t0 > ms ? reject(new Error("timed out")) : setTimeout(tick, 2);
    tick();
  });
}

describe("openStream", () => {
  it("reconnects after a drop with Last-Event-ID and gets every event once", async () => {
    const { f, calls } = scriptedFetch([
      { chunks: ["retry: 5\n\nid: c1\nevent: steps\ndata: 1\n\n", "id: c2\nevent: steps\ndata: 2\n\n"], error: true },
      { status: 503 },
      { chunks: ["id: c3\nevent: epoch\ndata: 3\n\n"], hang: true },
    ]);
    const got: SseMessage[] = [];
    const states: StreamState[] = [];
    const s = openStream({
      url: "/v1/jobs/j/events", headers: { Authorization: "Bearer t" }, fetch: f,
      onEvents: (evs) => got.push(...evs), onState: (st) => states.push(st), random: () => 0.5,
    });
    await until(() => got.length === 3);
    expect(got.map((e) => [e.event, e.data, e.id])).toEqual([["steps", "1", "c1"], ["steps", "2", "c2"], ["epoch", "3", "c3"]]);
    expect(calls[0].headers["Last-Event-ID"]).toBeUndefined();
    expect(calls[0].headers.Authorization).toBe("Bearer t");
    expect(calls[1].headers["Last-Event-ID"]).toBe("c2");
    expect(calls[2].headers["Last-Event-ID"]).toBe("c2");
    expect(states).toEqual(["open", "reconnecting", "open"]);
    expect(s.state).toBe("open");
    s.close();
    expect(s.state).toBe("closed");
    expect(states.at(-1)).toBe("closed");
  });

  it("gives up on a refusal no retry mends, with the server's message", async () => {
    const { f, calls } = scriptedFetch([{ status: 404, body: JSON.stringify({ detail: "no job 'x'" }) }]);
    const onState = vi.fn();
    openStream({ url: "/v1/jobs/x/events", headers: {}, fetch: f, onEvents: () => undefined, onState });
    await until(() => onState.mock.calls.length > 0);
    expect(onState).toHaveBeenCalledWith("closed", expect.objectContaining({ status: 404, message: "no job 'x'" }));
    await new Promise((r) => setTimeout(r, 20));
    expect(calls).toHaveLength(1);
  });

  it("starts from a given event id and reconnects a stream gone quiet", async () => {
    const { f, calls } = scriptedFetch([{ chunks: [": ping\n\n"], hang: true }, { hang: true }]);
    const s = openStream({
      url: "/v1/jobs/events?since=2026-01-01T00:00:00Z", headers: {}, fetch: f, lastEventId: "k9",
      onEvents: () => undefined, idleTimeoutMs: 30, retryMs: 1,
    });
    await until(() => calls.length === 2);
    expect(calls.map((c) => c.url)).toEqual(Array(2).fill("/v1/jobs/events?since=2026-01-01T00:00:00Z"));
    expect(calls.map((c) => c.headers["Last-Event-ID"])).toEqual(["k9", "k9"]);
    s.close();
  });

  it("stops for good when closed while waiting to reconnect", async () => {
    const { f, calls } = scriptedFetch([{ error: true }, { hang: true }]);
    const s = openStream({ url: "/e", headers: {}, fetch: f, onEvents: () => undefined, retryMs: 50 });
    await until(() => s.state === "reconnecting");
    s.close();
    await new Promise((r) => setTimeout(r, 120));
    expect(calls).toHaveLength(1);
    expect(s.state).toBe("closed");
  });
});

describe("openStream, a stream the server ends", () => {
  it("opens again at once, without saying it is reconnecting, after a while open", async () => {
    const { f, calls } = scriptedFetch([
      { chunks: ["id: s0\n\n", "id: s1\nevent: job\ndata: {}\n\n"], end: 1100 },
      { hang: true },
    ]);
    const states: StreamState[] = [];
    const s = openStream({ url: "/v1/jobs/events", headers: {}, fetch: f, onEvents: () => undefined,
      onState: (st) => states.push(st), retryMs: 60_000 });
    await until(() => calls.length === 2, 3000);
    expect(calls[1].headers["Last-Event-ID"]).toBe("s1");
    expect(states).toEqual(["open"]);
    s.close();
  });
});
