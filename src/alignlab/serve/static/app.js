// The rating page: plain DOM over /api. Keys match the terminal rater (alignlab rate).
"use strict";

const $ = (id) => document.getElementById(id);
const SINGLE_KEYS = "u=up d=down 1-5=score r=rewrite s=skip z=undo";
const PAIR_KEYS = "a=A better b=B better t=tie s=skip z=undo";
const state = { item: null, skipped: new Set(), first: null };

function setStatus(text, bad) {
  const el = $("status");
  el.textContent = text;
  el.className = bad ? "bad" : "";
}

function rater() { return $("rater").value.trim(); }
function mode() { return $("mode").value; }

async function api(path, body) {
  const headers = { "Content-Type": "application/json" };
  const key = localStorage.getItem("alignlab.apiKey");
  if (key) headers["Authorization"] = "Bearer " + key;
  let res;
  try {
    res = await fetch(path, body === undefined ? { headers } : { method: "POST", headers, body: JSON.stringify(body) });
  } catch (err) {  // the server is gone: say so, and that nothing was saved
    throw new Error((body === undefined ? "" : "not saved: ") + "cannot reach the server (is alignlab ui still running?)");
  }
  const data = await res.json().catch(() => ({}));
  if (res.status === 401) {
    const entered = window.prompt("This server needs its API key (ALIGNLAB_API_KEY):");
    if (entered) { localStorage.setItem("alignlab.apiKey", entered); return api(path, body); }
  }
  if (!res.ok) {
    const err = new Error((data.error && data.error.message) || res.status + " " + res.statusText);
    err.code = data.error && data.error.code;
    throw err;
  }
  return data;
}

async function loadNext() {
  if (!rater()) {
    state.item = null;
    $("item").hidden = true;
    $("empty").hidden = true;
    setStatus("enter your name (rater) to start");
    return;
  }
  if ($("status").textContent.startsWith("enter your name")) setStatus(`rating as ${rater()}`);
  const q = new URLSearchParams({ rater: rater(), mode: mode(), skip: [...state.skipped].join(",") });
  const round = new URLSearchParams(location.search).get("round");  // ?round=N: only that round's answers
  if (round !== null && /^\d+$/.test(round)) q.set("round", round);
  else if (round !== null) { setStatus(`?round=${round} is not a round number: showing every round`, true); }
  if (state.first) q.set("first", state.first);
  state.first = null;
  const data = await api("/api/next?" + q);
  state.item = data.item;
  $("left").textContent = data.left + " left";
  $("item").hidden = !data.item;
  $("empty").hidden = !!data.item;
  if (!data.item) return;
  const it = data.item;
  $("prompt").textContent = it.prompt;
  $("single").hidden = mode() !== "single";
  $("pair").hidden = mode() !== "pair";
  if (mode() === "single") {
    $("meta").textContent = `#${it.prompt_id} · response #${it.response_id} · round ${it.round}`;
    $("response").textContent = it.response;
    $("rewrite").value = "";
  } else {
    // no response ids: the later-sampled model has the higher id, which would tell the sources apart
    $("meta").textContent = `#${it.prompt_id} · round ${it.round}`;
    $("a").textContent = it.a.text;
    $("b").textContent = it.b.text;
  }
}

// Actions run one after another, in key-press order (type-ahead, like the terminal rater): each one
// applies to the item on screen once the previous action has finished.
let queue = Promise.resolve();
function act(fn) {
  queue = queue.then(fn).catch((err) => setStatus("error: " + err.message, true));
  return queue;
}

// A key judges the item on screen when its action runs (type-ahead: two quick keys judge two items). A click
// or a rewrite judges the item that was on screen when it happened (``key``), or nothing: a double click must
// not judge the next item, which its rater never saw.
function judge(kind, fields, key) {
  return act(async () => {
    if (!state.item) return;
    if (key !== undefined && state.item.key !== key) return;  // the click's item is saved already
    if (!rater()) { setStatus("enter your name (rater) first", true); return; }
    if (kind !== "rewrite" && unsavedRewrite()) return;
    const body = Object.assign({ kind, rater: rater() }, fields(state.item));
    setStatus("saving…");
    let res;
    try {
      res = await api("/api/judge", body);
    } catch (err) {
      if (err.code !== "already_judged") throw err;
      setStatus(`${err.message}: it was rated already (in another tab?); here is the next one`, true);
      await loadNext();
      return;
    }
    if (kind === "rewrite") $("rewrite").value = "";
    const what = kind === "rewrite" ? "rewrite" : `${kind} ${body.value}`;
    const shown = res.revealed ? ` · A was ${res.revealed.a}, B was ${res.revealed.b}` : "";
    setStatus(`saved #${res.id} (${what})${shown}`);
    await loadNext();
  });
}

// a rewrite typed in the box is never thrown away by moving on: save it or empty the box first
function unsavedRewrite() {
  if (mode() !== "single" || !$("rewrite").value.trim()) return false;
  setStatus("there is an unsaved rewrite in the box: save it (Ctrl+Enter) or empty it, then rate or skip", true);
  return true;
}

const onScreen = () => (state.item ? state.item.key : null);
const single = (kind, value, key) => judge(kind, (it) => ({ response_id: it.response_id, value }), key);
const pick = (value, key) => judge("pick", (it) => ({ response_id: it.a.id, other_response_id: it.b.id, value }), key);

function saveRewrite() {
  const text = $("rewrite").value;
  if (!text.trim()) { setStatus("rewrite is empty: nothing saved", true); return; }
  $("rewrite").blur();
  return judge("rewrite", (it) => ({ response_id: it.response_id, rewrite_text: text }), onScreen());
}

function skip(key) {
  return act(async () => {
    if (!state.item) return;
    if (key !== undefined && state.item.key !== key) return;
    if (unsavedRewrite()) return;
    state.skipped.add(state.item.key);
    setStatus(`skipped (comes back next session)`);
    await loadNext();
  });
}

function undo() {
  return act(async () => {
    if (!rater()) { setStatus("enter your name (rater) first", true); return; }
    if (unsavedRewrite()) return;
    const res = await api("/api/undo", { rater: rater(), mode: mode() });
    if (!res.undone) { setStatus("nothing to undo"); return; }
    const u = res.undone;
    state.skipped.delete(res.key);
    state.first = res.key;
    setStatus(`undid #${u.id} (${u.kind === "rewrite" ? "rewrite" : u.kind + " " + u.value})`);
    await loadNext();
    if (u.kind === "rewrite" && state.item && state.item.key === res.key) $("rewrite").value = u.rewrite_text || "";
  });
}

// --- past rounds ---------------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
function el(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function drawChart(rounds) {
  const box = $("chart");
  box.replaceChildren();
  const pts = rounds.filter((r) => r.persona_score !== null);
  if (!pts.length) { box.textContent = "no persona scores yet: rate with thumbs or scores"; return; }
  const base = pts.filter((r) => r.base_persona !== null);
  const values = pts.map((r) => r.persona_score).concat(base.map((r) => r.base_persona));
  const lo = Math.min(0, ...values), hi = Math.max(1, ...values);
  const W = 520, H = 220, L = 44, R = 36, T = 16, B = 36;
  const svg = el("svg", { id: "rounds-chart", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
                          "aria-label": "persona score per round" });
  const x = (i) => L + (pts.length === 1 ? (W - L - R) / 2 : (i * (W - L - R)) / (pts.length - 1));
  const y = (v) => T + ((hi - v) / (hi - lo)) * (H - T - B);
  for (const v of [lo, (lo + hi) / 2, hi]) {
    svg.append(el("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(el("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" }, v.toFixed(1)));
  }
  if (base.length) {
    const at = (r) => x(pts.indexOf(r));
    svg.append(el("polyline", { points: base.map((r) => `${at(r)},${y(r.base_persona)}`).join(" "), class: "line base" }));
  }
  svg.append(el("polyline", { points: pts.map((r, i) => `${x(i)},${y(r.persona_score)}`).join(" "), class: "line" }));
  pts.forEach((r, i) => {
    const dot = el("circle", { cx: x(i), cy: y(r.persona_score), r: 4, class: "dot" });
    const from = r.persona_source === "rounds table" ? "held-out score" : "from ratings";
    dot.append(el("title", {}, `round ${r.round}: ${r.persona_score.toFixed(2)} (${from}; ${r.judgements} judgements)`));
    svg.append(dot);
    svg.append(el("text", { x: x(i), y: H - B + 18, "text-anchor": "middle", class: "axis" }, `round ${r.round}`));
  });
  box.append(svg);
  if (base.length) {
    const key = document.createElement("p");
    key.className = "muted";
    key.textContent = "solid: the round's adapter · dashed: the base model";
    box.append(key);
  }
}

async function loadRounds() {
  const data = await api("/api/rounds");
  const body = $("rounds-table").tBodies[0];
  body.replaceChildren();
  const fmt = (v, d) => (v === null || v === undefined ? "–" : v.toFixed(d));
  for (const r of data.rounds) {
    const tr = document.createElement("tr");
    for (const v of [r.round, r.responses, r.judgements, r.thumbs_up, r.thumbs_down, fmt(r.mean_score, 2), fmt(r.persona_score, 2), fmt(r.base_persona, 2)]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.append(td);
    }
    body.append(tr);
  }
  drawChart(data.rounds);
}

function show(view) {
  $("view-rate").hidden = view !== "rate";
  $("view-rounds").hidden = view !== "rounds";
  $("tab-rate").classList.toggle("active", view === "rate");
  $("tab-rounds").classList.toggle("active", view === "rounds");
  if (view === "rounds") act(loadRounds);
}

// --- wiring ----------------------------------------------------------------------------------------

function typing(target) { return target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.tagName === "SELECT"); }

document.addEventListener("keydown", (ev) => {
  if (ev.target === $("rater") && ev.key === "Enter") { $("rater").blur(); return; }  // keys after it rate, not type
  if (ev.target === $("rewrite")) {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); saveRewrite(); }
    if (ev.key === "Escape") $("rewrite").blur();
    return;
  }
  if (typing(ev.target) || ev.ctrlKey || ev.metaKey || ev.altKey || $("view-rate").hidden) return;
  const k = ev.key.toLowerCase();
  if (k === "s") return skip();
  if (k === "z") return undo();  // no item yet (still loading)? the judgement waits its turn in the queue
  if (mode() === "single") {
    if (k === "u") single("thumb", 1);
    else if (k === "d") single("thumb", -1);
    else if ("12345".includes(k) && k.length === 1) single("score", Number(k));
    else if (k === "r") { ev.preventDefault(); $("rewrite").focus(); }
  } else if (k === "a") pick("a");
  else if (k === "b") pick("b");
  else if (k === "t") pick("tie");
});

$("up").onclick = () => single("thumb", 1, onScreen());
$("down").onclick = () => single("thumb", -1, onScreen());
document.querySelectorAll(".score").forEach((b) => { b.onclick = () => single("score", Number(b.dataset.score), onScreen()); });
$("save-rewrite").onclick = saveRewrite;
$("pick-a").onclick = () => pick("a", onScreen());
$("pick-b").onclick = () => pick("b", onScreen());
$("pick-tie").onclick = () => pick("tie", onScreen());
$("skip").onclick = () => skip(onScreen());
$("undo").onclick = undo;
$("tab-rate").onclick = () => show("rate");
$("tab-rounds").onclick = () => show("rounds");

$("rater").value = localStorage.getItem("alignlab.rater") || "";
const asked = new URLSearchParams(location.search).get("mode") || localStorage.getItem("alignlab.mode") || "single";
$("mode").value = ["single", "pair"].includes(asked) ? asked : "single";
$("keys").textContent = mode() === "single" ? SINGLE_KEYS : PAIR_KEYS;
$("rater").onchange = () => {
  const pending = mode() === "single" && $("rewrite").value.trim() && state.item;
  if (pending && !rater()) {  // no name would hide the answer its rewrite belongs to
    $("rater").value = localStorage.getItem("alignlab.rater") || "";
    unsavedRewrite();
    return;
  }
  localStorage.setItem("alignlab.rater", rater());
  if (pending) {  // the answer stays on screen with its rewrite, saved under the new name
    setStatus(`rating as ${rater()}; the rewrite in the box is not saved yet`);
    return;
  }
  state.skipped.clear();
  if (rater()) setStatus(`rating as ${rater()}`);
  act(loadNext);
};
$("mode").onchange = () => {
  if ($("rewrite").value.trim() && mode() !== "single") {  // the box belongs to the single answer on screen
    $("mode").value = "single";
    unsavedRewrite();
    return;
  }
  localStorage.setItem("alignlab.mode", mode());
  $("keys").textContent = mode() === "single" ? SINGLE_KEYS : PAIR_KEYS;
  state.skipped.clear();
  act(loadNext);
};
act(async () => {
  if ($("mode").value !== asked) setStatus(`mode ${asked} is not one of single, pair: rating single answers`, true);
  await loadNext();
});
