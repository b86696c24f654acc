// What the map's colours mean in each mode: the per-point values handed to the renderer, the
// palette for categorical modes, and the legend that says what a colour stands for.
//
// Modes: importance and loss on the viridis ramp; stratum, coreset membership and
// measured/estimated importance as categories. A category's colour is the same everywhere
// on the page (colours.js).

import { formatNumber } from "./charts.js";
import {
  ESTIMATED_COLOUR, MEASURED_COLOUR, MEMBER_COLOUR, NEGATIVE_COLOUR, OTHER_COLOUR,
  STRATUM_PALETTE, rampGradient, rgbOf, stratumColour,
} from "./colours.js";
import { h } from "./dom.js";

const count = (n) => n.toLocaleString("en");

function rgba(css, alpha) {
  return [...rgbOf(css).map((c) => c / 255), alpha];
}

function quantile(sorted, q) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : 0;
}

function swatch(colour, text) {
  return [h("span", { class: "swatch", style: `background:${colour}` }), ` ${text}`];
}

/** The modes offered for a projection frame: stratum and estimates only where it has them. */
export function availableModes(frame) {
  const modes = [["importance", "importance"], ["loss", "loss"]];
  if (frame?.arrays.stratum) modes.push(["stratum", "stratum"]);
  modes.push(["membership", "coreset membership"]);
  if (frame?.arrays.estimated) modes.push(["estimated", "measured or estimated"]);
  return modes;
}

/**
 * {values: Float32Array(n), palette: [[r,g,b,a]] | null, legend: Node[]} for one mode.
 * strata: the job's sorted stratum ids (colour i belongs to strata[i]); names: id -> name.
 */
export function colourMap(mode, frame, { strata = [], names = {} } = {}) {
  const n = frame.arrays.ids.data.length;
  const values = new Float32Array(n);
  if (mode === "membership") {
    const member = frame.arrays.in_coreset.data;
    let inside = 0;
    for (let i = 0; i < n; i++) inside += values[i] = member[i] ? 1 : 0;
    return {
      values,
      palette: [rgba(OTHER_COLOUR, 0.35), rgba(MEMBER_COLOUR, 0.9)],
      legend: [
        ...swatch(MEMBER_COLOUR, `in the coreset (${count(inside)})`),
        ...swatch(OTHER_COLOUR, `not selected (${count(n - inside)})`),
      ],
    };
  }
  if (mode === "stratum" && frame.arrays.stratum) {
    const tags = frame.arrays.stratum.data;
    const position = new Map(strata.map((s, i) => [s, i]));
    const counts = new Array(strata.length).fill(0);
    for (let i = 0; i < n; i++) {
      const p = position.get(tags[i]) ?? -1;
      values[i] = p < 0 ? -1 : p % STRATUM_PALETTE.length;
      if (p >= 0) counts[p] += 1;
    }
    return {
      values,
      palette: STRATUM_PALETTE.map((c) => [...c.map((v) => v / 255), 0.8]),
      legend: strata.flatMap((s, i) => swatch(stratumColour(i), `${names[s] ?? s} (${count(counts[i])})`)),
    };
  }
  if (mode === "estimated" && frame.arrays.estimated) {
    const estimated = frame.arrays.estimated.data;
    const importance = frame.arrays.importance.data;
    const tally = [0, 0, 0];
    for (let i = 0; i < n; i++) {
      const v = importance[i];
      // 0 measured, 1 estimated, 2 estimated below 0 (drawn on top: those are the ones to see).
      values[i] = !Number.isFinite(v) ? -1 : !estimated[i] ? 0 : v < 0 ? 2 : 1;
      if (values[i] >= 0) tally[values[i]] += 1;
    }
    return {
      values,
      palette: [rgba(MEASURED_COLOUR, 0.55), rgba(ESTIMATED_COLOUR, 0.35), rgba(NEGATIVE_COLOUR, 0.95)],
      legend: [
        ...swatch(MEASURED_COLOUR, `measured (${count(tally[0])})`),
        ...swatch(ESTIMATED_COLOUR, `estimated (${count(tally[1])})`),
        ...swatch(NEGATIVE_COLOUR, `estimated below 0 (${count(tally[2])})`),
      ],
    };
  }
  const key = mode === "loss" && frame.arrays.loss ? "loss" : "importance";
  const scores = frame.arrays[key].data;
  // Clip to the 2nd..98th percentile so a few extreme scores do not wash out the ramp.
  const finite = Float32Array.from(scores.filter(Number.isFinite)).sort();
  const lo = quantile(finite, 0.02), hi = quantile(finite, 0.98);
  const span = hi - lo || 1;
  for (let i = 0; i < n; i++) {
    const v = scores[i];
    values[i] = Number.isFinite(v) ? Math.min(1, Math.max(0, (v - lo) / span)) : -1;
  }
  const unknown = key === "loss" ? "no loss yet" : "never scored";
  return {
    values,
    palette: null,
    legend: [
      h("span", {}, formatNumber(lo)),
      h("span", { class: "ramp", style: `background:${rampGradient()}` }),
      h("span", {}, formatNumber(hi)),
      ` ${key}` + (finite.length < n ? ` (grey: ${unknown}, ${count(n - finite.length)})` : ""),
    ],
  };
}
