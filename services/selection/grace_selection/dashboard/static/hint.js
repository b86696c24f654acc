// The first steps of a job that cannot show anything yet: what is done, what comes next, and
// the command or request that does it, with this job's id and this service's address filled in.

import { $, fill, h, show } from "./dom.js";

function steps(job, rounds, origin) {
  const id = job.job_id;
  const n = job.n_samples.toLocaleString("en");
  const computing = rounds.find((r) => r.status === "computing");
  const failed = rounds.find((r) => r.status === "failed");
  return [
    { done: true, title: `Job created (${n} samples, dim ${job.dim})` },
    {
      done: job.embedded_count > 0 && job.scored_count > 0,
      title: `Score the warm-up: embeddings ${job.embedded_count.toLocaleString("en")} / ${n}, scores ${job.scored_count.toLocaleString("en")} / ${n}`,
      how: [
        `grace score --url ${origin} --job ${id} --model CKPT --data DATA_DIR --round 0`,
        `or POST frames to ${origin}/v1/jobs/${id}/embeddings and .../scores (GET .../rounds/0/rescore lists every sample)`,
      ],
    },
    {
      done: false,
      title: computing
        ? `Round ${computing.round} is being computed…`
        : failed
          ? `Round ${failed.round} failed: ${failed.error ?? "see the service log"}`
          : "Publish round 0",
      how: computing
        ? []
        : [`curl -X POST ${origin}/v1/jobs/${id}/rounds`, "(or create the job with auto_round_fraction to publish by itself)"],
    },
  ];
}

/** Show the steps when the job has no published round; returns whether they are shown. */
export function renderJobHint(job, rounds, origin = location.origin) {
  const hint = $("job-hint");
  const hasRound = rounds.some((r) => r.status === "published");
  show(hint, Boolean(job) && !hasRound);
  if (!job || hasRound) return false;
  const list = steps(job, rounds, origin);
  const next = list.findIndex((s) => !s.done);
  fill(
    $("hint-steps"),
    list.map((s, i) =>
      h(
        "li",
        { class: s.done ? "done" : i === next ? "next" : "todo" },
        h("span", { class: "title" }, s.title),
        i === next ? (s.how ?? []).map((line) => h("code", {}, line)) : null,
      ),
    ),
  );
  return true;
}
