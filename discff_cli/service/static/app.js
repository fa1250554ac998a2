// The discff search page: one form, one fetch of /search, a grid of thumbnails. No framework, no build.
"use strict";

const $ = (id) => document.getElementById(id);

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
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

async function loadInfo() {
  try {
    const info = await getJSON("/info");
    const service = info.service;
    $("index-info").textContent = `${info.count.toLocaleString()} images · CLIP ${info.clip.spec} · ` +
      `reranker ${service.model || "none"}`;
    $("top").max = service.max_top;
    $("rerank").max = service.max_rerank;
    if (service.scores.length) {
      for (const name of service.scores) $("score").add(new Option(name, name));
      $("score-label").hidden = false;
    }
  } catch (err) {
    showError(err.message);
  }
}

function card(row, reranked) {
  const item = document.createElement("article");
  item.className = "card";
  const link = document.createElement("a");
  link.href = `/images/${row.id}`;
  link.target = "_blank";
  link.rel = "noopener";
  const img = document.createElement("img");
  img.src = `/thumbs/${row.id}`;
  img.alt = row.path;
  img.loading = "lazy";
  img.addEventListener("error", () => {  // e.g. a file gone since the build, or one the server refuses
    const missing = document.createElement("div");
    missing.className = "missing";
    missing.textContent = "image not available";
    img.replaceWith(missing);
  });
  link.append(img);

  const meta = document.createElement("div");
  meta.className = "meta";
  const ranks = document.createElement("div");
  ranks.className = "ranks";
  const rank = document.createElement("span");
  rank.className = "rank";
  rank.textContent = `#${row.rank}`;
  const clip = document.createElement("span");
  clip.className = "clip-rank";
  clip.textContent = `CLIP #${row.clip_rank}`;
  if (reranked && row.clip_rank !== row.rank) {
    clip.classList.add(row.clip_rank > row.rank ? "moved-up" : "moved-down");
    clip.textContent += row.clip_rank > row.rank ? " ↑" : " ↓";
  }
  ranks.append(rank, clip);
  const scores = document.createElement("div");
  scores.textContent = (row.rerank_score == null ? "" : `rerank ${row.rerank_score.toFixed(4)} · `) +
    `CLIP ${row.clip_score.toFixed(4)}`;
  const path = document.createElement("div");
  path.className = "path";
  path.textContent = row.path;
  path.title = row.path;
  meta.append(ranks, scores, path);
  item.append(link, meta);
  return item;
}

function render(doc) {
  const reranked = Boolean(doc.rerank);
  $("grid").replaceChildren(...doc.results.map((row) => card(row, reranked)));
  const t = doc.timings_ms;
  let text = `${doc.results.length} results in ${t.total} ms (shortlist ${t.shortlist} ms`;
  if (reranked) {
    text += `, rerank of ${doc.rerank} ${t.rerank} ms, ${doc.unet_passes} U-Net passes`;
    if (t.model_load) text += `, model load ${t.model_load} ms`;
  }
  $("status").textContent = text + ")";
}

function currentParams() {
  const params = new URLSearchParams({ q: $("q").value });
  if ($("top").value) params.set("top", $("top").value);
  if ($("rerank-on").checked) {
    params.set("rerank", $("rerank").value || "10");
    if (!$("score-label").hidden) params.set("score", $("score").value);
  }
  return params;
}

async function search(event) {
  if (event) event.preventDefault();
  const params = currentParams();
  history.replaceState(null, "", `/?${params}`);
  showError("");
  $("go").disabled = true;
  $("status").textContent = $("rerank-on").checked ? "Reranking with Discffusion…" : "Searching…";
  try {
    render(await getJSON(`/search?${params}`));
  } catch (err) {
    $("status").textContent = "";
    showError(err.message);
  } finally {
    $("go").disabled = false;
  }
}

function restoreFromURL() {
  const params = new URLSearchParams(location.search);
  if (!params.get("q")) return false;
  $("q").value = params.get("q");
  if (params.get("top")) $("top").value = params.get("top");
  if (params.get("rerank")) {
    $("rerank-on").checked = true;
    $("rerank").value = params.get("rerank");
  }
  return true;
}

$("search-form").addEventListener("submit", search);
$("rerank-on").addEventListener("change", () => { if ($("q").value.trim()) search(); });
loadInfo();
if (restoreFromURL()) search();
