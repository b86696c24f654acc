// The two ways the map paints its points, behind one interface:
//   upload(xy), setValues(values, palette, order, sample), draw(view, count, useSample, sync)
// `palette` null: values in [0, 1] on the ramp, < 0 for "no value" (grey). Else a list of
// [r, g, b, a] (0..1) colours, and each value is an index into it (< 0: grey).
// GlRenderer uses WebGL (the GPU, or Chromium's software GL); CanvasRenderer paints an
// ImageData on the CPU where no WebGL context can be had.

import { RAMP_STOPS, rampColour } from "./colours.js";

const VERTEX = `
attribute vec2 a_xy;
attribute float a_value;
uniform vec2 u_scale;
uniform vec2 u_center;
uniform float u_size;
uniform float u_mode;
uniform vec3 u_stops[5];
uniform vec4 u_palette[12];
varying vec4 v_colour;

vec3 ramp(float t) {
  float x = clamp(t, 0.0, 1.0) * 4.0;
  if (x < 1.0) return mix(u_stops[0], u_stops[1], x);
  if (x < 2.0) return mix(u_stops[1], u_stops[2], x - 1.0);
  if (x < 3.0) return mix(u_stops[2], u_stops[3], x - 2.0);
  return mix(u_stops[3], u_stops[4], x - 3.0);
}

void main() {
  gl_Position = vec4((a_xy - u_center) * u_scale, 0.0, 1.0);
  gl_PointSize = u_size;
  if (a_value < 0.0) {
    v_colour = vec4(0.62, 0.62, 0.62, 0.35); // no value: never scored, no stratum
  } else if (u_mode < 0.5) {
    v_colour = vec4(ramp(a_value), 0.85);
  } else {
    // Vertex shaders may index uniform arrays with any integer expression (GLSL ES 1.0).
    v_colour = u_palette[int(clamp(floor(a_value + 0.5), 0.0, 11.0))];
  }
}`;

const FRAGMENT = `
precision mediump float;
varying vec4 v_colour;
void main() {
  vec2 p = gl_PointCoord * 2.0 - 1.0;
  if (dot(p, p) > 1.0) discard;
  gl_FragColor = vec4(v_colour.rgb * v_colour.a, v_colour.a);
}`;

/** A WebGL renderer, or null when the browser gives no WebGL context. */
export function createGlRenderer(canvas) {
  // preserveDrawingBuffer keeps the last frame readable (screenshots, pixel checks) at a
  // small cost; premultiplied alpha matches the blend function below.
  const options = { antialias: false, preserveDrawingBuffer: true, premultipliedAlpha: true };
  const gl = canvas.getContext("webgl2", options) ?? canvas.getContext("webgl", options);
  return gl ? new GlRenderer(canvas, gl) : null;
}

class GlRenderer {
  constructor(canvas, gl) {
    this.canvas = canvas;
    this.gl = gl;
    this.name = typeof WebGL2RenderingContext !== "undefined" && gl instanceof WebGL2RenderingContext
      ? "webgl2"
      : "webgl";
    // Index buffers with more than 65k entries need 32-bit indices (core in WebGL 2).
    this.uintIndices = this.name === "webgl2" || gl.getExtension("OES_element_index_uint") !== null;
    const program = gl.createProgram();
    for (const [type, source] of [[gl.VERTEX_SHADER, VERTEX], [gl.FRAGMENT_SHADER, FRAGMENT]]) {
      const shader = gl.createShader(type);
      gl.shaderSource(shader, source);
      gl.compileShader(shader);
      if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) {
        throw new Error(`map shader: ${gl.getShaderInfoLog(shader)}`);
      }
      gl.attachShader(program, shader);
    }
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) {
      throw new Error(`map program: ${gl.getProgramInfoLog(program)}`);
    }
    gl.useProgram(program);
    this.loc = {};
    for (const name of ["a_xy", "a_value"]) this.loc[name] = gl.getAttribLocation(program, name);
    for (const name of ["u_scale", "u_center", "u_size", "u_mode", "u_stops", "u_palette"]) {
      this.loc[name] = gl.getUniformLocation(program, name);
    }
    gl.uniform3fv(this.loc.u_stops, new Float32Array(RAMP_STOPS.flat()));
    this.buffers = {
      xy: gl.createBuffer(),
      value: gl.createBuffer(),
      order: gl.createBuffer(),
      sample: gl.createBuffer(),
    };
    gl.enable(gl.BLEND);
    gl.blendFunc(gl.ONE, gl.ONE_MINUS_SRC_ALPHA);
  }

  upload(xy) {
    const gl = this.gl;
    gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers.xy);
    gl.bufferData(gl.ARRAY_BUFFER, xy, gl.STATIC_DRAW);
  }

  setValues(values, palette, order, sample) {
    const gl = this.gl;
    this.palette = palette;
    if (palette) {
      const flat = new Float32Array(12 * 4);
      palette.slice(0, 12).forEach((c, i) => flat.set(c, 4 * i));
      gl.uniform4fv(this.loc.u_palette, flat);
    }
    gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers.value);
    gl.bufferData(gl.ARRAY_BUFFER, values, gl.STATIC_DRAW);
    if (this.uintIndices) {
      gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, this.buffers.order);
      gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, order, gl.STATIC_DRAW);
      gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, this.buffers.sample);
      gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, sample, gl.STATIC_DRAW);
    }
  }

  draw(view, count, useSample, sync) {
    const gl = this.gl;
    gl.viewport(0, 0, this.canvas.width, this.canvas.height);
    gl.clearColor(1, 1, 1, 1);
    gl.clear(gl.COLOR_BUFFER_BIT);
    if (count > 0) {
      gl.uniform2f(this.loc.u_scale, (2 * view.scale) / view.width, (2 * view.scale) / view.height);
      gl.uniform2f(this.loc.u_center, view.cx, view.cy);
      gl.uniform1f(this.loc.u_size, view.pointSize);
      gl.uniform1f(this.loc.u_mode, this.palette ? 1 : 0);
      gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers.xy);
      gl.enableVertexAttribArray(this.loc.a_xy);
      gl.vertexAttribPointer(this.loc.a_xy, 2, gl.FLOAT, false, 0, 0);
      gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers.value);
      gl.enableVertexAttribArray(this.loc.a_value);
      gl.vertexAttribPointer(this.loc.a_value, 1, gl.FLOAT, false, 0, 0);
      if (this.uintIndices) {
        gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, useSample ? this.buffers.sample : this.buffers.order);
        gl.drawElements(gl.POINTS, count, gl.UNSIGNED_INT, 0);
      } else {
        gl.drawArrays(gl.POINTS, 0, count);
      }
    }
    if (sync) {
      // gl.finish() returns early in Chromium's GPU process; reading one pixel back cannot,
      // so the elapsed time includes the whole draw.
      gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, new Uint8Array(4));
    }
  }
}

export class CanvasRenderer {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.name = "canvas2d";
  }

  upload(xy) {
    this.xy = xy;
  }

  setValues(values, palette, order, sample) {
    Object.assign(this, { values, palette, order, sample });
  }

  colourOf(i) {
    const v = this.values[i];
    if (v < 0) return [200, 200, 200];
    if (!this.palette) return rampColour(v);
    // Opaque paint: blend the palette colour with white by its alpha, as the GPU path does.
    const c = this.palette[Math.min(this.palette.length - 1, Math.round(v))];
    return [0, 1, 2].map((k) => Math.round(255 * (c[k] * c[3] + (1 - c[3]))));
  }

  draw(view, count, useSample) {
    const { width, height } = this.canvas;
    const image = this.ctx.createImageData(width, height);
    const px = image.data;
    px.fill(255);
    const s = view.scale * view.dpr;
    const half = Math.max(1, Math.round(view.pointSize / 2));
    const order = useSample ? this.sample : this.order;
    for (let k = 0; k < count; k++) {
      const i = order[k];
      const cx = Math.round(width / 2 + (this.xy[2 * i] - view.cx) * s);
      const cy = Math.round(height / 2 - (this.xy[2 * i + 1] - view.cy) * s);
      if (cx < -half || cy < -half || cx >= width + half || cy >= height + half) continue;
      const [r, g, b] = this.colourOf(i);
      for (let y = Math.max(0, cy - half); y < Math.min(height, cy + half); y++) {
        for (let x = Math.max(0, cx - half); x < Math.min(width, cx + half); x++) {
          const o = 4 * (y * width + x);
          px[o] = r;
          px[o + 1] = g;
          px[o + 2] = b;
        }
      }
    }
    this.ctx.putImageData(image, 0, 0);
  }
}
