"use strict";
// Shared by the pages: JSON requests to the viewer's API and small formatting helpers.

async function api(path, options = {}) {
  const init = Object.assign({credentials: "same-origin"}, options);
  init.headers = Object.assign({"X-WSIReview": "1"}, options.body ? {"Content-Type": "application/json"} : {});
  const response = await fetch(path, init);
  let data = {};
  try { data = await response.json(); } catch (e) { /* a body that is not JSON: the status says it */ }
  if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
  return data;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function fixed(value, digits = 2) {
  return value === null || value === undefined ? "-" : Number(value).toFixed(digits);
}

function fillList(dl, rows) {
  dl.replaceChildren();
  for (const [term, value] of rows) {
    dl.append(el("dt", {text: term}), el("dd", {text: value}));
  }
}
