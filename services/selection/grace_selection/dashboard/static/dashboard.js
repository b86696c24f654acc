// The dashboard page: polls the inspection endpoints and keeps every panel current.
//
// Published rounds never change, so each round's stats and map are fetched once and cached;
// a poll costs two small JSON requests (jobs, rounds) until a new round appears.

import { Api, ApiError, readFragment, writeFragment } from "./api.js";
import { lineChart, formatNumber } from "./charts.js";
import { renderDiff, renderDiffMessage } from "./diff.js";
import { $, fill, h, show } from "./dom.js";
import { renderSample, renderSampleMessage } from "./drill.js";
import { downloadTable } from "./export.js";
import { renderJobHint } from "./hint.js";
import { PointMap } from "./map.js";
import { availableModes, colourMap } from "./map_colours.js";
import {
  clearRound, renderHistograms, renderStrataTable, renderStrataTrend, strataOf,
} from "./round_view.js";

const DIFF_ROWS = 10; // samples listed per direction in the round diff; the CSV has all
const config = JSON.parse($("grace-config").textContent);
const api = new Api(config.apiPrefix);
const state = {
  jobs: [],
  failedJobs: [],
  jobId: null,
  job: null,
  rounds: [],
  stats: new Map(), // `${job}/${round}` -> RoundStatsResponse
  diffs: new Map(), // `${job}/${round}` -> RoundDiffResponse (published rounds never change)
  roundShown: null, // what the round panels show: `${job}/${round}/${published rounds}`
  round: null, // the round shown; null follows the latest
  pinnedRound: false,
  mapKey: null, // `${job}/${round}` of the projection on the map
  mapLoading: null, // the key of the projection being fetched
  projection: null,
  sampleId: null,
  sampleRound: null,
  lastPoll: null,
  polls: 0,
};

const map = new PointMap($("map"), $("map-overlay"), { onPick: (i) => openSample(map.idOf(i)) });
// For people debugging in the console and for the browser tests: the live state and the map.
window.graceDashboard = { state, map, api };

function showError(message) {
  const banner = $("error");
  banner.textContent = message ?? "";
  show(banner, Boolean(message));
}

function needToken(message) {
  show($("token-form"), true);
  showError(message);
}

// Stored jobs that failed to load at start-up: listed (with why) so that they are not
// invisible; the API refuses everything on them but DELETE.
function failedJobRows() {
  return state.failedJobs.map((job) =>
    h(
      "tr",
      { class: "load-failed", dataset: { job: job.job_id }, title: job.error },
      h("td", {}, job.job_id),
      h("td", {}, h("span", { class: "status failed" }, "failed to load")),
      h("td", { colspan: 3, class: "error-text" }, `${job.error} (DELETE /v1/jobs/${job.job_id} removes it)`),
    ),
  );
}

function renderJobs() {
  const body = $("jobs-table").tBodies[0];
  if (!state.jobs.length && state.failedJobs.length) {
    fill(body, failedJobRows());
    return;
  }
  if (!state.jobs.length) {
    fill(
      body,
      h(
        "tr",
        { class: "empty" },
        h(
          "td",
          { colspan: 5 },
          "No jobs yet. First step: create one, e.g. ",
          h("code", {}, `curl -X POST ${location.origin}${config.apiPrefix}/jobs -H 'Content-Type: application/json' -d '{"job_id": "my-job", "n_samples": 10000, "dim": 64}'`),
          " or CoresetClient(url).create_job(...) (docs/client.md).",
        ),
      ),
    );
    return;
  }
  fill(
    body,
    state.jobs.map((job) =>
      h(
        "tr",
        { class: job.job_id === state.jobId ? "selected" : null, dataset: { job: job.job_id } },
        h("td", {}, h("button", { type: "button", class: "link", onclick: () => selectJob(job.job_id) }, job.job_id)),
        h("td", {}, h("span", { class: `status ${job.status}` }, job.status.replaceAll("_", " "))),
        h("td", { class: "num" }, job.n_samples.toLocaleString("en")),
        h("td", { class: "num" }, job.current_round ?? "–"),
        h("td", { class: "num" }, job.last_round_seconds === null ? "–" : `${formatNumber(job.last_round_seconds)} s`),
      ),
    ).concat(failedJobRows()),
  );
}

function renderJobSummary() {
  const job = state.job;
  show($("job"), Boolean(job));
  if (!job) return;
  $("job-title").textContent = job.job_id;
  const c = job.config;
  $("job-summary").textContent = [
    `${job.n_samples.toLocaleString("en")} samples, dim ${job.dim}`,
    `embedded ${job.embedded_count.toLocaleString("en")}, scored ${job.scored_count.toLocaleString("en")}`,
    `${c.selector.replaceAll("_", " ")}, budget ${formatNumber(c.budget_fraction)}, k ${c.k}, re-score ${formatNumber(c.rescore_fraction)}`,
    job.checkpoint ? `checkpoint step ${job.checkpoint.step}` : "no checkpoint yet",
  ].join(" · ");
}

function published() {
  return state.rounds.filter((r) => r.status === "published").sort((a, b) => a.round - b.round);
}

function renderTimeline() {
  const rounds = published();
  const x = rounds.map((r) => r.round);
  const stat = (r, key) => state.stats.get(`${state.jobId}/${r.round}`)?.[key] ?? null;
  lineChart($("chart-size"), x, [{ label: "coreset size", values: rounds.map((r) => r.count) }], { yMin: 0 });
  lineChart($("chart-shares"), x, [
    { label: "churn", values: rounds.map((r) => r.churn) },
    { label: "re-scored", values: rounds.map((r) => r.rescored_fraction) },
    { label: "estimated", values: rounds.map((r) => 1 - r.rescored_fraction) },
  ], { yMin: 0, yMax: 1, keys: $("keys-shares") });
  lineChart($("chart-importance"), x, [{ label: "mean importance", values: rounds.map((r) => stat(r, "mean_importance")) }]);
  lineChart($("chart-time"), x, [
    { label: "select", values: rounds.map((r) => r.timings.select_seconds) },
    { label: "total", values: rounds.map((r) => r.timings.total_seconds) },
  ], { yMin: 0, keys: $("keys-time") });
}

function renderRoundPicker() {
  const select = $("round-select");
  const rounds = published();
  const wanted = rounds.map((r) => String(r.round)).reverse();
  const have = [...select.options].map((o) => o.value);
  if (wanted.join() !== have.join()) {
    fill(select, wanted.map((r) => h("option", { value: r }, r)));
  }
  if (state.round !== null) select.value = String(state.round);
}

function statsOfPublished() {
  return published().map((r) => state.stats.get(`${state.jobId}/${r.round}`)).filter(Boolean);
}

function renderStrataPanels() {
  renderStrataTrend(statsOfPublished(), $("strata-score").value);
}

function renderRound() {
  const stats = state.stats.get(`${state.jobId}/${state.round}`);
  show($("export-csv").parentElement, Boolean(stats));
  if (!stats) {
    // No published round yet (or another job's panels still showing): empty, not stale.
    state.roundShown = null;
    $("round-facts").textContent = "no published round yet";
    clearRound();
    renderDiffMessage("");
    if (!state.projection) $("map-count").textContent = "the map appears with the first round";
    return;
  }
  const manifest = state.rounds.find((r) => r.round === state.round);
  $("round-facts").textContent = [
    `${stats.count.toLocaleString("en")} selected`,
    `churn ${stats.churn === null ? "–" : formatNumber(stats.churn)}`,
    `re-scored ${formatNumber(stats.rescored_fraction)}`,
    `mean importance ${formatNumber(stats.mean_importance)}`,
    manifest ? `${formatNumber(manifest.timings.total_seconds)} s` : null,
  ].filter(Boolean).join(" · ");
  // Polls call this every few seconds; redraw only when the round or the rounds changed, so
  // the tables under a reader's pointer are not rebuilt while nothing changed.
  const shown = `${state.jobId}/${state.round}/${published().length}`;
  if (state.roundShown === shown) return;
  state.roundShown = shown;
  renderHistograms(stats);
  renderStrataTable(stats);
  renderStrataPanels();
  loadDiff();
}

async function loadDiff() {
  const round = state.round;
  const key = `${state.jobId}/${round}`;
  if (round === 0) {
    $("diff-title").textContent = "Against the previous round";
    renderDiffMessage("round 0 is the first round: there is no previous round to compare it with");
    return;
  }
  let diff = state.diffs.get(key);
  if (!diff) {
    try {
      diff = await api.roundDiff(state.jobId, round, DIFF_ROWS);
    } catch (err) {
      renderDiffMessage(`could not load the diff: ${err.message}`);
      return;
    }
    state.diffs.set(key, diff);
  }
  if (key !== `${state.jobId}/${state.round}`) return; // the user moved on meanwhile
  const stats = state.stats.get(key);
  renderDiff(diff, {
    strata: strataOf(stats),
    names: state.job?.stratum_names ?? {},
    onOpen: (id) => openSample(id),
  });
}

function applyColour() {
  const frame = state.projection;
  if (!frame) return;
  const select = $("map-colour");
  const modes = availableModes(frame);
  if (modes.map(([v]) => v).join() !== [...select.options].map((o) => o.value).join()) {
    const wanted = select.value;
    fill(select, modes.map(([value, label]) => h("option", { value }, label)));
    select.value = modes.some(([v]) => v === wanted) ? wanted : "importance";
  }
  const stats = state.stats.get(state.mapKey);
  const { values, palette, legend } = colourMap(select.value, frame, {
    strata: strataOf(stats),
    names: Object.fromEntries(Object.entries(stats?.strata ?? {}).map(([k, s]) => [k, s.name])),
  });
  fill($("map-legend"), legend);
  map.setValues(values, palette);
}

async function loadProjection() {
  const key = `${state.jobId}/${state.round}`;
  if (state.round === null || key === state.mapKey || key === state.mapLoading) return;
  // A big map can take a while to compute; polls go on meanwhile (they do not await this).
  state.mapLoading = key;
  $("map-count").textContent = `loading the map of round ${state.round}…`;
  let frame;
  try {
    frame = await api.projection(state.jobId, state.round, config.mapMaxPoints);
  } catch (err) {
    $("map-count").textContent = "";
    showError(`Could not load the map: ${err.message}`);
    return;
  } finally {
    if (state.mapLoading === key) state.mapLoading = null;
  }
  if (key !== `${state.jobId}/${state.round}`) return; // the user moved on meanwhile
  state.projection = frame;
  state.mapKey = key;
  map.setData({ xy: frame.arrays.xy.data, ids: frame.arrays.ids.data });
  applyColour();
  const total = state.job?.n_samples ?? map.count;
  $("map-count").textContent = `${map.count.toLocaleString("en")} points` +
    (map.count < total ? ` (a uniform sample of ${total.toLocaleString("en")})` : "") +
    ` · ${map.rendererName}`;
  if (state.sampleId !== null) await openSample(state.sampleId, { quiet: true });
}

async function openSample(sampleId, { quiet = false } = {}) {
  if (!state.jobId || !Number.isInteger(Number(sampleId)) || Number(sampleId) < 0) return;
  state.sampleId = Number(sampleId);
  $("sample-input").value = String(state.sampleId);
  writeFragment({ job: state.jobId, round: state.pinnedRound ? state.round : null, sample: state.sampleId });
  try {
    const sample = await api.sample(state.jobId, state.sampleId);
    state.sampleRound = state.round;
    renderSample(sample, { strataNames: state.job?.stratum_names, onOpen: (id) => openSample(id) });
    map.select(map.indexOfId(sample.sample_id), sample.neighbors.map((n) => map.indexOfId(n.sample_id)));
  } catch (err) {
    if (quiet) return;
    renderSampleMessage(err instanceof ApiError && err.status === 404
      ? `no sample ${state.sampleId} in ${state.jobId}: ids run from 0 to ${(state.job?.n_samples ?? 1) - 1}`
      : String(err.message));
    map.select(-1);
  }
}

async function selectJob(jobId) {
  if (jobId === state.jobId) return;
  Object.assign(state, { jobId, job: null, rounds: [], round: null, pinnedRound: false, mapKey: null, projection: null, sampleId: null });
  map.setData({ xy: new Float32Array(0), ids: [] });
  fill($("map-legend"));
  renderSampleMessage("Click a point on the map or type a sample id.");
  renderRound();
  writeFragment({ job: jobId });
  renderJobs();
  await poll();
}

async function refreshJob() {
  state.job = state.jobs.find((j) => j.job_id === state.jobId) ?? null;
  renderJobSummary();
  if (!state.job) return;
  state.rounds = await api.rounds(state.jobId);
  // A job with nothing to show gets its next steps instead of empty panels.
  show($("job-panels"), !renderJobHint(state.job, state.rounds, location.origin));
  const rounds = published();
  // Published rounds are immutable: fetch each one's stats once.
  for (const r of rounds) {
    const key = `${state.jobId}/${r.round}`;
    if (!state.stats.has(key)) state.stats.set(key, await api.roundStats(state.jobId, r.round));
  }
  if (!state.pinnedRound) state.round = rounds.length ? rounds[rounds.length - 1].round : null;
  renderTimeline();
  renderRoundPicker();
  renderRound();
  loadProjection(); // not awaited: it reports its own errors, and polling must not wait for it
  if (state.sampleId !== null && state.sampleRound !== state.round) {
    await openSample(state.sampleId, { quiet: true });
  }
}

let timer = null;
let polling = false;

async function poll() {
  if (polling) return;
  polling = true;
  clearTimeout(timer);
  try {
    const listing = await api.jobs();
    state.jobs = listing.jobs;
    state.failedJobs = listing.failed ?? [];
    if (!state.jobId && state.jobs.length) state.jobId = state.jobs[0].job_id;
    renderJobs();
    await refreshJob();
    state.lastPoll = new Date();
    state.polls += 1;
    showError(null);
    $("live").textContent = `updated ${state.lastPoll.toLocaleTimeString("en-GB")}`;
  } catch (err) {
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
      needToken(`The service wants a bearer token (${err.status}): paste it above, or open the page as /dashboard#token=…`);
    } else {
      showError(`Could not reach the service: ${err.message}`);
    }
    $("live").textContent = "disconnected";
  } finally {
    polling = false;
    if ($("live-toggle").checked) timer = setTimeout(poll, config.pollMs);
  }
}

function bindControls() {
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    api.setToken($("token-input").value.trim());
    $("token-input").value = "";
    show($("token-form"), false);
    poll();
  });
  $("live-toggle").addEventListener("change", (e) => {
    if (e.target.checked) poll();
    else {
      clearTimeout(timer);
      $("live").textContent = "paused";
    }
  });
  $("round-select").addEventListener("change", async (e) => {
    const latest = published().at(-1)?.round;
    state.round = Number(e.target.value);
    state.pinnedRound = state.round !== latest;
    renderRound();
    await loadProjection();
    if (state.sampleId !== null) await openSample(state.sampleId, { quiet: true });
  });
  $("map-colour").addEventListener("change", applyColour);
  $("strata-score").addEventListener("change", renderStrataPanels);
  const exportTable = async (format, rows) => {
    try {
      await downloadTable(api, state.jobId, state.round, format, rows);
    } catch (err) {
      showError(`Could not export round ${state.round}: ${err.message}`);
    }
  };
  $("export-csv").addEventListener("click", () => exportTable("csv"));
  $("export-parquet").addEventListener("click", () => exportTable("parquet"));
  $("export-changes").addEventListener("click", () => exportTable("csv", "changed"));
  $("map-reset").addEventListener("click", () => map.fitView());
  $("sample-form").addEventListener("submit", (e) => {
    e.preventDefault();
    openSample($("sample-input").value);
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && $("live-toggle").checked) poll();
  });
}

function start() {
  const fragment = readFragment();
  if (fragment.token) api.setToken(fragment.token);
  if (config.readsRequireToken && !api.token) needToken("This service needs a bearer token to read.");
  if (fragment.job) state.jobId = fragment.job;
  if (fragment.round !== null && fragment.round !== "") {
    state.round = Number(fragment.round);
    state.pinnedRound = true;
  }
  if (fragment.sample !== null && fragment.sample !== "") state.sampleId = Number(fragment.sample);
  bindControls();
  // A pasted link (#token=..., #job=..., #sample=...) on the open page does not reload it.
  window.addEventListener("hashchange", async () => {
    const next = readFragment();
    if (next.token) {
      api.setToken(next.token);
      show($("token-form"), false);
    }
    if (next.job && next.job !== state.jobId) await selectJob(next.job);
    else await poll();
    if (next.sample !== null && next.sample !== "") await openSample(next.sample);
  });
  poll();
}

start();
