// Downloads of a round's per-sample table. The request carries the bearer token like every
// other, so it cannot be a plain link: the page fetches the file and saves it from a blob URL.

export async function downloadTable(api, jobId, round, format, rows = "all") {
  const blob = await api.roundTable(jobId, round, format, rows);
  const name = `${jobId}-round-${round}${rows === "all" ? "" : `-${rows}`}.${format}`;
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  // The click has handed the blob to the download; release it a minute later (revoking at once can cancel it).
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return { name, size: blob.size };
}
