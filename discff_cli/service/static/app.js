// The discff search page: a form, /search, a grid or CLIP's order beside the reranked one, and a map
// per result from /explain. No framework, no build. The menus are filled from /info before any search,
// so a page opened from a URL reranks with the score the URL (or else the service) names.
"use strict";

const $ = (id) => document.getElementById(id);
let lastDoc = null;

function showError(message, where = "error") {
  $(where).textContent = message;
  $(where).hidden = !message;
}

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin" });
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON: reported below */ }
  if (!response.ok) {
    throw new Error((body && body.error) || `The server answered ${response.status}.`);
  }
  return body;
}

// Four significant digits whatever the scale: denoise scores are ~1e-4, attention scores ~4.
function ms(value) {
  return value < 1000 ? `${Math.round(value * 10) / 10} ms` : `${(value / 1000).toFixed(1)} s`;
}

function fmt(value) {
  if (value == null) return "–";
  if (value === 0) return "0";
  return String(Number(value.toPrecision(4)));
}

function fillMenu(select, names, chosen) {
  select.replaceChildren(...names.map((name) => new Option(name, name, false, name === chosen)));
}

async function loadInfo() {
  const info = await getJSON("/info");
  const service = info.service;
  $("index-info").textContent = `${info.count.toLocaleString()} images · CLIP ${info.clip.spec} · ` +
    `reranker ${service.model || "none"} (default score ${service.score}, fusion ${service.fusion})`;
  $("top").max = service.max_top;
  $("rerank").max = service.max_rerank;
  fillMenu($("score"), service.scores, service.score);
  fillMenu($("fusion"), service.fusions, service.fusion);
  $("weight").value = service.fusion_weight;
  for (const id of ["score-label", "fusion-label", "weight-label"]) $(id).hidden = false;
  return service;
}

function movement(row) {
  const span = document.createElement("span");
  span.className = "clip-rank";
  const moved = row.clip_rank - row.rank;
  span.textContent = `CLIP #${row.clip_rank} ` + (moved > 0 ? `↑${moved}` : moved < 0 ? `↓${-moved}` : "=");
  if (moved) span.classList.add(moved > 0 ? "moved-up" : "moved-down");
  return span;
}

function hoverText(row) {
  const meta = row.meta || {};
  const lines = [row.path];
  if (meta.caption) lines.push(`caption: ${meta.caption}`);
  if (meta.width) lines.push(`${meta.width}×${meta.height} px · ${(meta.bytes / 1024).toFixed(1)} KiB`);
  if (meta.modified_ns) lines.push(`modified ${new Date(meta.modified_ns / 1e6).toLocaleString()}`);
  lines.push("click the image for its map");
  return lines.join("\n");
}

function thumb(row) {
  const img = document.createElement("img");
  img.src = `/thumbs/${row.id}`;
  img.alt = row.path;
  img.loading = "lazy";
  img.title = hoverText(row);
  img.addEventListener("error", () => {  // e.g. a file gone since the build, or one the server refuses
    const missing = document.createElement("div");
    missing.className = "missing";
    missing.textContent = "image not available";
    img.replaceWith(missing);
  });
  img.addEventListener("click", () => openExplain(row));
  return img;
}

function card(row, doc) {
  const item = document.createElement("article");
  item.className = "card";
  item.dataset.id = row.id;
  const meta = document.createElement("div");
  meta.className = "meta";
  const ranks = document.createElement("div");
  ranks.className = "ranks";
  const rank = document.createElement("span");
  rank.className = "rank";
  rank.textContent = `#${row.rank}`;
  ranks.append(rank);
  if (row.rerank_score != null) ranks.append(movement(row));
  const scores = document.createElement("div");
  scores.className = "scores";
  scores.textContent = row.rerank_score == null ? `CLIP ${fmt(row.clip_score)}` :
    `fused ${fmt(row.fused_score)} · ${doc.score} ${fmt(row.rerank_score)} · CLIP ${fmt(row.clip_score)}`;
  const path = document.createElement("a");
  path.className = "path";
  path.href = `/images/${row.id}`;
  path.target = "_blank";
  path.rel = "noopener";
  path.textContent = row.path;
  path.title = "open the image";
  meta.append(ranks, scores, path);
  item.append(thumb(row), meta);
  return item;
}

function listItem(row, reranked) {
  const li = document.createElement("li");
  li.dataset.id = row.id;
  const label = document.createElement("span");
  label.className = "label";
  label.textContent = `#${reranked ? row.rank : row.clip_rank} ${row.path.split("/").pop()}`;
  const scores = document.createElement("span");
  scores.className = "scores muted";
  scores.textContent = reranked && row.rerank_score != null ?
    `fused ${fmt(row.fused_score)} · ${lastDoc.score} ${fmt(row.rerank_score)}` : `CLIP ${fmt(row.clip_score)}`;
  li.append(thumb(row), label, scores);
  if (reranked && row.rerank_score != null) li.append(movement(row));
  return li;
}

function view() {
  return document.querySelector("input[name=view]:checked").value;
}

function render(doc) {
  lastDoc = doc;
  const reranked = Boolean(doc.rerank);
  $("toolbar").hidden = !reranked;
  const mode = reranked ? view() : "reranked";
  const byClip = [...doc.results].sort((a, b) => a.clip_rank - b.clip_rank);
  $("grid").hidden = mode === "compare";
  $("compare").hidden = mode !== "compare";
  if (mode === "compare") {
    $("clip-list").replaceChildren(...byClip.map((row) => listItem(row, false)));
    $("reranked-list").replaceChildren(...doc.results.map((row) => listItem(row, true)));
    $("reranked-title").textContent = `reranked by ${doc.score}, ${fusionText(doc.fusion)}`;
  } else {
    $("grid").replaceChildren(...(mode === "clip" ? byClip : doc.results).map((row) => card(row, doc)));
  }
  const t = doc.timings_ms;
  let text = `${doc.results.length} results`;
  if (reranked) text += ` · top ${doc.rerank} reranked by ${doc.score} (${doc.model}), ${fusionText(doc.fusion)}`;
  text += ` · ${ms(t.total)} (shortlist ${ms(t.shortlist)}`;
  if (reranked) {
    text += `, rerank ${ms(t.rerank)}, ${doc.unet_passes} U-Net passes`;
    if (t.model_load) text += `, model load ${ms(t.model_load)}`;
  }
  $("status").textContent = text + ")";
}

function fusionText(fusion) {
  if (!fusion) return "";
  return fusion.method === "none" ? "ordered by that score alone" :
    `fused with CLIP (${fusion.method}, weight ${fusion.weight})`;
}

function currentParams() {
  const params = new URLSearchParams({ q: $("q").value });
  if ($("top").value) params.set("top", $("top").value);
  if ($("rerank-on").checked) {
    params.set("rerank", $("rerank").value || "10");
    params.set("score", $("score").value);
    params.set("fusion", $("fusion").value);
    if ($("weight").value !== "") params.set("weight", $("weight").value);
  }
  return params;
}

async function search(event) {
  if (event) event.preventDefault();
  if (!$("q").value.trim()) return;
  const params = currentParams();
  const shown = new URLSearchParams(params);
  if (params.get("rerank")) shown.set("view", view());
  history.replaceState(null, "", `/?${shown}`);
  showError("");
  $("go").disabled = true;
  $("status").textContent = $("rerank-on").checked ? `Reranking with ${$("score").value}…` : "Searching…";
  try {
    render(await getJSON(`/search?${params}`));
  } catch (err) {
    $("status").textContent = "";
    showError(err.message);
  } finally {
    $("go").disabled = false;
  }
}

async function openExplain(row) {
  const score = $("score").value;
  const query = lastDoc ? lastDoc.query : $("q").value;
  $("explain-title").textContent = `“${query}” on ${row.path}`;
  $("explain-image").hidden = true;
  $("explain-note").textContent = "";
  showError("", "explain-error");
  $("explain-status").textContent = `Mapping ${score} for this image…`;
  if (!$("explain").open) $("explain").showModal();
  try {
    const params = new URLSearchParams({ id: row.id, q: query, score });
    const doc = await getJSON(`/explain?${params}`);
    $("explain-image").src = doc.png;
    $("explain-image").hidden = false;
    $("explain-status").textContent = "";
    const [x, y] = doc.maps[score].peak_xy;
    $("explain-note").textContent = `${score} ${fmt(doc.score_value)} is the sum of its map (red: the query ` +
      `lowers the U-Net's error there; blue: raises it), peak at x ${x}, y ${y} of the model's ` +
      `${doc.image_size}-pixel view; the word maps are the cross-attention each word receives (DAAM). ` +
      `${doc.conditions} timestep × noise-level conditions, ${ms(doc.timings_ms.total)}.`;
  } catch (err) {
    $("explain-status").textContent = "";
    showError(err.message, "explain-error");
  }
}

function restoreFromURL(service) {
  const params = new URLSearchParams(location.search);
  if (!params.get("q")) return false;
  $("q").value = params.get("q");
  if (params.get("top")) $("top").value = params.get("top");
  if (params.get("rerank")) {
    $("rerank-on").checked = true;
    $("rerank").value = params.get("rerank");
  }
  if (service.scores.includes(params.get("score"))) $("score").value = params.get("score");
  if (service.fusions.includes(params.get("fusion"))) $("fusion").value = params.get("fusion");
  if (params.get("weight")) $("weight").value = params.get("weight");
  const mode = document.querySelector(`input[name=view][value="${params.get("view")}"]`);
  if (mode) mode.checked = true;
  return true;
}

function researchIfReranking() {
  if ($("rerank-on").checked && $("q").value.trim()) search();
}

async function start() {
  $("search-form").addEventListener("submit", search);
  $("rerank-on").addEventListener("change", () => { if ($("q").value.trim()) search(); });
  for (const id of ["score", "fusion", "weight"]) $(id).addEventListener("change", researchIfReranking);
  for (const radio of document.querySelectorAll("input[name=view]")) {
    radio.addEventListener("change", () => {
      if (!lastDoc) return;
      render(lastDoc);
      const shown = new URLSearchParams(location.search);
      shown.set("view", view());
      history.replaceState(null, "", `/?${shown}`);
    });
  }
  let service;
  try {
    service = await loadInfo();
  } catch (err) {
    showError(err.message);
    return;
  }
  $("go").disabled = false;
  if (restoreFromURL(service)) search();
}

start();
