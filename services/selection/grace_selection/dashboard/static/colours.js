// One colour ramp for the map, its legend and the CPU fallback: five viridis stops, which stay
// ordered in lightness and readable for the common colour-vision deficiencies.

export const RAMP_STOPS = [
  [0.267, 0.005, 0.329],
  [0.229, 0.322, 0.545],
  [0.128, 0.567, 0.551],
  [0.369, 0.789, 0.383],
  [0.993, 0.906, 0.144],
];

/** The ramp at t in [0, 1], as [r, g, b] bytes. */
export function rampColour(t) {
  const x = Math.min(1, Math.max(0, t)) * (RAMP_STOPS.length - 1);
  const i = Math.min(RAMP_STOPS.length - 2, Math.floor(x));
  const f = x - i;
  return RAMP_STOPS[i].map((c, k) => Math.round(255 * (c + (RAMP_STOPS[i + 1][k] - c) * f)));
}

/** The ramp as a CSS gradient, for legends. */
export function rampGradient() {
  const stops = RAMP_STOPS.map((c, i) => {
    const [r, g, b] = c.map((v) => Math.round(255 * v));
    return `rgb(${r} ${g} ${b}) ${(100 * i) / (RAMP_STOPS.length - 1)}%`;
  });
  return `linear-gradient(to right, ${stops.join(", ")})`;
}

export const MEMBER_COLOUR = "rgb(224 92 20)";
export const OTHER_COLOUR = "rgb(133 148 173)";
