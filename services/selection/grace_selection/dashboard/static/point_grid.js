// A uniform grid over the map's points, built once per round, so a click finds its nearest
// point by looking at a few cells instead of all 100k points.

export class PointGrid {
  /** xy: Float32Array (2n) of data coordinates. */
  constructor(xy) {
    const n = xy.length / 2;
    let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
    for (let i = 0; i < n; i++) {
      const x = xy[2 * i], y = xy[2 * i + 1];
      if (x < minX) minX = x;
      if (x > maxX) maxX = x;
      if (y < minY) minY = y;
      if (y > maxY) maxY = y;
    }
    if (n === 0) minX = minY = maxX = maxY = 0;
    // About four points per cell on average; at most 512 x 512 cells.
    const side = Math.max(8, Math.min(512, Math.ceil(Math.sqrt(n / 4))));
    const cellX = (maxX - minX) / side || 1;
    const cellY = (maxY - minY) / side || 1;
    const cellOf = new Int32Array(n);
    const start = new Int32Array(side * side + 1);
    for (let i = 0; i < n; i++) {
      const gx = Math.min(side - 1, Math.floor((xy[2 * i] - minX) / cellX));
      const gy = Math.min(side - 1, Math.floor((xy[2 * i + 1] - minY) / cellY));
      cellOf[i] = gy * side + gx;
      start[cellOf[i] + 1]++;
    }
    // Counting sort: items of cell c are items[start[c] .. start[c + 1]).
    for (let c = 0; c < side * side; c++) start[c + 1] += start[c];
    const next = start.slice(0, side * side);
    const items = new Int32Array(n);
    for (let i = 0; i < n; i++) items[next[cellOf[i]]++] = i;
    Object.assign(this, { xy, n, minX, minY, side, cellX, cellY, start, items });
  }

  /** Index of the nearest point to (x, y) within `radius` (data units), or -1. */
  nearest(x, y, radius) {
    if (!this.n) return -1;
    const cell = (v, min, size) => Math.floor((v - min) / size);
    const x0 = Math.max(0, cell(x - radius, this.minX, this.cellX));
    const x1 = Math.min(this.side - 1, cell(x + radius, this.minX, this.cellX));
    const y0 = Math.max(0, cell(y - radius, this.minY, this.cellY));
    const y1 = Math.min(this.side - 1, cell(y + radius, this.minY, this.cellY));
    let best = -1, bestD = radius * radius;
    for (let gy = y0; gy <= y1; gy++) {
      for (let gx = x0; gx <= x1; gx++) {
        const c = gy * this.side + gx;
        for (let k = this.start[c]; k < this.start[c + 1]; k++) {
          const i = this.items[k];
          const dx = this.xy[2 * i] - x, dy = this.xy[2 * i + 1] - y;
          const d = dx * dx + dy * dy;
          if (d <= bestD) {
            bestD = d;
            best = i;
          }
        }
      }
    }
    return best;
  }
}
