// Server-sent events over fetch and a ReadableStream: EventSource cannot send the
// Authorization header. The parser follows the HTML standard's event-stream rules; the
// connection reconnects by itself with backoff, resuming with Last-Event-ID, and says
// what state it is in so that a page can show "reconnecting…" while it is down.

import { ApiError, errorFromResponse, unreachable } from "./api";

export interface SseMessage {
  /** The ``event:`` field ("message" when none). */
  event: string;
  data: string;
  /** The last event id at dispatch (the stream's, carried over from earlier events). */
  id: string;
}

const LINE_END = /\r\n|\r|\n/g;

/** Parses a text/event-stream incrementally: feed it chunks as they arrive. */
export class SseParser {
  lastEventId = "";
  /** The reconnection delay the server asked for (``retry:``), if it did. */
  retry: number | null = null;
  private buffer = "";
  private skipLF = false;
  private data: string[] = [];
  private event = "";

  feed(chunk: string): SseMessage[] {
    const out: SseMessage[] = [];
    let text = chunk;
    if (this.skipLF && text.startsWith("\n")) text = text.slice(1);
    this.skipLF = false;
    const buf = this.buffer + text;
    let start = 0;
    LINE_END.lastIndex = 0;
    for (let m = LINE_END.exec(buf); m; m = LINE_END.exec(buf)) {
      this.line(buf.slice(start, m.index), out);
      start = m.index + m[0].length;
      // a "\r" that ends the chunk may be the first half of a "\r\n" split across chunks
      if (m[0] === "\r" && start === buf.length) this.skipLF = true;
    }
    this.buffer = buf.slice(start);
    return out;
  }

  private line(line: string, out: SseMessage[]): void {
    if (line === "") {
      if (this.data.length) {
        out.push({ event: this.event || "message", data: this.data.join("\n"), id: this.lastEventId });
      }
      this.data = [];
      this.event = "";
      return;
    }
    if (line.startsWith(":")) return; // a comment: the server's keep-alive
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
  }
}

export type StreamState = "connecting" | "open" | "reconnecting" | "closed";

/** A stream that ends after being open this long was ended on purpose (a server ends a
 * long stream now and then, or is restarted): it is opened again at once, quietly. */
const HEALTHY_MS = 1000;

export interface StreamOptions {
  /** The stream's URL (its query, e.g. ``?since=``, is sent on every connection). */
  url: string;
  headers: Record<string, string>;
  /** The events of one network chunk, together (a replay arrives as a burst). */
  onEvents: (events: SseMessage[]) => void;
  /** Every change of state; ``error`` says why a stream was given up ("closed"). */
  onState?: (state: StreamState, error?: ApiError) => void;
  /** Resume after this event id on the first connection too. */
  lastEventId?: string;
  fetch?: typeof fetch;
  /** The first reconnection delay, until the server sends ``retry:``. */
  retryMs?: number;
  /** The longest delay between reconnections (it doubles from ``retryMs`` per failure). */
  maxRetryMs?: number;
  /** Reconnect when nothing (not even a keep-alive) arrived for this long. */
  idleTimeoutMs?: number;
  random?: () => number;
}

export interface EventStream {
  readonly state: StreamState;
  readonly lastEventId: string;
  close(): void;
}

/** Statuses that no retry can mend: the stream is given up and the error shown. */
function fatal(status: number): boolean {
  return status >= 400 && status < 500 && status !== 408 && status !== 429;
}

/** The delay before reconnection attempt ``failures`` (0 for the first), with jitter. */
export function backoff(failures: number, retryMs: number, maxRetryMs: number,
  random: () => number = Math.random): number {
  const base = Math.min(maxRetryMs, retryMs * 2 ** Math.min(failures, 20));
  return Math.round(base * (0.75 + 0.5 * random()));
}

export function openStream(opts: StreamOptions): EventStream {
  const fetchFn = opts.fetch ?? ((...args) => fetch(...args));
  const maxRetryMs = opts.maxRetryMs ?? 30_000;
  const idleTimeoutMs = opts.idleTimeoutMs ?? 60_000;
  const random = opts.random ?? Math.random;
  const parser = new SseParser();
  parser.lastEventId = opts.lastEventId ?? "";
  let state: StreamState = "connecting";
  let closed = false;
  let connection: AbortController | null = null;
  let wake: (() => void) | null = null;
  let failures = 0; // since the last connection that opened

  const setState = (s: StreamState, error?: ApiError) => {
    if (s === state && !error) return;
    state = s;
    opts.onState?.(s, error);
  };

  const sleep = (ms: number) => new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    wake = () => { clearTimeout(timer); resolve(); };
  });

  /** One connection: resolves when it ends, with whether the server ended it after it had
   * been open a while; throws the ApiError of a refusal. */
  async function connect(): Promise<boolean> {
    const controller = new AbortController();
    connection = controller;
    const headers: Record<string, string> = { ...opts.headers, Accept: "text/event-stream" };
    if (parser.lastEventId) headers["Last-Event-ID"] = parser.lastEventId;
    let res: Response;
    try {
      res = await fetchFn(opts.url, { headers, signal: controller.signal, cache: "no-store" });
    } catch (e) {
      if (closed) return false;
      throw unreachable(e);
    }
    if (!res.ok || !res.body) throw await errorFromResponse(res);
    setState("open");
    failures = 0;
    const opened = Date.now();
    let ended = false;
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let idle: ReturnType<typeof setTimeout> | undefined;
    const arm = () => {
      clearTimeout(idle);
      idle = setTimeout(() => controller.abort(), idleTimeoutMs);
    };
    arm();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) ended = true;
        if (done || closed) break;
        arm();
        const events = parser.feed(decoder.decode(value, { stream: true }));
        if (events.length) opts.onEvents(events);
      }
    } catch {
      // the connection dropped (or went quiet and was aborted): reconnect
    } finally {
      clearTimeout(idle);
      reader.cancel().catch(() => undefined);
    }
    return ended && Date.now() - opened >= HEALTHY_MS;
  }

  (async () => {
    while (!closed) {
      try {
        if (await connect()) continue;
      } catch (e) {
        const err = e instanceof ApiError ? e : unreachable(e);
        if (fatal(err.status)) {
          closed = true;
          setState("closed", err);
          return;
        }
      }
      if (closed) break;
      setState("reconnecting");
      await sleep(backoff(failures++, parser.retry ?? opts.retryMs ?? 1000, maxRetryMs, random));
    }
  })();

  return {
    get state() { return state; },
    get lastEventId() { return parser.lastEventId; },
    close() {
      if (closed) return;
      closed = true;
      connection?.abort();
      wake?.();
      setState("closed");
    },
  };
}
