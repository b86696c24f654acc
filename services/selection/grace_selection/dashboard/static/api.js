// The page's only door to the service: the v1 inspection endpoints, with the bearer token.
//
// The token comes from the URL fragment (#token=..., never sent to any server, and removed
// from the address bar at once) or from the token box, and lives in sessionStorage only,
// so it is gone when the tab closes.

import { decodeFrame } from "./frames.js";

const TOKEN_KEY = "grace.token";

export class ApiError extends Error {
  constructor(status, body, url) {
    const detail = body?.detail ?? body?.error ?? `HTTP ${status}`;
    super(`${detail} (${status} from ${url})`);
    this.name = "ApiError";
    this.status = status;
    this.body = body;
  }
}

export class Api {
  constructor(prefix) {
    this.prefix = prefix;
    this.token = sessionStorage.getItem(TOKEN_KEY) ?? "";
  }

  setToken(token) {
    this.token = token;
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  }

  headers(accept) {
    const headers = { Accept: accept };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    return headers;
  }

  async request(path, accept) {
    const url = `${this.prefix}${path}`;
    const response = await fetch(url, { headers: this.headers(accept), cache: "no-store" });
    if (!response.ok) {
      let body = null;
      try {
        body = await response.json();
      } catch {
        body = null; // a body that is not JSON still gets its status reported
      }
      throw new ApiError(response.status, body, url);
    }
    return response;
  }

  async json(path) {
    return (await this.request(path, "application/json")).json();
  }

  async frame(path) {
    const response = await this.request(path, "application/octet-stream");
    return decodeFrame(await response.arrayBuffer());
  }

  jobs() {
    return this.json("/jobs");
  }

  job(jobId) {
    return this.json(`/jobs/${encodeURIComponent(jobId)}`);
  }

  rounds(jobId) {
    return this.json(`/jobs/${encodeURIComponent(jobId)}/rounds`);
  }

  roundStats(jobId, round, bins = 30) {
    return this.json(`/jobs/${encodeURIComponent(jobId)}/rounds/${round}/stats?bins=${bins}`);
  }

  sample(jobId, sampleId) {
    return this.json(`/jobs/${encodeURIComponent(jobId)}/samples/${sampleId}`);
  }

  roundDiff(jobId, round, limit = 25) {
    return this.json(`/jobs/${encodeURIComponent(jobId)}/rounds/${round}/diff?limit=${limit}`);
  }

  /** A round's per-sample table as a Blob (format csv or parquet; rows all, coreset, changed). */
  async roundTable(jobId, round, format, rows = "all") {
    const query = `format=${format}&rows=${rows}`;
    const path = `/jobs/${encodeURIComponent(jobId)}/rounds/${round}/table?${query}`;
    return (await this.request(path, format === "csv" ? "text/csv" : "application/vnd.apache.parquet")).blob();
  }

  projection(jobId, round, maxPoints) {
    const query = `round=${round}&max_points=${maxPoints}`;
    return this.frame(`/jobs/${encodeURIComponent(jobId)}/projection?${query}`);
  }
}

/** Read `#token=...&job=...` once; strip the token from the address bar, keep the rest. */
export function readFragment() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  const token = params.get("token");
  if (token !== null) {
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", rest ? `#${rest}` : location.pathname + location.search);
  }
  return { token, job: params.get("job"), round: params.get("round"), sample: params.get("sample") };
}

/** Keep the selected job, round and sample in the fragment, so a link reopens the same view. */
export function writeFragment(state) {
  const params = new URLSearchParams();
  for (const key of ["job", "round", "sample"]) {
    if (state[key] !== null && state[key] !== undefined) params.set(key, String(state[key]));
  }
  const rest = params.toString();
  history.replaceState(null, "", rest ? `#${rest}` : location.pathname + location.search);
}
