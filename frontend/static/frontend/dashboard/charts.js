// Small inline SVG charts for the dashboard: lines with points, or stacked bars, over days or
// over named categories (model versions); axes with ticks, an axis title on each, a legend.
// No library: two scales and <path>, <rect>, <circle> elements. A chart draws itself at its
// figure's width and again when that width changes, so its text keeps its size.
//
// Each series is a <g class="series" data-series="key">; each value a circle.point or
// rect.bar carrying data-x and data-y, with a <title> that the browser shows on hover.

const SVG = "http://www.w3.org/2000/svg";
const DAY_MS = 86_400_000;
const HEIGHT = 236;
const MARGIN = { top: 14, right: 18, bottom: 44, left: 58 };
const MIN_TICK_GAP_PX = 64; // between x tick labels
const Y_TICKS = 4;
const DAY_STEPS = [1, 2, 3, 7, 14, 28, 56, 91, 182, 364];

const charts = new WeakMap(); // figure -> {spec, width}
const resized = new ResizeObserver((entries) => {
  for (const entry of entries) {
    const drawn = charts.get(entry.target);
    if (drawn && Math.round(entry.contentRect.width) !== drawn.width) {
      draw(entry.target, drawn.spec);
    }
  }
});

/**
 * Draw (or redraw) a chart into `figure`.
 *
 * spec:
 *   kind: "line" | "bars" (bars of one x value are stacked, in the order of the series)
 *   title: the caption (and the SVG's accessible name)
 *   x: {type: "day", values: ["2026-11-20", ...], label} (an ISO date per value: a time axis)
 *      or {type: "band", values: ["v0", "v1", ...], label} (evenly spaced names)
 *   y: {label, unit (in the hover text), format(value) -> text, integer (whole-number ticks),
 *      max (a fixed top, e.g. 1 for an IoU; else from the data)}
 *   series: [{key, name, color, dash ("4 3", optional), points: [{x, y}]}]; y null: no value
 *   empty: the sentence shown when no series has a value
 *   note: a line under the chart (optional)
 */
export function chart(figure, spec) {
  if (!charts.has(figure)) resized.observe(figure);
  draw(figure, spec);
}

function draw(figure, spec) {
  const width = Math.max(300, Math.round(figure.clientWidth));
  charts.set(figure, { spec, width });
  figure.classList.add("chart");
  const series = spec.series
    .map((s) => ({ ...s, points: s.points.filter((p) => isNumber(p.y)) }))
    .filter((s) => s.points.length > 0);
  const head = document.createElement("figcaption");
  head.className = "chart-head";
  head.append(text("span", spec.title, "chart-title"));
  const parts = [head];
  if (!series.length) {
    figure.dataset.empty = "true";
    parts.push(text("p", spec.empty || "Nothing to show yet.", "chart-empty"));
    figure.replaceChildren(...parts);
    return;
  }
  delete figure.dataset.empty;
  head.append(legend(series, spec.kind));
  parts.push(svgOf(spec, series, width));
  if (spec.note) parts.push(text("p", spec.note, "chart-note"));
  figure.replaceChildren(...parts);
}

function svgOf(spec, series, width) {
  const plot = {
    left: MARGIN.left,
    top: MARGIN.top,
    right: width - MARGIN.right,
    bottom: HEIGHT - MARGIN.bottom,
  };
  const x = xScale(spec.x, plot);
  const y = yScale(spec, series, plot);
  const svg = element("svg", {
    width,
    height: HEIGHT,
    viewBox: `0 0 ${width} ${HEIGHT}`,
    role: "img",
    "aria-label": spec.title,
    class: `chart-svg chart-${spec.kind}`,
  });
  svg.append(yAxis(spec.y, y, plot), xAxis(spec.x, x, plot));
  const body = spec.kind === "bars" ? bars(series, x, y, spec) : lines(series, x, y, spec);
  svg.append(...body);
  return svg;
}

// ---------------------------------------------------------------- scales

/** x: value -> pixel, with its ticks [{at, label}] and the width of one step (a day, a band). */
function xScale(axis, plot) {
  const span = plot.right - plot.left;
  if (axis.type === "day") {
    const times = axis.values.map(dayTime);
    const first = Math.min(...times);
    const last = Math.max(...times);
    // Half a day of room on both sides: a bar or a lone point stays inside the plot.
    const from = first - DAY_MS / 2;
    const to = last + DAY_MS / 2;
    const at = (value) => plot.left + ((dayTime(value) - from) / (to - from)) * span;
    const days = Math.round((last - first) / DAY_MS) + 1;
    const fit = Math.max(1, Math.floor(span / MIN_TICK_GAP_PX));
    const step = DAY_STEPS.find((s) => Math.ceil(days / s) <= fit) || Math.ceil(days / fit);
    const ticks = [];
    for (let t = first; t <= last; t += step * DAY_MS) {
      ticks.push({ at: plot.left + ((t - from) / (to - from)) * span, label: dayLabel(t) });
    }
    return { at, ticks, step: span / (days || 1) };
  }
  const band = span / Math.max(1, axis.values.length);
  const index = new Map(axis.values.map((v, i) => [v, i]));
  const at = (value) => plot.left + band * (index.get(value) + 0.5);
  const every = Math.max(1, Math.ceil(MIN_TICK_GAP_PX / 1.6 / band));
  const ticks = axis.values
    .filter((_, i) => i % every === 0)
    .map((v) => ({ at: at(v), label: String(v) }));
  return { at, ticks, step: band };
}

/** y: value -> pixel, from 0 to a round top (or the spec's fixed one), with its ticks. */
function yScale(spec, series, plot) {
  let top = spec.y.max;
  if (!isNumber(top)) {
    let highest = 0;
    if (spec.kind === "bars") {
      const sums = new Map();
      for (const s of series) {
        for (const p of s.points) sums.set(p.x, (sums.get(p.x) || 0) + p.y);
      }
      highest = Math.max(0, ...sums.values());
    } else {
      highest = Math.max(0, ...series.flatMap((s) => s.points.map((p) => p.y)));
    }
    top = highest > 0 ? highest : 1;
  }
  // Counts (masks) step by whole numbers.
  const step = spec.y.integer
    ? Math.max(1, Math.ceil(niceStep(top / Y_TICKS)))
    : niceStep(top / Y_TICKS);
  const end = Math.max(step, Math.ceil(top / step - 1e-9) * step);
  const at = (value) => plot.bottom - (value / end) * (plot.bottom - plot.top);
  const ticks = [];
  for (let k = 0; k * step <= end + step / 1e6; k += 1) ticks.push(round(k * step));
  return { at, ticks, end };
}

/** 1, 2, 2.5 or 5 times a power of ten, at least `raw`. */
function niceStep(raw) {
  const power = 10 ** Math.floor(Math.log10(raw));
  const unit = raw / power;
  const factor = unit <= 1 ? 1 : unit <= 2 ? 2 : unit <= 2.5 ? 2.5 : unit <= 5 ? 5 : 10;
  return factor * power;
}

// ---------------------------------------------------------------- axes

function yAxis(axis, y, plot) {
  const group = element("g", { class: "axis axis-y" });
  const format = axis.format || trimNumber;
  for (const value of y.ticks) {
    const at = y.at(value);
    group.append(
      element("line", {
        class: value === 0 ? "baseline" : "grid",
        x1: plot.left,
        x2: plot.right,
        y1: at,
        y2: at,
      }),
      text("text", value === 0 ? "0" : format(value), "", {
        x: plot.left - 8,
        y: at,
        dy: "0.32em",
        "text-anchor": "end",
      }),
    );
  }
  const middle = (plot.top + plot.bottom) / 2;
  group.append(
    text("text", axis.label, "axis-title", {
      transform: `translate(14 ${middle}) rotate(-90)`,
      "text-anchor": "middle",
    }),
  );
  return group;
}

function xAxis(axis, x, plot) {
  const group = element("g", { class: "axis axis-x" });
  for (const tick of x.ticks) {
    group.append(
      element("line", {
        class: "tick",
        x1: tick.at,
        x2: tick.at,
        y1: plot.bottom,
        y2: plot.bottom + 5,
      }),
      text("text", tick.label, "", { x: tick.at, y: plot.bottom + 18, "text-anchor": "middle" }),
    );
  }
  if (axis.label) {
    group.append(
      text("text", axis.label, "axis-title", {
        x: (plot.left + plot.right) / 2,
        y: plot.bottom + 36,
        "text-anchor": "middle",
      }),
    );
  }
  return group;
}

// ---------------------------------------------------------------- marks

function lines(series, x, y, spec) {
  const format = spec.y.format || trimNumber;
  return series.map((s) => {
    const group = element("g", { class: "series", "data-series": s.key });
    const points = [...s.points].sort((a, b) => x.at(a.x) - x.at(b.x));
    if (points.length > 1) {
      const path = points
        .map((p, i) => `${i ? "L" : "M"}${round(x.at(p.x))},${round(y.at(p.y))}`)
        .join(" ");
      const line = element("path", { class: "line", d: path, stroke: s.color });
      if (s.dash) line.setAttribute("stroke-dasharray", s.dash);
      group.append(line);
    }
    for (const p of points) {
      const dot = element("circle", {
        class: "point",
        cx: round(x.at(p.x)),
        cy: round(y.at(p.y)),
        r: 4,
        fill: s.color,
        "data-x": p.x,
        "data-y": p.y,
      });
      dot.append(
        text(
          "title",
          `${s.name} · ${xName(spec.x, p.x)}: ${format(p.y)} ${spec.y.unit || ""}`.trim(),
        ),
      );
      group.append(dot);
    }
    return group;
  });
}

function bars(series, x, y, spec) {
  const format = spec.y.format || trimNumber;
  const width = Math.max(4, Math.min(34, x.step * 0.62));
  const stacked = new Map(); // x value -> height stacked so far
  return series.map((s) => {
    const group = element("g", { class: "series", "data-series": s.key });
    for (const p of s.points) {
      const below = stacked.get(p.x) || 0;
      stacked.set(p.x, below + p.y);
      const top = y.at(below + p.y);
      const bar = element("rect", {
        class: "bar",
        x: round(x.at(p.x) - width / 2),
        y: round(top),
        width: round(width),
        height: Math.max(0, round(y.at(below) - top)),
        fill: s.color,
        "data-x": p.x,
        "data-y": p.y,
      });
      bar.append(
        text(
          "title",
          `${s.name} · ${xName(spec.x, p.x)}: ${format(p.y)} ${spec.y.unit || ""}`.trim(),
        ),
      );
      group.append(bar);
    }
    return group;
  });
}

function legend(series, kind) {
  const list = document.createElement("ul");
  list.className = "legend";
  for (const s of series) {
    const item = document.createElement("li");
    item.dataset.series = s.key;
    const key = element("svg", {
      class: "legend-key",
      width: 22,
      height: 12,
      "aria-hidden": "true",
    });
    if (kind === "bars") {
      key.append(element("rect", { x: 5, y: 1, width: 12, height: 10, rx: 2, fill: s.color }));
    } else {
      const line = element("line", {
        x1: 1,
        x2: 21,
        y1: 6,
        y2: 6,
        stroke: s.color,
        "stroke-width": 2,
      });
      if (s.dash) line.setAttribute("stroke-dasharray", s.dash);
      key.append(line, element("circle", { cx: 11, cy: 6, r: 3.5, fill: s.color }));
    }
    item.append(key, s.name);
    list.append(item);
  }
  return list;
}

// ---------------------------------------------------------------- helpers

function element(tag, attributes = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}

/** An element with text: SVG for text/title, HTML otherwise. */
function text(tag, content, className = "", attributes = {}) {
  const svg = tag === "text" || tag === "title";
  const node = svg ? element(tag, attributes) : document.createElement(tag);
  if (className) node.setAttribute("class", className);
  node.textContent = content;
  return node;
}

function isNumber(value) {
  return typeof value === "number" && Number.isFinite(value);
}

function dayTime(iso) {
  return Date.parse(`${iso}T00:00:00Z`);
}

function dayLabel(time) {
  return new Date(time).toLocaleDateString("en-US", {
    month: "short",
    day: "numeric",
    timeZone: "UTC",
  });
}

function xName(axis, value) {
  return axis.type === "day" ? dayLabel(dayTime(value)) : String(value);
}

function round(value) {
  return Math.round(value * 100) / 100;
}

/** 0.25 -> "0.25", 2 -> "2", 0.30000000000000004 -> "0.3". */
export function trimNumber(value) {
  return String(Number(value.toPrecision(6)));
}
