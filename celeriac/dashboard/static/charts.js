// Hand-drawn SVG charts: lines/areas over time and bars, with axes and a hover readout.

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#2f6f4f", "#b5443b", "#c28a1e", "#3c6aa8", "#7a4fa0", "#4a8c8c", "#8a6d3b"];

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) el.setAttribute(key, value);
  }
  for (const child of children) if (child) el.append(child);
  return el;
}

/** Round whole steps (1, 2, 5 × 10^n) covering [0, max] in about `count` ticks. */
function niceTicks(max, count = 4) {
  if (!(max > 0)) return [0, 1];
  const raw = max / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  // Charts count things: no tick between two whole numbers.
  const step = Math.max(1, [1, 2, 5, 10].map((m) => m * power).find((v) => v >= raw));
  const ticks = [];
  for (let v = 0; v <= max + step * 0.999; v += step) ticks.push(+v.toPrecision(12));
  return ticks;
}

// The vertical axis both charts share: grid lines and labels at round values up to
// `max`, and `y` mapping a value to its height.
function valueAxis(max, width, pad, plotH) {
  const ticks = niceTicks(max);
  const top = ticks[ticks.length - 1] || 1;
  const y = (v) => pad.top + plotH - (v / top) * plotH;
  const axes = s("g", {class: "axes"});
  for (const tick of ticks) {
    axes.append(s("line", {x1: pad.left, x2: width - pad.right, y1: y(tick), y2: y(tick), class: "grid"}));
    axes.append(s("text", {x: pad.left - 6, y: y(tick) + 4, "text-anchor": "end"},
      document.createTextNode(shortNumber(tick))));
  }
  return {y, axes};
}

function clock(epoch, seconds = false) {
  const d = new Date(epoch * 1000);
  const two = (n) => String(n).padStart(2, "0");
  return `${two(d.getHours())}:${two(d.getMinutes())}${seconds ? `:${two(d.getSeconds())}` : ""}`;
}

function shortNumber(v) {
  if (Math.abs(v) >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
  if (Math.abs(v) >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
  return String(+v.toFixed(2));
}

function frame(width, height, label) {
  return s("svg", {viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img",
                   "aria-label": label, width, height});
}

function empty(svg, width, height, text) {
  svg.append(s("text", {x: width / 2, y: height / 2, "text-anchor": "middle", class: "chart-empty"},
    document.createTextNode(text)));
  return svg;
}

/**
 * Lines (or stacked-free areas) over time.
 * series: [{name, points: [[epochSeconds, value], ...], color?}]
 */
export function timeChart(series, options = {}) {
  return responsive((width) => drawTime(series, {...options, width}), series);
}

function drawTime(series, {width, height = 220, label = "chart", area = false, unit = "",
                           emptyText = "No data in this range yet."}) {
  const pad = {left: 44, right: 12, top: 12, bottom: 26};
  const svg = frame(width, height, label);
  const all = series.flatMap((line) => line.points);
  if (!all.length) return empty(svg, width, height, emptyText);
  let t0 = Math.min(...all.map((p) => p[0]));
  let t1 = Math.max(...all.map((p) => p[0]));
  if (t1 === t0) { t0 -= 30; t1 += 30; }
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const x = (t) => pad.left + ((t - t0) / (t1 - t0)) * plotW;
  const {y, axes} = valueAxis(Math.max(...all.map((p) => p[1])), width, pad, plotH);
  const timeTicks = 5;
  for (let i = 0; i <= timeTicks; i++) {
    const t = t0 + ((t1 - t0) * i) / timeTicks;
    axes.append(s("text", {x: x(t), y: height - 8, "text-anchor": i === 0 ? "start" : i === timeTicks ? "end" : "middle"},
      document.createTextNode(clock(t, t1 - t0 < 600))));
  }
  svg.append(axes);

  series.forEach((line, index) => {
    const color = line.color || COLORS[index % COLORS.length];
    const pts = [...line.points].sort((a, b) => a[0] - b[0]);
    if (!pts.length) return;
    const d = pts.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("");
    if (area) {
      const fill = `${d}L${x(pts[pts.length - 1][0]).toFixed(1)},${y(0)}L${x(pts[0][0]).toFixed(1)},${y(0)}Z`;
      svg.append(s("path", {d: fill, fill: color, "fill-opacity": 0.12, stroke: "none"}));
    }
    svg.append(s("path", {d, fill: "none", stroke: color, "stroke-width": 2,
                          "vector-effect": "non-scaling-stroke", class: "series",
                          "data-series": line.name}));
  });

  hover(svg, {pad, width, height, x, y, t0, t1, series, unit});
  return svg;
}

// A guide line and a readout of every series' value at the time under the pointer.
function hover(svg, {pad, width, height, x, t0, t1, series, unit}) {
  const guide = s("line", {y1: pad.top, y2: height - pad.bottom, class: "guide", visibility: "hidden"});
  const readout = s("text", {class: "readout", visibility: "hidden", y: pad.top + 10});
  svg.append(guide, readout);
  const catcher = s("rect", {x: pad.left, y: pad.top, width: width - pad.left - pad.right,
                             height: height - pad.top - pad.bottom, fill: "transparent"});
  svg.append(catcher);
  catcher.addEventListener("mousemove", (event) => {
    const box = svg.getBoundingClientRect();
    const px = ((event.clientX - box.left) / box.width) * width;
    const t = t0 + ((px - pad.left) / (width - pad.left - pad.right)) * (t1 - t0);
    const parts = [clock(t, true)];
    for (const line of series) {
      if (!line.points.length) continue;
      const near = line.points.reduce((a, b) => (Math.abs(b[0] - t) < Math.abs(a[0] - t) ? b : a));
      parts.push(`${line.name} ${shortNumber(near[1])}${unit}`);
    }
    guide.setAttribute("x1", px); guide.setAttribute("x2", px);
    readout.textContent = parts.join("  ·  ");
    const right = px > width / 2;
    readout.setAttribute("x", right ? px - 6 : px + 6);
    readout.setAttribute("text-anchor", right ? "end" : "start");
    guide.setAttribute("visibility", "visible"); readout.setAttribute("visibility", "visible");
  });
  catcher.addEventListener("mouseleave", () => {
    guide.setAttribute("visibility", "hidden"); readout.setAttribute("visibility", "hidden");
  });
}

// Drawn at the figure's real width (so text is never stretched), again when it changes.
function responsive(draw, series) {
  const figure = document.createElement("figure");
  figure.className = "chart-box";
  let drawn = 0;
  let svg = draw(640);
  figure.append(svg);
  new ResizeObserver(() => {
    const width = Math.round(figure.clientWidth);
    if (width > 0 && width !== drawn) {
      drawn = width;
      const next = draw(width);
      svg.replaceWith(next);
      svg = next;
    }
  }).observe(figure);
  if (series.length > 1) {
    const legend = document.createElement("figcaption");
    legend.className = "legend";
    series.forEach((line, index) => {
      const item = document.createElement("span");
      item.style.setProperty("--swatch", line.color || COLORS[index % COLORS.length]);
      item.textContent = line.name;
      legend.append(item);
    });
    figure.append(legend);
  }
  return figure;
}

/** Bars: labels[i] under values[i]; a hover title on each bar tells its value. */
export function barChart(labels, values, options = {}) {
  return responsive((width) => drawBars(labels, values, {...options, width}), []);
}

function drawBars(labels, values, {width, height = 220, label = "bar chart", color = COLORS[3],
                                   emptyText = "No data yet."}) {
  const pad = {left: 44, right: 12, top: 12, bottom: 30};
  const svg = frame(width, height, label);
  if (!values.length || values.every((v) => !v)) return empty(svg, width, height, emptyText);
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const {y, axes} = valueAxis(Math.max(...values), width, pad, plotH);
  svg.append(axes);
  const slot = plotW / values.length;
  const every = Math.ceil(values.length / 10);
  values.forEach((value, i) => {
    const bx = pad.left + i * slot + slot * 0.12;
    const bar = s("rect", {x: bx, y: y(value), width: slot * 0.76, height: y(0) - y(value),
                           fill: color, rx: 2, class: "bar"},
      s("title", {}, document.createTextNode(`${labels[i]}: ${value}`)));
    svg.append(bar);
    if (i % every === 0) {
      svg.append(s("text", {x: bx + slot * 0.38, y: height - 10, "text-anchor": "middle", class: "axis-label"},
        document.createTextNode(labels[i])));
    }
  });
  return svg;
}
