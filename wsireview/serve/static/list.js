"use strict";
// The slide list: name, label, prediction, queued / reviewed counts and a thumbnail per ready slide.

async function loadSlides() {
  const [session, slides] = await Promise.all([api("/api/session"), api("/api/slides")]);
  document.getElementById("session").textContent =
    `reviewer ${session.reviewer} · ${session.model_version ? "model v" + session.model_version : "no model yet"}`;
  const queued = slides.reduce((sum, s) => sum + s.queued, 0);
  document.getElementById("review-all").textContent = `Review the queue (${queued})`;
  const body = document.querySelector("#slides tbody");
  body.replaceChildren();
  for (const s of slides) {
    const thumb = s.thumbnail ? el("img", {src: s.thumbnail, alt: "", loading: "lazy"}) : "";
    const row = el("tr", {"data-search": `${s.name} ${s.label || ""}`.toLowerCase()},
      el("td", {class: "thumb"}, el("a", {href: `/slides/${s.id}`}, thumb)),
      el("td", {}, el("a", {href: `/slides/${s.id}`, class: "slide-link", text: s.name})),
      el("td", {text: s.label || "-"}),
      el("td", {text: fixed(s.probability)}),
      el("td", {text: s.width ? `${s.width.toLocaleString()} x ${s.height.toLocaleString()}` : "-"}),
      el("td", {text: s.mpp ? s.mpp.toFixed(3) : "unknown"}),
      el("td", {text: s.patches}),
      el("td", {text: s.queued}),
      el("td", {text: s.reviewed}),
      el("td", {}, s.queued ? el("a", {href: `/review?slide=${s.id}`, text: "review"}) : ""),
    );
    body.append(row);
  }
  const message = document.getElementById("message");
  message.textContent = slides.length ? "" : "No ready slides in the catalog: add slides with `wsireview add`.";
  document.getElementById("slides").hidden = !slides.length;
}

function applyFilter() {
  const words = document.getElementById("filter").value.toLowerCase().trim();
  for (const row of document.querySelectorAll("#slides tbody tr")) {
    row.hidden = words !== "" && !row.dataset.search.includes(words);
  }
}

document.getElementById("filter").addEventListener("input", applyFilter);
document.addEventListener("keydown", (event) => {
  if (event.key === "/" && document.activeElement.tagName !== "INPUT") {
    event.preventDefault();
    document.getElementById("filter").focus();
  } else if (event.key === "r" && document.activeElement.tagName !== "INPUT") {
    location.href = "/review";
  }
});
window.addEventListener("focus", () => loadSlides().catch(() => {}));
loadSlides().catch((error) => {
  document.getElementById("message").textContent = `cannot load the slides: ${error.message}`;
});
