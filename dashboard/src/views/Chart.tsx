// A uPlot chart: a config plus columnar arrays. New data goes through setData (no new
// chart); a new set of series makes a new chart. Control markers are DOM elements over
// the plot (a line and a label each), so that people and browser tests can read them.

import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { fmtNum } from "../format";

export interface ChartMarker {
  key: string | number;
  x: number;
  label: string;
  kind?: string;
}

export interface ChartProps {
  testid: string;
  title: string;
  /** Columns, x first. */
  data: uPlot.AlignedData;
  series: uPlot.Series[];
  bands?: uPlot.Band[];
  markers?: ChartMarker[];
  xLabel: string;
  yLog?: boolean;
  height?: number;
  /** Charts with the same key share the cursor (the step charts of a job). */
  syncKey?: string;
  /** Said instead of the chart while there are no points. */
  empty?: string;
}

export const PALETTE = [
  "#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0d9488", "#db2777", "#92400e",
  "#4b5563", "#0891b2",
];

const axisFont = "12px system-ui, sans-serif";

function valueFmt(_u: uPlot, v: number | null): string {
  return v === null || v === undefined ? "–" : fmtNum(v);
}

const LANES = 4;
/** About how wide a marker's label is, in pixels (11px text). */
const labelWidth = (text: string) => 6.2 * text.length + 10;

/** Draws the markers into the plot's overlay after every redraw: a line each, and its
 * label in the first of a few lanes where it overlaps no other (none: the line's
 * tooltip says it). */
function markerPlugin(markers: { current: ChartMarker[] }): uPlot.Plugin {
  let layer: HTMLDivElement;
  return {
    hooks: {
      init: (u) => {
        layer = document.createElement("div");
        layer.className = "markers";
        u.over.appendChild(layer);
      },
      draw: (u) => {
        const width = u.over.clientWidth;
        const parts: HTMLElement[] = [];
        const laneEnds: number[] = new Array(LANES).fill(-Infinity);
        const placed = markers.current.map((m) => ({ m, left: u.valToPos(m.x, "x") }))
          .filter(({ left }) => Number.isFinite(left) && left >= -1 && left <= width + 1)
          .sort((a, b) => a.left - b.left);
        for (const { m, left } of placed) {
          const el = document.createElement("div");
          el.className = `marker marker-${m.kind ?? "control"}`;
          el.style.left = `${left}px`;
          el.dataset.testid = "chart-marker";
          el.dataset.key = String(m.key);
          el.dataset.x = String(m.x);
          el.title = m.label;
          const w = labelWidth(m.label);
          const flip = left + w > width; // no room on the right: the label goes on the left
          const from = flip ? left - w : left;
          const lane = laneEnds.findIndex((end) => end < from);
          if (lane >= 0) {
            laneEnds[lane] = from + w;
            const label = document.createElement("span");
            label.textContent = m.label;
            label.style.top = `${2 + 16 * lane}px`;
            if (flip) label.classList.add("left");
            el.appendChild(label);
          }
          parts.push(el);
        }
        layer.replaceChildren(...parts);
      },
    },
  };
}

export function Chart(props: ChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const chart = useRef<uPlot | null>(null);
  const markers = useRef<ChartMarker[]>(props.markers ?? []);
  markers.current = props.markers ?? [];
  const height = props.height ?? 220;
  const shape = JSON.stringify([
    props.series.map((s) => [s.label, s.stroke, s.width, s.dash, s.show, Boolean(s.paths)]),
    props.bands?.map((b) => b.series), props.yLog, props.xLabel, height, props.syncKey,
  ]);
  const hasData = props.data[0].length > 0;

  useEffect(() => {
    const el = box.current;
    if (!el || !hasData) return;
    const opts: uPlot.Options = {
      width: Math.max(200, el.clientWidth),
      height,
      series: [{ label: props.xLabel, value: (_u, v) => (v === null ? "–" : String(v)) },
        ...props.series.map((s) => ({ value: valueFmt, ...s }))],
      bands: props.bands,
      scales: { x: { time: false }, y: props.yLog ? { distr: 3 } : {} },
      axes: [
        { label: props.xLabel, font: axisFont, labelFont: axisFont, stroke: "#4b5563", grid: { stroke: "#eef0f3" } },
        { font: axisFont, stroke: "#4b5563", grid: { stroke: "#eef0f3" }, size: 60,
          values: (_u, splits) => splits.map((v) => (v === null || v === undefined ? "" : fmtNum(v, 3))) },
      ],
      legend: { live: true },
      cursor: props.syncKey ? { sync: { key: props.syncKey } } : {},
      plugins: [markerPlugin(markers)],
    };
    const u = new uPlot(opts, props.data, el);
    chart.current = u;
    const resize = new ResizeObserver(() => {
      const w = Math.max(200, el.clientWidth);
      if (w !== u.width) u.setSize({ width: w, height });
    });
    resize.observe(el);
    return () => {
      resize.disconnect();
      u.destroy();
      chart.current = null;
    };
    // made again only when its shape changes (the props it reads are in `shape`); new data
    // goes through setData below
  }, [shape, hasData]);

  const first = useRef(true);
  useEffect(() => {
    if (first.current) {
      first.current = false;
      return;
    }
    chart.current?.setData(props.data);
  }, [props.data]);

  const markerKey = JSON.stringify(props.markers ?? []);
  useEffect(() => {
    chart.current?.redraw(false, false);
  }, [markerKey]);

  return (
    <figure class="chart" data-testid={props.testid} aria-label={props.title}
      data-points={props.data[0].length} data-last-x={hasData ? props.data[0][props.data[0].length - 1] : undefined}>
      <figcaption>{props.title}</figcaption>
      {hasData ? <div ref={box} class="chart-box" /> :
        <div class="chart-empty" style={{ height: `${height}px` }}>{props.empty ?? "No points yet."}</div>}
    </figure>
  );
}
