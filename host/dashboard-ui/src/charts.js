// Charts of what berth keeps in memory for the last hour (`dash/series`),
// drawn with uPlot, refreshed as berth takes its samples.

import uPlot from "uplot";
import { get } from "./api.js";

const REFRESH_MS = 5000;
const COLORS = ["#2f6fdf", "#d9482b"];

// What each kind of series shows: charts of named fields.
const LAYOUTS = {
  service: [
    { title: "Requests per second", fields: [["rate", "requests/s"], ["errors", "5xx/s"]] },
    { title: "Latency (ms)", fields: [["p50", "p50"], ["p99", "p99"]] },
  ],
  pod: [
    { title: "CPU (cores)", fields: [["cpu", "cores"]] },
    { title: "Memory (MiB)", fields: [["memory", "MiB"]], scale: 1 / (1 << 20) },
  ],
};

export function chart(series) {
  const element = document.createElement("div");
  const kind = series.split("=")[0];
  const layout = LAYOUTS[kind] ?? [];
  const plots = layout.map((spec) => {
    const holder = document.createElement("figure");
    holder.className = "chart";
    holder.dataset.title = spec.title;
    element.append(holder);
    const plot = new uPlot(
      {
        title: spec.title,
        width: 460,
        height: 200,
        series: [{}, ...spec.fields.map(([, label], i) => ({ label, stroke: COLORS[i], width: 2 }))],
        // Up to now, from an hour ago at most and five minutes at least.
        scales: {
          x: {
            time: true,
            range: (_, min) => {
              const now = Date.now() / 1000;
              return [Math.max(now - 3600, Math.min(min ?? now, now - 300)), now];
            },
          },
        },
        axes: [{}, { size: 60 }],
      },
      [[], ...spec.fields.map(() => [])],
      holder,
    );
    return { plot, spec };
  });
  const refresh = async () => {
    if (!element.isConnected && element.dataset.seen) return;
    try {
      const data = await get(`dash/series?${series}`);
      element.dataset.seen = "1";
      for (const { plot, spec } of plots) {
        const scale = spec.scale ?? 1;
        plot.setData([
          data.t,
          ...spec.fields.map(([field]) => (data[field] ?? []).map((v) => (v == null ? null : v * scale))),
        ]);
        plot.root.parentElement.dataset.points = String(data.t.length);
        plot.root.parentElement.dataset.last = JSON.stringify(
          spec.fields.map(([field]) => (data[field] ?? []).at(-1) ?? null),
        );
      }
    } catch (_) {
      // Shown again at the next refresh; the overview says what is wrong.
    }
  };
  refresh();
  // Off the page it waits (the page may show it again), drawing nothing.
  setInterval(refresh, REFRESH_MS);
  return { element };
}
