// The 2D embedding map: every point drawn by the GPU, so zoom and pan stay smooth at 100k+.
//
// Coordinates are uploaded once per round (the float32 buffer straight from the frame); a
// zoom or pan changes two uniforms and redraws, with no per-point work on the CPU. Points are
// drawn in order of their colour value, so high scores and coreset members sit on top.
// Where a full frame is slow (software GL, an old laptop), frames drawn while the user drags
// or zooms use a fixed random subset sized to the measured cost, and the full picture returns
// as soon as the hand stops: interaction stays fluid, the resting picture is always complete.

import { PointGrid } from "./point_grid.js";
import { CanvasRenderer, createGlRenderer } from "./renderers.js";

const PICK_RADIUS_PX = 8;
const MIN_ZOOM = 0.25;
const MAX_ZOOM = 5000;
const FRAME_BUDGET_MS = 12; // leaves room in a 60 Hz frame for the overlay and the browser
const SETTLE_MS = 160; // after the last wheel or drag event, draw everything again

export class PointMap {
  constructor(canvas, overlay, { onPick } = {}) {
    this.canvas = canvas;
    this.overlay = overlay;
    this.onPick = onPick ?? (() => {});
    this.renderer = createGlRenderer(canvas) ?? new CanvasRenderer(canvas);
    this.count = 0;
    this.xy = new Float32Array(0);
    this.ids = [];
    this.grid = new PointGrid(this.xy);
    this.view = { cx: 0, cy: 0, zoom: 1, base: 1 };
    this.selected = -1;
    this.neighbours = [];
    this.budget = 0;
    this.fullFrameMs = null;
    this.interactUntil = 0;
    this.pending = false;
    this.bindInput();
    new ResizeObserver(() => this.resize()).observe(canvas);
    this.resize();
  }

  get rendererName() {
    return this.renderer.name;
  }

  /** New points for a round: xy Float32Array (2n) straight from the frame, ids (n). */
  setData({ xy, ids }) {
    Object.assign(this, { xy, ids, count: xy.length / 2, idToIndex: null, selected: -1, neighbours: [] });
    this.grid = new PointGrid(xy);
    this.renderer.upload(xy);
    this.fullFrameMs = null;
    this.fitView();
  }

  /**
   * Colour values, Float32Array (n): in [0, 1] (or -1 for "no value") on the ramp when
   * `palette` is null, else indices into `palette` ([r, g, b, a] in 0..1, at most 12).
   * Higher values are drawn on top.
   */
  setValues(values, palette = null) {
    const n = this.count;
    const order = new Uint32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
    order.sort((a, b) => values[a] - values[b]);
    this.values = values;
    this.renderer.setValues(values, palette, order, shuffled(n));
    if (this.fullFrameMs === null && n > 0) this.calibrate();
    this.requestRender();
  }

  calibrate() {
    // One synchronous full frame tells what a frame costs here; the interactive subset is
    // the share of points that fits the budget (never fewer than 20k: sparse maps lie).
    // The first frame pays for shader compilation and uploads, so the second one is timed.
    const view = this.viewState();
    this.renderer.draw(view, this.count, false, true);
    const t0 = performance.now();
    this.renderer.draw(view, this.count, false, true);
    this.fullFrameMs = performance.now() - t0;
    const share = Math.min(1, FRAME_BUDGET_MS / Math.max(this.fullFrameMs, 1e-3));
    this.budget = Math.min(this.count, Math.max(20000, Math.floor(this.count * share)));
  }

  fitView() {
    const { minX, minY, maxX, maxY } = this.robustBounds();
    const spanX = (maxX - minX) * 1.08 || 1;
    const spanY = (maxY - minY) * 1.08 || 1;
    this.view = {
      cx: (minX + maxX) / 2,
      cy: (minY + maxY) / 2,
      zoom: 1,
      base: Math.min((this.canvas.clientWidth || 1) / spanX, (this.canvas.clientHeight || 1) / spanY),
    };
    this.requestRender();
  }

  robustBounds() {
    // The 0.5th and 99.5th percentiles, so a few outliers do not shrink everything to a dot.
    const n = this.count;
    if (n === 0) return { minX: -1, minY: -1, maxX: 1, maxY: 1 };
    const step = Math.max(1, Math.floor(n / 20000));
    const xs = [], ys = [];
    for (let i = 0; i < n; i += step) {
      xs.push(this.xy[2 * i]);
      ys.push(this.xy[2 * i + 1]);
    }
    xs.sort((a, b) => a - b);
    ys.sort((a, b) => a - b);
    const lo = Math.floor(xs.length * 0.005), hi = Math.ceil(xs.length * 0.995) - 1;
    return { minX: xs[lo], maxX: xs[hi], minY: ys[lo], maxY: ys[hi] };
  }

  scale() {
    return this.view.base * this.view.zoom;
  }

  pointSize() {
    // Larger when zoomed in, smaller when the map is crowded; in device pixels.
    const crowd = this.count > 50000 ? 2.2 : this.count > 5000 ? 3 : 4.5;
    return Math.min(14, crowd * Math.sqrt(this.view.zoom)) * (window.devicePixelRatio || 1);
  }

  viewState() {
    return {
      cx: this.view.cx,
      cy: this.view.cy,
      scale: this.scale(),
      width: this.canvas.clientWidth || 1,
      height: this.canvas.clientHeight || 1,
      dpr: window.devicePixelRatio || 1,
      pointSize: this.pointSize(),
    };
  }

  /** CSS pixel position of point i on the canvas. */
  screenPositionOf(i) {
    const s = this.scale();
    return {
      x: this.canvas.clientWidth / 2 + (this.xy[2 * i] - this.view.cx) * s,
      y: this.canvas.clientHeight / 2 - (this.xy[2 * i + 1] - this.view.cy) * s,
    };
  }

  indexOfId(id) {
    if (!this.idToIndex) {
      this.idToIndex = new Map();
      for (let i = 0; i < this.count; i++) this.idToIndex.set(Number(this.ids[i]), i);
    }
    return this.idToIndex.get(Number(id)) ?? -1;
  }

  idOf(i) {
    return Number(this.ids[i]);
  }

  /** The nearest point within a few pixels of a CSS-pixel position on the canvas, or -1. */
  pick(px, py) {
    const s = this.scale();
    const x = this.view.cx + (px - this.canvas.clientWidth / 2) / s;
    const y = this.view.cy - (py - this.canvas.clientHeight / 2) / s;
    return this.grid.nearest(x, y, PICK_RADIUS_PX / s);
  }

  select(index, neighbourIndices = []) {
    this.selected = index;
    this.neighbours = neighbourIndices.filter((i) => i >= 0);
    this.drawOverlay();
  }

  bindInput() {
    const canvas = this.canvas;
    let drag = null;
    canvas.addEventListener("pointerdown", (e) => {
      drag = { x: e.clientX, y: e.clientY, moved: 0 };
      canvas.setPointerCapture(e.pointerId);
    });
    canvas.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      drag.moved += Math.abs(dx) + Math.abs(dy);
      Object.assign(drag, { x: e.clientX, y: e.clientY });
      const s = this.scale();
      this.view.cx -= dx / s;
      this.view.cy += dy / s;
      this.interacted();
    });
    canvas.addEventListener("pointerup", (e) => {
      const wasClick = drag && drag.moved < 4;
      drag = null;
      if (!wasClick) return;
      const rect = canvas.getBoundingClientRect();
      const hit = this.pick(e.clientX - rect.left, e.clientY - rect.top);
      if (hit >= 0) this.onPick(hit);
    });
    canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      const rect = canvas.getBoundingClientRect();
      this.zoomAt(e.clientX - rect.left, e.clientY - rect.top, Math.exp(-e.deltaY * 0.0015));
    }, { passive: false });
    canvas.addEventListener("keydown", (e) => {
      const w = canvas.clientWidth, h = canvas.clientHeight, step = 40 / this.scale();
      const keys = {
        "+": () => this.zoomAt(w / 2, h / 2, 1.25),
        "=": () => this.zoomAt(w / 2, h / 2, 1.25),
        "-": () => this.zoomAt(w / 2, h / 2, 0.8),
        ArrowLeft: () => { this.view.cx -= step; },
        ArrowRight: () => { this.view.cx += step; },
        ArrowUp: () => { this.view.cy += step; },
        ArrowDown: () => { this.view.cy -= step; },
      };
      if (keys[e.key]) {
        e.preventDefault();
        keys[e.key]();
        this.interacted();
      }
    });
  }

  /** Zoom by `factor`, keeping the data point under (px, py) where it is. */
  zoomAt(px, py, factor) {
    const before = this.scale();
    const x = this.view.cx + (px - this.canvas.clientWidth / 2) / before;
    const y = this.view.cy - (py - this.canvas.clientHeight / 2) / before;
    this.view.zoom = Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, this.view.zoom * factor));
    const after = this.scale();
    this.view.cx = x - (px - this.canvas.clientWidth / 2) / after;
    this.view.cy = y + (py - this.canvas.clientHeight / 2) / after;
    this.interacted();
  }

  interacted() {
    this.interactUntil = performance.now() + SETTLE_MS;
    clearTimeout(this.settleTimer);
    this.settleTimer = setTimeout(() => this.requestRender(), SETTLE_MS + 10);
    this.requestRender();
  }

  resize() {
    const dpr = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(this.canvas.clientWidth * dpr));
    const height = Math.max(1, Math.round(this.canvas.clientHeight * dpr));
    for (const c of [this.canvas, this.overlay]) {
      if (c.width !== width || c.height !== height) {
        c.width = width;
        c.height = height;
      }
    }
    this.requestRender();
  }

  requestRender() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.render();
    });
  }

  /** Draw now: the interactive subset while the user is moving the map, else everything. */
  render({ interactive = performance.now() < this.interactUntil, sync = false } = {}) {
    const partial = interactive && this.budget < this.count;
    this.lastDrawn = partial ? this.budget : this.count;
    const t0 = performance.now();
    this.renderer.draw(this.viewState(), this.lastDrawn, partial, sync);
    const ms = performance.now() - t0;
    this.drawOverlay();
    return ms;
  }

  drawOverlay() {
    const ctx = this.overlay.getContext("2d");
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, this.overlay.width, this.overlay.height);
    if (this.selected < 0 || this.selected >= this.count) return;
    const origin = this.screenPositionOf(this.selected);
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = "rgba(20, 90, 200, 0.8)";
    for (const j of this.neighbours) {
      const p = this.screenPositionOf(j);
      ctx.beginPath();
      ctx.moveTo(origin.x, origin.y);
      ctx.lineTo(p.x, p.y);
      ctx.stroke();
      ctx.beginPath();
      ctx.arc(p.x, p.y, 5, 0, 2 * Math.PI);
      ctx.stroke();
    }
    ctx.lineWidth = 2.5;
    ctx.strokeStyle = "#111";
    ctx.beginPath();
    ctx.arc(origin.x, origin.y, 8, 0, 2 * Math.PI);
    ctx.stroke();
  }

  /** Median ms of `frames` zoom steps, each drawn and waited for (browser tests, debugging). */
  measureFrames(frames = 15, interactive = false) {
    const times = [];
    for (let k = 0; k < frames; k++) {
      this.view.zoom *= k % 2 ? 1 / 1.1 : 1.1; // a wheel tick in, then out
      times.push(this.render({ interactive, sync: true }));
    }
    times.sort((a, b) => a - b);
    return times[Math.floor(times.length / 2)];
  }
}

/** A fixed pseudo-random permutation of 0..n-1 (xorshift32, so every visit looks the same). */
function shuffled(n) {
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) out[i] = i;
  let state = 0x9e3779b9;
  for (let i = n - 1; i > 0; i--) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    const j = (state >>> 0) % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}
