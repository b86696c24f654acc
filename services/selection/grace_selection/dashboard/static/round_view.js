// The selected round's panels: histograms of each score for the coreset against the rest,
// measured against estimated importance with the impossible (< 0) zone marked, the strata
// table, and each stratum's score distribution over every published round.

import { bandChart, clearChart, formatNumber, groupHistogram } from "./charts.js";
import { HEX, NEGATIVE_COLOUR, stratumColour } from "./colours.js";
import { $, fill, h } from "./dom.js";

const SPLIT = [
  { key: "rest", label: "rest", colour: HEX.other },
  { key: "coreset", label: "coreset", colour: HEX.member },
];
const SOURCES = [
  { key: "estimated", label: "estimated", colour: HEX.estimated },
  { key: "measured", label: "measured", colour: HEX.measured },
];
const HISTOGRAMS = ["hist-loss", "hist-importance", "hist-combined", "hist-estimates"];

/** Empty every panel of the round (no published round, or another job). */
export function clearRound() {
  for (const id of [...HISTOGRAMS, "chart-strata"]) clearChart($(id));
  for (const id of ["keys-loss", "keys-importance", "keys-combined", "keys-estimates", "keys-strata"]) {
    fill($(id));
  }
  fill($("strata-table").tBodies[0]);
  $("estimate-facts").textContent = "";
  $("diff-title").textContent = "Against the previous round";
}

export function renderHistograms(stats) {
  const hist = stats.histograms;
  groupHistogram($("hist-loss"), hist.loss, SPLIT, { keys: $("keys-loss") });
  groupHistogram($("hist-importance"), hist.importance, SPLIT, { keys: $("keys-importance"), negative: true });
  groupHistogram($("hist-combined"), hist.combined, SPLIT, { keys: $("keys-combined") });
  if (stats.estimates) {
    groupHistogram($("hist-estimates"), hist.importance, SOURCES, { keys: $("keys-estimates"), negative: true });
  } else {
    clearChart($("hist-estimates"));
    fill($("keys-estimates"), " (this round did not record which scores were estimates)");
  }
  renderEstimateFacts(stats.estimates);
}

function renderEstimateFacts(e) {
  const facts = $("estimate-facts");
  if (!e) {
    fill(facts);
    return;
  }
  const parts = [
    `importance measured for ${e.measured.toLocaleString("en")}`,
    `estimated for ${e.estimated.toLocaleString("en")}`,
    e.unknown ? `unknown for ${e.unknown.toLocaleString("en")}` : null,
  ].filter(Boolean);
  const warning = e.negative_estimates
    ? h(
        "span",
        { class: "warn", style: `color:${NEGATIVE_COLOUR}`, id: "negative-estimates" },
        ` · ${e.negative_estimates.toLocaleString("en")} estimates below 0 (lowest ${formatNumber(e.min_estimate)}; ` +
          `lowest measured ${formatNumber(e.min_measured)}): an estimate, not a gradient norm`,
      )
    : null;
  fill(facts, parts.join(" · "), warning);
}

/** Sorted stratum ids of a round's stats: the order that gives each stratum its colour. */
export function strataOf(stats) {
  return Object.keys(stats?.strata ?? {}).map(Number).sort((a, b) => a - b);
}

export function renderStrataTable(stats) {
  const strata = strataOf(stats);
  fill(
    $("strata-table").tBodies[0],
    strata.length
      ? strata.map((key, i) => {
          const s = stats.strata[key];
          return h(
            "tr",
            {},
            h("td", {}, h("span", { class: "swatch", style: `background:${stratumColour(i)}` }), ` ${s.name || key}`),
            h("td", { class: "num" }, `${(100 * s.data_share).toFixed(1)}%`),
            h("td", { class: "num" }, `${(100 * s.coreset_share).toFixed(1)}%`),
            h(
              "td",
              { class: "bars" },
              h("span", { class: "bar data", style: `width:${(100 * s.data_share).toFixed(2)}%` }),
              h("span", { class: "bar coreset", style: `width:${(100 * s.coreset_share).toFixed(2)}%` }),
            ),
          );
        })
      : h("tr", { class: "empty" }, h("td", { colspan: 4 }, "this job has no strata")),
  );
}

/** Each stratum's median and quartiles of `score` over the rounds whose stats are known. */
export function renderStrataTrend(roundStats, score) {
  const el = $("chart-strata");
  const latest = roundStats.at(-1);
  const strata = strataOf(latest);
  if (!strata.length) {
    clearChart(el);
    fill($("keys-strata"), " (this job has no strata)");
    return;
  }
  const x = roundStats.map((s) => s.round);
  const pick = (key, q) => roundStats.map((s) => s.strata?.[key]?.[score]?.[q] ?? null);
  const groups = strata.map((key, i) => ({
    label: latest.strata[key].name || String(key),
    colour: stratumColour(i),
    band: stratumColour(i, 0.2),
    lo: pick(key, "p25"),
    mid: pick(key, "p50"),
    hi: pick(key, "p75"),
  }));
  bandChart(el, x, groups, { keys: $("keys-strata") });
}
