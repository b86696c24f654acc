// The drill-down panel: one sample's text, scores over rounds, membership and neighbours.

import { lineChart, formatNumber } from "./charts.js";
import { ESTIMATED_COLOUR, MEASURED_COLOUR, NEGATIVE_COLOUR } from "./colours.js";
import { $, fill, h, show } from "./dom.js";

function sourceOf(entry) {
  if (!entry || entry.estimated === null || entry.estimated === undefined) return "";
  return entry.estimated ? "estimated" : "measured";
}

/** The importance a round used, saying whether it was measured and marking impossible ones. */
function roundImportance(entry) {
  if (!entry || entry.importance === null) return "–";
  const source = sourceOf(entry);
  const negative = entry.estimated && entry.importance < 0;
  return h(
    "span",
    { class: negative ? "warn" : null, style: negative ? `color:${NEGATIVE_COLOUR}` : null },
    formatNumber(entry.importance),
    source ? ` (${source}${negative ? ", below 0: no gradient norm can be" : ""})` : "",
  );
}

const TEXT_PREVIEW_CHARS = 2000;

/** Render a SampleResponse; `onOpen(id)` drills into a neighbour. */
export function renderSample(sample, { strataNames, onOpen }) {
  show($("drill"), true);
  show($("drill-hint"), false);
  $("drill-title").textContent = `sample ${sample.sample_id}`;
  const latest = sample.history.length ? sample.history[sample.history.length - 1] : null;
  const stratum = sample.stratum === null
    ? "–"
    : strataNames?.[sample.stratum] ?? String(sample.stratum);
  const facts = [
    ["stratum", stratum],
    ["loss", formatNumber(sample.loss)],
    [latest ? `importance in round ${latest.round}` : "importance", roundImportance(latest)],
    ["latest measured importance", formatNumber(sample.importance)],
    ["scored in round", sample.scored_round ?? "never"],
    ["in latest coreset", latest ? (latest.in_coreset ? "yes" : "no") : "–"],
    ["weight", latest?.weight === null || latest?.weight === undefined ? "–" : formatNumber(latest.weight)],
  ];
  fill($("drill-facts"), facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v instanceof Node ? v : String(v))]));

  const text = $("drill-text");
  if (sample.text) {
    const clipped = sample.text.length > TEXT_PREVIEW_CHARS;
    text.textContent = clipped ? `${sample.text.slice(0, TEXT_PREVIEW_CHARS)}…` : sample.text;
    show(text, true);
  } else {
    text.textContent = "";
    show(text, false);
  }

  const rounds = sample.history.map((e) => e.round);
  lineChart($("chart-sample"), rounds, [
    { label: "importance", values: sample.history.map((e) => e.importance), colour: MEASURED_COLOUR },
    {
      label: "estimated",
      values: sample.history.map((e) => (e.estimated ? e.importance : null)),
      colour: ESTIMATED_COLOUR,
      pointsOnly: true,
    },
  ], { keys: $("keys-sample") });

  fill(
    $("drill-membership"),
    sample.history.map((e) =>
      h(
        "span",
        {
          class: e.in_coreset ? "chip in" : "chip out",
          title: (e.in_coreset
            ? `round ${e.round}: in the coreset${e.weight === null ? "" : `, weight ${formatNumber(e.weight)}`}`
            : `round ${e.round}: not selected`) + (sourceOf(e) ? `; importance ${sourceOf(e)}` : ""),
        },
        `r${e.round}`,
      ),
    ),
  );

  fill(
    $("neighbors-table").tBodies[0],
    sample.neighbors.map((n) =>
      h(
        "tr",
        {},
        h("td", {}, h("button", { type: "button", class: "link", onclick: () => onOpen(n.sample_id) }, String(n.sample_id))),
        h("td", { class: "num" }, formatNumber(n.similarity)),
        h("td", { class: "num" }, formatNumber(n.importance), n.estimated ? h("span", { class: "est", title: "an estimate" }, " est.") : null),
        h("td", {}, n.in_coreset ? "yes" : "no"),
      ),
    ),
  );
}

/** Show a message instead of a sample (unknown id, no access). */
export function renderSampleMessage(message) {
  show($("drill"), false);
  show($("drill-hint"), true);
  $("drill-hint").textContent = message;
}
