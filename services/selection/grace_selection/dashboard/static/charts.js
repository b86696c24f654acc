// Small uPlot charts (vendored, see VENDORED.md): line charts over rounds and histograms.
//
// A chart is created once per element and then only fed new data, so polling every few
// seconds does not rebuild the DOM; it is rebuilt only when its series change.

import { NEGATIVE_COLOUR, NEGATIVE_ZONE } from "./colours.js";

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
      ...series.map((s, i) => {
        const colour = s.colour ?? PALETTE[i % PALETTE.length];
        // pointsOnly: marks without a line (values that must not look connected).
        return {
          label: s.label,
          stroke: colour,
          width: s.pointsOnly ? 0 : 2,
          spanGaps: !s.pointsOnly,
          paths: s.pointsOnly ? () => null : undefined,
          points: s.pointsOnly ? { show: true, size: 9, fill: colour, stroke: colour } : { show: true, size: 6 },
          value: (u, v) => formatNumber(v),
        };
      }),
    ],
  });
  const plot = upsert(el, key, make, [x, ...series.map((s) => s.values)]);
  resizer.observe(el);
  if (series.length > 1) {
    setKeys(options.keys, series.map((s, i) => ({ text: s.label, colour: s.colour ?? PALETTE[i % PALETTE.length] })));
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

function setKeys(keysEl, entries) {
  // A one-line key in the caption instead of uPlot's legend table, which is taller than
  // the chart at this size. entries: [{text, colour}]
  if (!keysEl) return;
  keysEl.replaceChildren(
    ...entries.map(({ text, colour }) => {
      const key = document.createElement("span");
      key.className = "key";
      key.style.color = colour;
      key.textContent = text;
      return key;
    }),
  );
}

/**
 * A histogram of two groups over the same bins, each as its share of its own group, so their
 * shapes compare even when one group is ten times the other (the coreset against the rest).
 * histogram: {edges, counts, groups: {name: counts}}; groups: [{key, label, colour}], the
 * first drawn wide and pale, the second narrow and solid on top. options.negative: shade the
 * part of the axis below 0 and draw the zero line (importance: no gradient norm is < 0).
 */
export function groupHistogram(el, histogram, groups, options = {}) {
  const edges = histogram?.edges ?? [];
  const mids = edges.slice(0, -1).map((e, i) => (e + edges[i + 1]) / 2);
  const present = groups.filter((g) => histogram?.groups?.[g.key]);
  const shares = present.map((g) => {
    const counts = histogram.groups[g.key];
    const total = counts.reduce((a, b) => a + b, 0);
    return { ...g, total, values: counts.map((c) => (total ? c / total : 0)) };
  });
  const negative = options.negative && edges.length > 1 && edges[0] < 0;
  const zone = (u) => {
    const left = u.bbox.left, right = left + u.bbox.width;
    const zero = Math.min(right, u.valToPos(0, "x", true));
    return zero > left ? { left, zero } : null;
  };
  const make = (width) => ({
    width,
    height: HEIGHT,
    legend: { show: false },
    cursor: { drag: { x: false, y: false } },
    scales: {
      x: { time: false, range: () => [edges[0] ?? 0, edges.at(-1) ?? 1] },
      y: { range: (u, lo, hi) => [0, Math.max(0.01, hi * 1.05)] },
    },
    axes: [
      { values: (u, ticks) => ticks.map(formatNumber) },
      { values: (u, ticks) => ticks.map((t) => `${Math.round(100 * t)}%`), size: 48 },
    ],
    series: [
      { label: "bin" },
      ...shares.map((g, i) => ({
        label: g.label,
        stroke: g.colour,
        fill: i === 0 ? `${g.colour}66` : `${g.colour}dd`,
        width: 1,
        paths: uPlot.paths.bars({ size: [i === 0 ? 0.95 : 0.45, Infinity], gap: 0, align: 0 }),
        points: { show: false },
      })),
    ],
    hooks: negative
      ? {
          drawClear: [(u) => {
            const z = zone(u);
            if (!z) return;
            u.ctx.save();
            u.ctx.fillStyle = NEGATIVE_ZONE;
            u.ctx.fillRect(z.left, u.bbox.top, z.zero - z.left, u.bbox.height);
            u.ctx.restore();
          }],
          draw: [(u) => {
            const z = zone(u);
            if (!z) return;
            u.ctx.save();
            u.ctx.strokeStyle = NEGATIVE_COLOUR;
            u.ctx.lineWidth = 2 * (window.devicePixelRatio || 1);
            u.ctx.beginPath();
            u.ctx.moveTo(z.zero, u.bbox.top);
            u.ctx.lineTo(z.zero, u.bbox.top + u.bbox.height);
            u.ctx.stroke();
            u.ctx.restore();
          }],
        }
      : {},
  });
  const key = `groups:${shares.map((g) => g.key).join("|")}:${negative}`;
  const plot = upsert(el, key, make, [mids, ...shares.map((g) => g.values)]);
  resizer.observe(el);
  setKeys(options.keys, shares.map((g) => ({ text: `${g.label} ${g.total.toLocaleString("en")}`, colour: g.colour })));
  return plot;
}

/**
 * Per-group medians over rounds with a band from the 25th to the 75th percentile.
 * groups: [{label, colour (rgb), lo: [], mid: [], hi: []}] over the rounds `x`.
 */
export function bandChart(el, x, groups, options = {}) {
  const series = [{ label: "round" }];
  const bands = [];
  for (const g of groups) {
    const base = series.length;
    series.push(
      { label: `${g.label} p25`, stroke: "transparent", points: { show: false }, spanGaps: true },
      { label: `${g.label} median`, stroke: g.colour, width: 2, spanGaps: true, points: { show: true, size: 6 } },
      { label: `${g.label} p75`, stroke: "transparent", points: { show: false }, spanGaps: true },
    );
    bands.push({ series: [base + 2, base], fill: g.band });
  }
  const make = (width) => ({
    width,
    height: HEIGHT,
    legend: { show: false },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: false } },
    axes: [
      { values: (u, ticks) => ticks.map((t) => (Number.isInteger(t) ? String(t) : "")) },
      { values: (u, ticks) => ticks.map(formatNumber), size: 56 },
    ],
    series,
    bands,
  });
  const key = `band:${groups.map((g) => g.label).join("|")}`;
  const data = [x, ...groups.flatMap((g) => [g.lo, g.mid, g.hi])];
  const plot = upsert(el, key, make, data);
  resizer.observe(el);
  setKeys(options.keys, groups.map((g) => ({ text: g.label, colour: g.colour })));
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
