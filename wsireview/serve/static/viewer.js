"use strict";
// The viewer page: one slide (/slides/ID) or the review queue (/review, /review?slide=ID).
// Verdicts go to /api/reviews the moment their key is pressed, with the seconds the patch was shown.

const VERDICT_KEYS = {y: "lesion", n: "not_lesion", u: "unsure", a: "artifact"};
const VERDICT_TEXT = {lesion: "lesion", not_lesion: "not lesion", unsure: "unsure", artifact: "artifact"};
const REASON_TEXT = {"top-attention": "top attention", uncertain: "uncertain (P near 0.5)",
                     diverse: "diverse (unlike the others)", random: "random (baseline)"};
const LAYER_KEYS = {t: "mask", h: "heatmap", g: "grid", q: "queue", v: "verdicts"};
const READ_AHEAD = 3;      // patches whose tiles are fetched before they are shown
const REFILL_AT = 2;       // claimed patches still to judge when the claims are topped up
const CONTEXT_FACTOR = 8;  // the wider context covers 8 x the patch field, as in the terminal

const viewer = OpenSeadragon({
  id: "osd",
  prefixUrl: "/static/openseadragon/images/",
  showNavigator: true,
  navigatorPosition: "TOP_RIGHT",
  navigatorAutoFade: false,
  animationTime: 0.3,
  maxZoomPixelRatio: 4,
  visibilityRatio: 0.2,
  immediateRender: false,
  preserveImageSizeOnResize: true,
  gestureSettingsMouse: {clickToZoom: false},
});
const overlay = new OverlayCanvas(viewer);
// "loaded" once every tile the view needs is drawn (tests and screenshots wait for it).
viewer.world.addHandler("add-item", (event) => {
  document.body.dataset.tiles = "loading";
  event.item.addHandler("fully-loaded-change", (e) => {
    document.body.dataset.tiles = e.fullyLoaded ? "loaded" : "loading";
  });
});
const slides = new Map();       // slide id -> slide info (from /api/slides/ID)
let slide = null;               // the slide on screen
let opening = null;             // the promise of the slide being opened
let session = null;

const triage = {
  on: location.pathname === "/review",
  slideId: new URLSearchParams(location.search).get("slide"),
  entries: [], index: null, verdicts: new Map(), skipped: new Set(),
  shownAt: 0, shown: false, context: false, busy: false, sessionVerdicts: 0,
  // Reviewers share the queue: this page shows only the patches its reviewer holds a claim on.
  version: null, claimed: new Set(), progress: null, newer: null, renewTimer: null,
  // Each move to a patch takes a number: a move still waiting (on a claim or a slide) when a newer
  // one starts (an undo pressed right after a verdict) gives way instead of showing its patch.
  moves: 0,
};

function banner(text) {
  const node = document.getElementById("banner");
  node.textContent = text || "";
  node.hidden = !text;
}

// -- slides ------------------------------------------------------------------------------------
async function slideInfo(id) {
  if (!slides.has(id)) slides.set(id, await api(`/api/slides/${id}`));
  return slides.get(id);
}

async function openSlide(id) {
  const info = await slideInfo(id);
  if (slide && slide.id === info.id) return info;
  const opened = new Promise((resolve, reject) => {
    viewer.addOnceHandler("open", () => resolve());
    viewer.addOnceHandler("open-failed", (event) => reject(new Error(event.message || "the slide cannot be opened")));
  });
  viewer.open(info.dzi);
  await opened;
  slide = info;
  overlay.setSlide(info, null);
  document.title = `wsireview: ${info.name}`;
  showSlideInfo(info);
  refreshOverlays();
  return info;
}

async function refreshOverlays() {
  if (!slide) return;
  const id = slide.id;
  const layers = await api(`/api/slides/${id}/overlays`);
  if (slide && slide.id === id) {
    overlay.setLayers(layers);
    verdictLegend();
  }
}

function showSlideInfo(info) {
  if (!triage.on) document.getElementById("title").textContent = info.name;
  fillList(document.getElementById("slide-info"), [
    ["slide", info.name],
    ["label", info.label || "-"],
    ["P(positive)", fixed(info.probability)],
    ["size", `${info.width.toLocaleString()} x ${info.height.toLocaleString()} px`],
    ["mpp", info.um_per_px ? `${info.um_per_px.toFixed(3)} µm/px` +
      (info.um_per_px_source === "objective-power" ? " (from objective)" : "") : "unknown (scale in pixels)"],
    ["objective", info.objective_power ? `${info.objective_power}x` : "unknown"],
    ["patches", `${info.patches} (${info.queued} queued, ${info.reviewed} reviewed)`],
  ]);
  const link = document.getElementById("review-slide");
  link.href = `/review?slide=${info.id}`;
  link.hidden = triage.on || !info.queued;
}

// -- scale bar and magnification -----------------------------------------------------------------
const NICE = [1, 2, 5];

function niceLength(target) {
  const power = Math.pow(10, Math.floor(Math.log10(target)));
  let best = power;
  for (const n of NICE) if (n * power <= target) best = n * power;
  return best;
}

// Sizes and magnification follow the terminal's rule: µm per level-0 pixel from a plausible mpp,
// else from the objective power (the server says which), and 10 µm per pixel at 1x.
function updateScale() {
  const t = overlay.transform();
  if (!t || !slide || !session) return;
  const bar = document.getElementById("scalebar"), text = document.getElementById("scale-text");
  const mag = document.getElementById("magnification");
  const target = 120;  // screen pixels the bar aims at
  const um = slide.um_per_px;
  if (um) {
    const microns = niceLength(target / t.scale * um);
    bar.style.width = `${microns / um * t.scale}px`;
    text.textContent = microns >= 1000 ? `${microns / 1000} mm` : `${microns} µm`;
    const shown = um / t.scale;  // µm per screen pixel
    const x = session.microns_per_pixel_at_1x / shown;
    const implied = slide.um_per_px_source === "objective-power" ? " (from objective)" : "";
    mag.textContent = `${x >= 9.95 ? x.toFixed(0) : x.toFixed(1)}x · ${shown.toFixed(2)} µm/px${implied}`;
  } else {
    const pixels = niceLength(target / t.scale);
    bar.style.width = `${pixels * t.scale}px`;
    text.textContent = `${pixels.toLocaleString()} px`;
    mag.textContent = `1:${(1 / t.scale).toPrecision(3)} px (no mpp in the file)`;
  }
}
viewer.addHandler("update-viewport", updateScale);

// -- overlays ------------------------------------------------------------------------------------
function toggleLayer(name) {
  overlay.shown[name] = !overlay.shown[name];
  syncLayerButtons();
  overlay.draw();
}

function syncLayerButtons() {
  for (const button of document.querySelectorAll("button.layer")) {
    button.classList.toggle("on", overlay.shown[button.dataset.layer]);
    button.setAttribute("aria-pressed", overlay.shown[button.dataset.layer]);
  }
  document.getElementById("by-reviewer").classList.toggle("on", overlay.byReviewer);
  document.getElementById("heatmap-legend").hidden = !overlay.shown.heatmap;
  verdictLegend();
}

function setThreshold(value) {
  overlay.threshold = Math.min(1, Math.max(0, Math.round(value * 100) / 100));
  document.getElementById("threshold").value = overlay.threshold;
  document.getElementById("threshold-value").textContent = overlay.threshold.toFixed(2);
  document.getElementById("threshold-mark").style.left = `${overlay.threshold * 100}%`;
  overlay.draw();
}

function verdictLegend() {
  const legend = document.getElementById("verdict-legend");
  legend.hidden = !overlay.shown.verdicts;
  if (legend.hidden) return;
  const verdicts = (overlay.layers && overlay.layers.verdicts) || [];
  const entries = overlay.byReviewer
    ? [...new Set(verdicts.map((v) => v.reviewer))].map((r) => [r, overlay.colourOfReviewer(r)])
    : Object.entries(VERDICT_COLOURS).map(([v, c]) => [VERDICT_TEXT[v], c]);
  legend.replaceChildren(...entries.map(([name, colour]) =>
    el("span", {class: "swatch"}, el("i", {style: `background:${colour}`}), name)));
  if (!entries.length) legend.textContent = "no verdicts on this slide yet";
}

// -- triage ------------------------------------------------------------------------------------
function queueUrl(version) {
  const query = new URLSearchParams();
  if (triage.slideId) query.set("slide", triage.slideId);
  if (version) query.set("version", version);
  return `/api/queue?${query}`;
}

async function loadQueue(version) {
  const entries = await api(queueUrl(version));
  triage.entries = entries;
  triage.version = entries.length ? entries[0].model_version_id : (version || session.model_version);
  // done: this reviewer may not judge it (judged, or read by enough others); open items carry no verdict
  triage.verdicts = new Map(entries.filter((e) => e.done).map((e) => [e.patch_id, e.verdict]));
  triage.skipped.clear();
  triage.claimed.clear();
  triage.newer = null;
  if (entries.length) await claim();
  const next = await nextClaimed(0);
  if (!entries.length) {
    finish("Nothing queued here. Run `wsireview retrain` to train a model and queue patches.");
  } else if (next === null) {
    finish();
  } else {
    await showEntry(next);
  }
}

function pending(i) {
  const id = triage.entries[i].patch_id;
  return triage.claimed.has(id) && !triage.verdicts.has(id) && !triage.skipped.has(id);
}

function toJudge() {
  return [...triage.claimed].filter((id) => !triage.verdicts.has(id) && !triage.skipped.has(id)).length;
}

// Renew this reviewer's claims and top them up; read the team's progress and the newest model version.
async function claim(first = []) {
  if (!triage.version) return false;
  const answer = await api("/api/claims", {method: "POST", body: JSON.stringify({
    model_version_id: triage.version, slide: triage.slideId ? Number(triage.slideId) : null,
    exclude: [...triage.skipped], first})});
  if (answer.model_version_id !== triage.version) return false;  // the page has moved to another queue
  triage.claimed = new Set(answer.claimed);
  triage.progress = answer.progress;
  const known = new Set(triage.entries.map((e) => e.patch_id));
  if (answer.claimed.some((id) => !known.has(id))) {  // freed by another reviewer since the queue was read
    triage.entries = await api(queueUrl(triage.version));
    for (const e of triage.entries) if (e.verdict) triage.verdicts.set(e.patch_id, e.verdict);
  }
  if (answer.latest_model_version > triage.version && answer.latest_model_version !== triage.newer) {
    triage.newer = answer.latest_model_version;
    banner(`A newer model, v${triage.newer}, has queued patches (this is v${triage.version}'s queue): ` +
      "press N (shift+n) to switch to its queue.");
  }
  if (!triage.renewTimer) triage.renewTimer = setInterval(() => claim().catch(() => {}), answer.renew_every_seconds * 1000);
  if (triage.index !== null) showEntryInfo(triage.entries[triage.index]);
  return toJudge() > 0;
}

// The next claimed patch to judge from ``start``; when none is left, top the claims up once and look again.
async function nextClaimed(start) {
  if (!triage.entries.length) return null;
  let next = nextPending(start % triage.entries.length);
  if (next === null && await claim()) next = nextPending(start % triage.entries.length);
  return next;
}

async function switchToNewest() {
  if (!triage.newer) {
    lastAction("this is the newest model's queue");
    return;
  }
  const newer = triage.newer;
  await api("/api/claims/release", {method: "POST", body: "{}"});
  banner("");
  await loadQueue(newer);
  lastAction(`now reviewing model v${newer}'s queue`);
}

function nextPending(start) {
  const n = triage.entries.length;
  for (let k = 0; k < n; k++) {
    const i = (start + k) % n;
    if (pending(i)) return i;
  }
  return null;
}

function upcoming(after, count) {
  const out = [], n = triage.entries.length;
  for (let k = 1; k < n && out.length < count; k++) {
    const i = (after + k) % n;
    if (pending(i)) out.push(i);
  }
  return out;
}

// The field shown around a patch: the patch at full resolution (1 screen pixel per level-0 pixel)
// where the screen allows, with at least its 8 neighbours visible.
function field(entry, factor = 1) {
  const box = viewer.container.getBoundingClientRect();
  const side = Math.max(3 * entry.size, Math.min(box.width, box.height)) * factor;
  return {x: entry.x + entry.size / 2 - side / 2, y: entry.y + entry.size / 2 - side / 2, side};
}

function fitField(f) {
  const item = viewer.world.getItemAt(0);
  viewer.viewport.fitBounds(item.imageToViewportRectangle(f.x, f.y, f.side, f.side), true);
}

async function showEntry(i) {
  const move = ++triage.moves;
  triage.index = i;
  triage.shown = false;  // no verdict until the patch is on screen
  triage.context = false;
  const entry = triage.entries[i];
  await openSlide(entry.slide_id);
  if (move !== triage.moves) return;  // overtaken by a newer move
  overlay.focus = {x: entry.x, y: entry.y, size: entry.size};
  fitField(field(entry));
  overlay.draw();
  triage.shownAt = performance.now();
  triage.shown = true;
  showEntryInfo(entry);
  readAhead(i);
}

function showEntryInfo(entry) {
  document.getElementById("title").textContent =
    `Triage ${triage.slideId && triage.entries.length ? triage.entries[0].slide_name : "all slides"}`;
  const p = triage.progress;
  document.getElementById("progress").textContent =
    (p ? p.text : "") + (triage.skipped.size ? `, ${triage.skipped.size} skipped` : "") +
    (triage.version ? ` · model v${triage.version}` + (triage.newer ? ` (v${triage.newer} out: N)` : "") : "");
  fillList(document.getElementById("patch-info"), entry ? [
    ["slide", entry.slide_name],
    ["label", `${entry.slide_label || "-"}  P ${fixed(entry.slide_probability)}`],
    ["why", REASON_TEXT[entry.reason] || entry.reason],
    ["attention", `rank ${entry.attention_rank ?? "-"}  P(lesion) ${fixed(entry.probability)}`],
    ["at", `${entry.x.toLocaleString()}, ${entry.y.toLocaleString()} (${entry.size} px)`],
    ["view", triage.context ? "8x wider context (c: back)" : "patch at full resolution"],
  ] : []);
}

// Fetch the tiles the next patches will show, at the levels the viewer will ask for.
async function readAhead(i) {
  for (const k of upcoming(i, READ_AHEAD)) {
    const entry = triage.entries[k];
    let info;
    try { info = await slideInfo(entry.slide_id); } catch (e) { continue; }
    const f = field(entry);
    const box = viewer.container.getBoundingClientRect();
    const screenPerLevel0 = Math.min(box.width, box.height) / f.side;
    const top = info.dz_levels - 1;
    const wanted = top + Math.ceil(Math.log2(Math.max(screenPerLevel0 * (window.devicePixelRatio || 1), 1e-6)));
    for (const level of [wanted, wanted - 1]) {
      if (level < 0 || level > top) continue;
      const scale = Math.pow(2, level - top);
      const size = info.tile_size;
      const c0 = Math.max(0, Math.floor(f.x * scale / size)), c1 = Math.floor((f.x + f.side) * scale / size);
      const r0 = Math.max(0, Math.floor(f.y * scale / size)), r1 = Math.floor((f.y + f.side) * scale / size);
      const cols = Math.ceil(info.width * scale / size), rows = Math.ceil(info.height * scale / size);
      for (let c = c0; c <= Math.min(c1, cols - 1); c++) {
        for (let r = r0; r <= Math.min(r1, rows - 1); r++) {
          new Image().src = `/dz/${info.id}_files/${level}/${c}_${r}.jpeg`;
        }
      }
    }
  }
}

async function giveVerdict(verdict) {
  if (triage.index === null || triage.busy || !triage.shown) return;
  const entry = triage.entries[triage.index];
  const seconds = (performance.now() - triage.shownAt) / 1000;
  triage.busy = true;
  try {
    await api("/api/reviews", {method: "POST", body: JSON.stringify({
      patch_id: entry.patch_id, verdict, seconds, model_version_id: entry.model_version_id})});
  } catch (error) {
    banner(`The verdict was not saved: ${error.message}`);
    return;
  } finally {
    triage.busy = false;
  }
  if (!triage.newer) banner("");
  triage.verdicts.set(entry.patch_id, verdict);
  triage.sessionVerdicts += 1;
  if (triage.progress) {  // counted at once; the next claim reads the team's counts again
    triage.progress.you += 1;
    if ((entry.reads || 1) <= 1) triage.progress.reviewed_by_team += 1;  // a double read: counted when read again
    triage.progress.text = `you ${triage.progress.you} · team ${triage.progress.reviewed_by_team}/${triage.progress.queued} reviewed`;
  }
  if (toJudge() <= REFILL_AT) claim().catch(() => {});
  lastAction(`${VERDICT_TEXT[verdict]} in ${seconds.toFixed(1)} s`, verdict);
  refreshOverlays();
  await advance(triage.index + 1);
}

async function advance(start) {
  const move = ++triage.moves;
  const next = await nextClaimed(start);
  if (move !== triage.moves) return;  // overtaken by a newer move
  if (next === null) finish();
  else await showEntry(next);
}

function skip() {
  if (triage.index === null || triage.busy || !triage.shown) return;
  const id = triage.entries[triage.index].patch_id;
  triage.skipped.add(id);
  api("/api/claims/release", {method: "POST", body: JSON.stringify({patch_ids: [id]})}).catch(() => {});
  lastAction("skipped, not recorded");
  advance(triage.index + 1);
}

async function undo() {
  if (triage.busy) return;
  triage.moves += 1;  // a move to the next patch still under way gives way to the undone patch
  const result = await api("/api/undo", {method: "POST"});
  if (!result.undone) {
    lastAction("nothing to undo");
    return;
  }
  refreshOverlays();
  const i = triage.entries.findIndex((e) => e.patch_id === result.undone.patch_id);
  if (i < 0) {
    lastAction(`undid ${VERDICT_TEXT[result.undone.verdict]} on patch ${result.undone.patch_id} (not in this queue)`);
    return;
  }
  triage.verdicts.delete(result.undone.patch_id);
  triage.skipped.delete(result.undone.patch_id);
  // Undone: held again before anyone else may take it (and the counts are read again).
  await claim([result.undone.patch_id]).catch(() => {});
  triage.claimed.add(result.undone.patch_id);
  triage.sessionVerdicts = Math.max(0, triage.sessionVerdicts - 1);
  lastAction(`undid ${VERDICT_TEXT[result.undone.verdict]}`);
  banner("");
  await showEntry(i);
}

function toggleContext() {
  if (triage.index === null) return;
  const entry = triage.entries[triage.index];
  triage.context = !triage.context;
  fitField(field(entry, triage.context ? CONTEXT_FACTOR / 3 : 1));
  showEntryInfo(entry);
}

function finish(message) {
  triage.index = null;
  overlay.focus = null;
  overlay.draw();
  showEntryInfo(null);
  const skipped = triage.skipped.size;
  banner(message || `Queue done: ${triage.sessionVerdicts} verdicts here` +
    (skipped ? `, ${skipped} skipped (reload to see them again)` : "") +
    ". Run `wsireview retrain` to learn from them and queue the next patches.");
}

function lastAction(text, verdict) {
  const node = document.getElementById("last-action");
  node.textContent = text;
  node.className = verdict ? `verdict-text ${verdict}` : "dim";
}

// -- keys and buttons ----------------------------------------------------------------------------
function toggleHelp(force) {
  const help = document.getElementById("help");
  help.hidden = force !== undefined ? !force : !help.hidden;
}

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.target.tagName === "INPUT" && event.target.type !== "range") return;
  const key = event.key;
  let handled = true;
  if (key === "?") toggleHelp();
  else if (key === "Escape") {
    if (!document.getElementById("help").hidden) toggleHelp(false);
    else location.href = "/";
  } else if (triage.on && VERDICT_KEYS[key]) giveVerdict(VERDICT_KEYS[key]);
  else if (triage.on && (key === "z" || key === "Backspace")) undo();
  else if (triage.on && key === " ") skip();
  else if (triage.on && key === "c") toggleContext();
  else if (triage.on && key === "N") switchToNewest();
  else if (LAYER_KEYS[key]) toggleLayer(LAYER_KEYS[key]);
  else if (key === "V") { overlay.byReviewer = !overlay.byReviewer; syncLayerButtons(); overlay.draw(); }
  else if (key === "[") setThreshold(overlay.threshold - 0.05);
  else if (key === "]") setThreshold(overlay.threshold + 0.05);
  else if (key === "r" && !triage.on && slide) location.href = `/review?slide=${slide.id}`;
  else handled = false;
  if (handled) event.preventDefault();
});

for (const button of document.querySelectorAll("button.layer")) {
  button.addEventListener("click", () => toggleLayer(button.dataset.layer));
}
document.getElementById("by-reviewer").addEventListener("click", () => {
  overlay.byReviewer = !overlay.byReviewer;
  syncLayerButtons();
  overlay.draw();
});
document.getElementById("threshold").addEventListener("input", (event) => setThreshold(Number(event.target.value)));
for (const button of document.querySelectorAll("button.verdict")) {
  button.addEventListener("click", () => giveVerdict(button.dataset.verdict));
}
document.getElementById("undo").addEventListener("click", () => undo());
document.getElementById("skip").addEventListener("click", () => skip());
document.getElementById("context").addEventListener("click", () => toggleContext());
document.getElementById("help-button").addEventListener("click", () => toggleHelp());
document.getElementById("help").addEventListener("click", () => toggleHelp(false));
for (const button of document.querySelectorAll("button")) button.addEventListener("mouseup", () => button.blur());

// Verdicts made elsewhere (the terminal app, another browser) show when this page gets the focus.
window.addEventListener("focus", async () => {
  refreshOverlays().catch(() => {});
  if (!triage.on || triage.index === null) return;
  const fresh = await api(queueUrl(triage.version));
  for (const e of fresh) if (e.done) triage.verdicts.set(e.patch_id, e.verdict);
  await claim();
  if (!pending(triage.index)) await advance(triage.index + 1);
  else showEntryInfo(triage.entries[triage.index]);
});

async function start() {
  session = await api("/api/session");
  document.getElementById("session").textContent =
    `reviewer ${session.reviewer} · ${session.model_version ? "model v" + session.model_version : "no model yet"}`;
  setThreshold(overlay.threshold);
  syncLayerButtons();
  if (triage.on) {
    document.getElementById("triage").hidden = false;
    overlay.shown.queue = true;
    overlay.shown.verdicts = true;
    syncLayerButtons();
    await loadQueue();
  } else {
    const id = Number(location.pathname.split("/").pop());
    await openSlide(id);
  }
}

// Leaving the page gives this reviewer's claims back to the team (keepalive: the request outlives the page).
window.addEventListener("pagehide", () => {
  if (triage.on && triage.claimed.size) {
    fetch("/api/claims/release", {method: "POST", keepalive: true, credentials: "same-origin",
      headers: {"X-WSIReview": "1", "Content-Type": "application/json"}, body: "{}"});
  }
});

start().catch((error) => banner(error.message));
