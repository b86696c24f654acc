// The round diff: who entered and left the coreset against the previous round, and why.
//
// Every reason is computed by the service from what the two rounds stored (the utility the
// selector maximised in each, whether the importance was re-scored or estimated, the noise
// guard); the sentences come from the API, so the page and the export say the same thing.

import { formatNumber } from "./charts.js";
import { HEX, stratumColour } from "./colours.js";
import { $, fill, h, show } from "./dom.js";

const CHANGE_COLOUR = { entered: HEX.member, left: HEX.other };

/** A message instead of a diff (round 0, no round, an error); the last diff's rows go. */
export function renderDiffMessage(message) {
  $("diff-summary").textContent = message;
  show($("diff-body"), false);
  fill($("diff-reasons").tBodies[0]);
  fill($("diff-table").tBodies[0]);
  fill($("diff-strata"));
}

/** Render a RoundDiffResponse; strata: sorted stratum ids; onOpen(id) opens a drill-down. */
export function renderDiff(diff, { strata = [], names = {}, onOpen }) {
  show($("diff-body"), true);
  $("diff-title").textContent = `Round ${diff.round} against round ${diff.previous}`;
  $("diff-summary").textContent = [
    `${diff.entered.toLocaleString("en")} entered`,
    `${diff.left.toLocaleString("en")} left`,
    `${diff.stayed.toLocaleString("en")} stayed`,
  ].join(" · ");
  const largest = Math.max(1, ...diff.reasons.map((r) => r.count));
  fill(
    $("diff-reasons").tBodies[0],
    diff.reasons.length
      ? diff.reasons.map((r) =>
          h(
            "tr",
            { dataset: { reason: r.reason } },
            h("td", { class: "why" }, h("span", { class: `change ${r.change}` }, r.change), ` ${r.text}`),
            h("td", { class: "num" }, r.count.toLocaleString("en")),
            h(
              "td",
              { class: "bars" },
              h("span", {
                class: `reason-bar ${r.change}`,
                style: `width:${((100 * r.count) / largest).toFixed(2)}%;background:${CHANGE_COLOUR[r.change]}`,
              }),
            ),
          ),
        )
      : h("tr", { class: "empty" }, h("td", { colspan: 3 }, "the coreset did not change")),
  );
  const position = new Map(strata.map((s, i) => [s, i]));
  const byStratum = Object.entries(diff.strata ?? {});
  fill(
    $("diff-strata"),
    byStratum.length ? "by stratum: " : null,
    byStratum.flatMap(([key, s]) => [
      h("span", { class: "swatch", style: `background:${stratumColour(position.get(Number(key)) ?? 0)}` }),
      ` ${s.name} +${s.entered} −${s.left} `,
    ]),
  );
  const reasonText = new Map(diff.reasons.map((r) => [r.reason, r.text]));
  fill(
    $("diff-table").tBodies[0],
    diff.samples.map((e) =>
      h(
        "tr",
        { dataset: { sample: e.sample_id, change: e.change } },
        h("td", {}, h("button", { type: "button", class: "link", onclick: () => onOpen(e.sample_id) }, String(e.sample_id))),
        h("td", {}, h("span", { class: `change ${e.change}` }, e.change)),
        h("td", {}, e.stratum === null ? "–" : names[e.stratum] ?? String(e.stratum)),
        h("td", { class: "num" }, formatNumber(e.utility_before)),
        h("td", { class: "num" }, formatNumber(e.utility_after)),
        h("td", { class: "num" }, formatNumber(e.importance_before)),
        h(
          "td",
          { class: "num" },
          formatNumber(e.importance_after),
          e.estimated ? h("span", { class: "est", title: "an estimate from the neighbours, not a measurement" }, " est.") : null,
        ),
        h("td", { class: "why", title: reasonText.get(e.reason) ?? "" }, e.reason.replaceAll("_", " ") + (e.planned ? " (planned re-score)" : "")),
      ),
    ),
  );
}
