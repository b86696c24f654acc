// Small uPlot charts (vendored, see VENDORED.md): line charts over rounds and histograms.
//
// A chart is created once per element and then only fed new data, so polling every few
// seconds does not rebuild the DOM; it is rebuilt only when its series change.

const HEIGHT = 150;
const charts = new Map(); // element id -> { plot, key }
const PALETTE = ["#1f5fbf", "#d9480f", "#2b8a3e", "#862e9c"];

function widthOf(el) {
  return Math.max(160, Math.floor(el.clientWidth || el.parentElement?.clientWidth || 320));
}

function upsert(el, key, makeOptions, data) {
  const known = charts.get(el.id);
  if (known && known.key === key) {
    known.plot.setData(data);
    return known.plot;
  }
  if (known) known.plot.destroy();
  const plot = new uPlot(makeOptions(widthOf(el)), data, el);
  charts.set(el.id, { plot, key });
  return plot;
}

const resizer = new ResizeObserver((entries) => {
  for (const entry of entries) {
    const known = charts.get(entry.target.id);
    if (known) known.plot.setSize({ width: widthOf(entry.target), height: HEIGHT });
  }
});

function formatNumber(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
  return Number.isInteger(v) ? String(v) : v.toPrecision(3);
}

/**
 * Lines over an integer x axis (rounds).
 * series: [{label, values: (number|null)[]}], options: {yMin, yMax, keys: caption element}
 */
export function lineChart(el, x, series, options = {}) {
  const key = `line:${series.map((s) => s.label).join("|")}`;
  const make = (width) => ({
    width,
    height: HEIGHT,
    legend: { show: false },
    cursor: { drag: { x: false, y: false } },
    scales: {
      x: { time: false },
      y: options.yMin !== undefined
        ? { range: (u, lo, hi) => [options.yMin, Math.max(options.yMax ?? hi, hi)] }
        : {},
    },
    axes: [
      { values: (u, ticks) => ticks.map((t) => (Number.isInteger(t) ? String(t) : "")) },
      { values: (u, ticks) => ticks.map(formatNumber), size: 56 },
    ],
    series: [
      { label: "round" },
      ...series.map((s, i) => ({
        label: s.label,
        stroke: PALETTE[i % PALETTE.length],
        width: 2,
        spanGaps: true,
        points: { show: true, size: 6 },
        value: (u, v) => formatNumber(v),
      })),
    ],
  });
  const plot = upsert(el, key, make, [x, ...series.map((s) => s.values)]);
  resizer.observe(el);
  if (options.keys && series.length > 1) {
    // A one-line key in the caption instead of uPlot's legend table, which is taller than
    // the chart at this size.
    options.keys.replaceChildren(
      ...series.map((s, i) => {
        const key = document.createElement("span");
        key.className = "key";
        key.style.color = PALETTE[i % PALETTE.length];
        key.textContent = s.label;
        return key;
      }),
    );
  }
  return plot;
}

/** A histogram from {edges: number[bins + 1], counts: number[bins]}. */
export function histogramChart(el, histogram, colour = PALETTE[0]) {
  const edges = histogram?.edges ?? [];
  const counts = histogram?.counts ?? [];
  const mids = counts.map((_, i) => (edges[i] + edges[i + 1]) / 2);
  const make = (width) => ({
    width,
    height: HEIGHT,
    legend: { show: false },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: false }, y: { range: (u, lo, hi) => [0, Math.max(1, hi)] } },
    axes: [
      { values: (u, ticks) => ticks.map(formatNumber) },
      { values: (u, ticks) => ticks.map(formatNumber), size: 56 },
    ],
    series: [
      { label: "bin" },
      {
        label: "count",
        stroke: colour,
        fill: `${colour}99`,
        width: 1,
        paths: uPlot.paths.bars({ size: [1, Infinity], gap: 1, align: 0 }),
        points: { show: false },
      },
    ],
  });
  const plot = upsert(el, "hist", make, [mids, counts]);
  resizer.observe(el);
  return plot;
}

export function clearChart(el) {
  const known = charts.get(el.id);
  if (known) {
    known.plot.destroy();
    charts.delete(el.id);
  }
}

export { formatNumber };
