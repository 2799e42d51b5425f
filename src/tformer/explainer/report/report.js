// Draws every heatmap of a tformer explain report. Plain JavaScript, no libraries, no network.
// Data: the JSON in <script id="report-data">: {maps: [{rows, cols, data, diverging, title}]}.
// Every <canvas data-map="i"> shows map i; the attention explorer redraws canvas.detail on demand.
// When all canvases are drawn, <body data-status="drawn" data-heatmaps="N"> tells a headless
// browser (and the tests) that the page rendered; errors land in <body data-errors>.
"use strict";

window.addEventListener("error", (event) => {
  const errors = document.body.dataset.errors || "";
  document.body.dataset.errors = errors + event.message + "\n";
});

const REPORT = JSON.parse(document.getElementById("report-data").textContent);

// Viridis, sampled at five points and interpolated linearly.
const SEQUENTIAL = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
// Blue - white - red for signed values.
const DIVERGING = [[49, 54, 149], [145, 191, 219], [247, 247, 247], [252, 141, 89], [165, 0, 38]];

function colour(t, stops) {
  const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2);
  const f = x - i;
  const c = stops[i].map((v, k) => Math.round(v + f * (stops[i + 1][k] - v)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function range(map) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const row of map.data) {
    for (const v of row) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
  }
  if (map.scale) return map.diverging ? [-map.scale, map.scale] : [0, map.scale];
  if (map.diverging) {
    const m = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
    return [-m, m];
  }
  if (map.unit) return [0, 1];
  return [lo, hi > lo ? hi : lo + 1];
}

// Draw `map` on `canvas`; with labels, token strings go on the axes (rows left, columns top).
function drawHeatmap(canvas, map, withLabels) {
  const nRows = map.data.length;
  const nCols = nRows ? map.data[0].length : 0;
  const ctx = canvas.getContext("2d");
  const font = 11;
  ctx.font = `${font}px monospace`;
  const labelWidth = (labels) =>
    withLabels && labels ? Math.max(0, ...labels.map((s) => ctx.measureText(s).width)) + 6 : 0;
  const left = labelWidth(map.rows);
  const top = labelWidth(map.cols);
  let cellW;
  let cellH;
  if (withLabels) {
    // Token x token maps get square cells; others size each axis on its own, so a wide table
    // (positions x dimensions) still fills the width. Densely labelled axes keep room for text.
    const fit = (room, n, labels) => {
      const dense = labels && labels.filter(Boolean).length > labels.length / 2;
      return Math.max(dense ? font + 1 : 1, Math.min(28, Math.floor(room / Math.max(n, 1))));
    };
    const room = Number(canvas.dataset.room || 840); // width in pixels; height two thirds
    cellW = fit(room, nCols, map.cols);
    cellH = fit((room * 2) / 3, nRows, map.rows);
    if (map.rows && map.cols && map.rows.every(Boolean)) cellW = cellH = Math.min(cellW, cellH);
  } else {
    const side = Number(canvas.dataset.size || 96);
    cellW = cellH = Math.max(1, Math.min(12, Math.floor(side / Math.max(nRows, nCols, 1))));
  }
  canvas.width = left + cellW * nCols + 2;
  canvas.height = top + cellH * nRows + 2;
  ctx.font = `${font}px monospace`;
  const [lo, hi] = range(map);
  const stops = map.diverging ? DIVERGING : SEQUENTIAL;
  for (let r = 0; r < nRows; r++) {
    for (let c = 0; c < nCols; c++) {
      ctx.fillStyle = colour((map.data[r][c] - lo) / (hi - lo), stops);
      ctx.fillRect(left + c * cellW, top + r * cellH, cellW, cellH);
    }
  }
  if (!withLabels) return;
  ctx.fillStyle = "#222";
  ctx.textBaseline = "middle";
  ctx.textAlign = "right";
  (map.rows || []).forEach((s, r) => ctx.fillText(s, left - 3, top + (r + 0.5) * cellH));
  ctx.save();
  ctx.rotate(-Math.PI / 2);
  ctx.textAlign = "left";
  (map.cols || []).forEach((s, c) => ctx.fillText(s, -top + 3, left + (c + 0.5) * cellW));
  ctx.restore();
  canvas.title = `${map.title}: values ${lo.toFixed(3)} .. ${hi.toFixed(3)}`;
}

// The attention explorer: pick map family (self/cross per stack), layer and head. Each
// canvas.detail shows one panel: a family's `panels` (first map of each block: model, base,
// difference on a compare page) or its own maps; `start` is the [layer, head] shown first.
function setupExplorer() {
  const details = document.querySelectorAll("canvas.detail");
  if (!details.length) return;
  const captions = document.querySelectorAll(".detail-caption");
  const family = document.getElementById("family");
  const layer = document.getElementById("layer");
  const head = document.getElementById("head");
  const index = REPORT.attention;
  const show = () => {
    const group = index[family.value];
    const l = Math.min(Number(layer.value), group.layers - 1);
    const h = Math.min(Number(head.value), group.heads - 1);
    const offset = l * group.heads + h;
    const firsts = group.panels || [group.first];
    details.forEach((canvas, i) => {
      const map = REPORT.maps[firsts[i] + offset];
      drawHeatmap(canvas, map, true);
      captions[i].textContent = map.title;
    });
    document.querySelectorAll("canvas.attention").forEach((c) => {
      c.classList.toggle("selected", Number(c.dataset.map) === group.first + offset);
    });
  };
  const fill = (select, n, prefix) => {
    select.innerHTML = "";
    for (let i = 0; i < n; i++) select.add(new Option(`${prefix} ${i}`, String(i)));
  };
  const choose = (key, l, h) => {
    family.value = key;
    fill(layer, index[key].layers, "layer");
    fill(head, index[key].heads, "head");
    layer.value = String(l);
    head.value = String(h);
    show();
  };
  family.addEventListener("change", () => choose(family.value, 0, 0));
  layer.addEventListener("change", show);
  head.addEventListener("change", show);
  document.querySelectorAll("canvas.attention").forEach((c) => {
    c.addEventListener("click", () => choose(c.dataset.family, c.dataset.layer, c.dataset.head));
  });
  const [l, h] = index[family.value].start || [0, 0];
  choose(family.value, l, h);
}

function drawAll() {
  const canvases = document.querySelectorAll("canvas[data-map]");
  canvases.forEach((c) => drawHeatmap(c, REPORT.maps[Number(c.dataset.map)], c.classList.contains("labelled")));
  setupExplorer();
  document.body.dataset.heatmaps = String(canvases.length);
  document.body.dataset.status = "drawn";
}

drawAll();
