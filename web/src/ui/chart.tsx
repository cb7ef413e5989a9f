/**
 * Bar charts drawn with uPlot (bundled; ~50 kB, canvas, no dependencies). Every chart is
 * paired with a data table by its caller, which is what screen readers and the tests read.
 */
import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export interface BarSeries {
  label: string;
  values: number[];
  color: string;
  /** Formats axis ticks and the legend. */
  format?: (v: number) => string;
}

export function BarChart({ labels, series, title }: { labels: string[]; series: BarSeries[]; title: string }) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = box.current;
    if (!el || labels.length === 0) return;
    const xs = labels.map((_, i) => i);
    const bars = uPlot.paths.bars?.({ size: [0.6, 64], align: 0 });
    const opts: uPlot.Options = {
      width: Math.max(280, el.clientWidth),
      height: 220,
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: false, range: [-0.5, labels.length - 0.5] } },
      axes: [
        { values: (_u, ticks) => ticks.map((t) => (Number.isInteger(t) ? labels[t] ?? "" : "")), gap: 4, size: 40 },
        ...series.map((s, i) => ({
          scale: s.label,
          side: i === 0 ? 3 : 1,
          grid: { show: i === 0 },
          values: (_u: uPlot, ticks: number[]) => ticks.map((t) => (s.format ? s.format(t) : String(t))),
          size: 70,
        })),
      ],
      series: [
        { label: "x", value: (_u, v) => (v == null ? "" : labels[v] ?? "") },
        ...series.map((s) => ({
          label: s.label,
          scale: s.label,
          stroke: s.color,
          fill: `${s.color}99`,
          paths: bars,
          points: { show: false },
          value: (_u: uPlot, v: number | null) => (v == null ? "" : s.format ? s.format(v) : String(v)),
        })),
      ],
    };
    const plot = new uPlot(opts, [xs, ...series.map((s) => s.values)] as uPlot.AlignedData, el);
    const ro = new ResizeObserver(() => plot.setSize({ width: Math.max(280, el.clientWidth), height: 220 }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      plot.destroy();
    };
  }, [labels.join("\u0000"), series.map((s) => s.values.join(",")).join("|")]);
  return <div class="chart" ref={box} role="img" aria-label={title} />;
}
