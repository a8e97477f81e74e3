// The console's only script: live regions and the topology drawing. No build step, no library.
"use strict";

function every(ms, fn) {
  // Fetch again only after the previous fetch finished: a slow broker never piles requests up.
  const tick = async () => { try { await fn(); } catch (e) { console.warn(e); } setTimeout(tick, ms); };
  tick();
}

async function fetchOk(src, type) {
  const r = await fetch(src, { credentials: "same-origin", headers: { Accept: type } });
  if (r.status === 401) { location.reload(); throw new Error("signed out"); }
  return r;
}

function live(el) {
  // data-live: a URL whose answer replaces the element's content (HTML), or a job's progress (JSON).
  const src = el.dataset.live, ms = Number(el.dataset.every || 2000);
  every(ms, async () => {
    if (el.dataset.render === "job") {
      const job = await (await fetchOk(src, "application/json")).json();
      el.querySelector("progress").max = Math.max(job.total, 1);
      el.querySelector("progress").value = job.done;
      el.querySelector(".progress").textContent =
        `${job.verb}: ${job.done}/${job.total} ${job.state}${job.error ? " — " + job.error : ""}`;
      if (job.state !== "running") el.dataset.render = "done";
      return;
    }
    if (el.dataset.render === "done") return;
    const r = await fetchOk(src, "text/html");
    if (r.ok) el.innerHTML = await r.text();
  });
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
const rate = (v) => (v === null || v === undefined ? "-" : `${v.toFixed(1)}/s`);

function draw(host, data) {
  // Columns by longest path from a source topic, rows in declaration order: the shape of `kstream graph`.
  const col = {};
  data.boxes.forEach((b) => { col[b.id] = 0; });
  for (let i = 0; i < data.boxes.length; i++) {
    for (const e of data.edges) col[e.to] = Math.max(col[e.to], col[e.from] + 1);
  }
  const rows = {}, pos = {};
  const W = 190, H = 78, GX = 50, GY = 30;
  for (const b of data.boxes) {
    const c = col[b.id], r = (rows[c] = (rows[c] || 0) + 1) - 1;
    pos[b.id] = { x: 10 + c * (W + GX), y: 10 + r * (H + GY) };
  }
  const width = 20 + (Math.max(...Object.values(col)) + 1) * (W + GX);
  const height = 20 + Math.max(...Object.values(rows)) * (H + GY);
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  const defs = svg("defs", {});
  const marker = svg("marker", { id: "arrow", markerWidth: 10, markerHeight: 8, refX: 10, refY: 4, orient: "auto" });
  marker.appendChild(svg("path", { d: "M0,0 L10,4 L0,8 z", fill: "#667" }));
  defs.appendChild(marker);
  root.appendChild(defs);
  for (const e of data.edges) {
    const a = pos[e.from], b = pos[e.to];
    const line = svg("line", { x1: a.x + W, y1: a.y + H / 2, x2: b.x, y2: b.y + H / 2, class: "edge",
                               "marker-end": "url(#arrow)" });
    // The internal topic between two nodes: too long to print in the gap, so a tooltip.
    if (e.label) line.appendChild(svg("title", {}, e.label));
    root.appendChild(line);
  }
  for (const b of data.boxes) {
    const p = pos[b.id], stats = b.kind === "node" ? data.nodes[b.name] : null;
    const g = svg("g", { class: `box ${b.kind}${stats && stats.bottleneck ? " bottleneck" : ""}`, "data-name": b.name,
                         transform: `translate(${p.x},${p.y})` });
    if (b.kind === "topic") {
      g.appendChild(svg("rect", { width: W, height: 40, y: 19, rx: 18 }));
      g.appendChild(svg("text", { x: W / 2, y: 44, "text-anchor": "middle" }, b.label));
    } else {
      g.appendChild(svg("rect", { width: W, height: H, rx: 6 }));
      g.appendChild(svg("text", { x: 10, y: 20, class: "name" }, b.label + (stats && stats.bottleneck ? "  ◀ bottleneck" : "")));
      if (stats) {
        g.dataset.lag = stats.lag; g.dataset.trash = stats.trash;
        g.appendChild(svg("text", { x: 10, y: 42, class: "stat lag" }, `lag ${stats.lag} · in ${rate(stats.rate_in)} · out ${rate(stats.rate_out)}`));
        g.appendChild(svg("text", { x: 10, y: 62, class: "stat trash" },
                          `in flight ${stats.in_flight ?? "-"} · trash ${stats.trash}`));
      }
    }
    root.appendChild(g);
  }
  host.replaceChildren(root);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-live]").forEach(live);
  const graph = document.getElementById("graph");
  if (graph) {
    every(Number(graph.dataset.every || 2000), async () => {
      const r = await fetchOk(graph.dataset.src, "application/json");
      if (!r.ok) return;
      draw(graph, await r.json());
      document.getElementById("graph-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    });
  }
  document.querySelectorAll("form.confirm").forEach((f) => f.addEventListener("submit", (ev) => {
    if (!window.confirm(f.querySelector("button").textContent + "?")) ev.preventDefault();
  }));
});
