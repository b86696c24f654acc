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

// Measured against estimated importance, and the estimates no gradient norm could take (< 0).
export const MEASURED_COLOUR = "rgb(31 95 191)";
export const ESTIMATED_COLOUR = "rgb(134 46 156)";
export const NEGATIVE_COLOUR = "rgb(201 42 42)";
export const NEGATIVE_ZONE = "rgba(201, 42, 42, 0.13)";

// One colour per stratum everywhere on the page (map, charts, tables): Tableau 10, whose
// hues stay apart for the common colour-vision deficiencies. Strata past ten repeat it.
export const STRATUM_PALETTE = [
  [78, 121, 167], [242, 142, 43], [89, 161, 79], [225, 87, 89], [118, 183, 178],
  [237, 201, 72], [176, 122, 161], [255, 157, 167], [156, 117, 95], [186, 176, 172],
];

/** The CSS colour of the stratum at position `i` of the job's sorted stratum ids. */
export function stratumColour(i, alpha = 1) {
  const [r, g, b] = STRATUM_PALETTE[i % STRATUM_PALETTE.length];
  return alpha === 1 ? `rgb(${r} ${g} ${b})` : `rgba(${r}, ${g}, ${b}, ${alpha})`;
}

/** "rgb(224 92 20)" -> [224, 92, 20]. */
export function rgbOf(css) {
  return css.match(/\d+/g).slice(0, 3).map(Number);
}

// The same colours as hex, for chart fills that append an alpha ("#rrggbbaa").
export const HEX = { member: "#e05c14", other: "#8594ad", measured: "#1f5fbf", estimated: "#862e9c" };
