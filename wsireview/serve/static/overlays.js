"use strict";
// Overlays drawn on one canvas over OpenSeadragon, in level-0 pixels: the canvas transform maps a
// level-0 pixel to the screen at the current zoom, so every layer stays on the tissue.

const VERDICT_COLOURS = {lesion: "#e53935", not_lesion: "#43a047", unsure: "#fdd835", artifact: "#d020d0"};
const REVIEWER_COLOURS = ["#1e88e5", "#fb8c00", "#8e24aa", "#00897b", "#c0ca33", "#6d4c41", "#e91e63", "#546e7a"];
// Attention colours: dark purple (low) to yellow (high), stops of matplotlib's "inferno".
const INFERNO = [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]];

function inferno(value) {
  const t = Math.min(1, Math.max(0, value)) * (INFERNO.length - 1);
  const i = Math.min(INFERNO.length - 2, Math.floor(t));
  const f = t - i;
  const c = INFERNO[i].map((v, k) => Math.round(v + (INFERNO[i + 1][k] - v) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

class OverlayCanvas {
  constructor(viewer) {
    this.viewer = viewer;
    this.canvas = document.createElement("canvas");
    this.canvas.id = "overlay-canvas";
    viewer.canvas.appendChild(this.canvas);
    this.ctx = this.canvas.getContext("2d");
    this.slide = null;
    this.layers = null;
    this.mask = null;       // the tissue mask tinted once on an offscreen canvas
    this.shown = {mask: false, heatmap: false, grid: false, queue: false, verdicts: false};
    this.byReviewer = false;
    this.threshold = 0.2;
    this.focus = null;      // the patch under triage: {x, y, size}
    this.reviewerColour = new Map();
    const redraw = () => this.draw();
    viewer.addHandler("update-viewport", redraw);
    viewer.addHandler("resize", redraw);
  }

  setSlide(slide, layers) {
    this.slide = slide;
    this.layers = layers;
    this.mask = null;
    this.reviewerColour.clear();
    if (slide.mask) this.loadMask(slide.mask, slide.id);
    this.draw();
  }

  setLayers(layers) {
    this.layers = layers;
    this.draw();
  }

  loadMask(url, slideId) {
    const image = new Image();
    image.onload = () => {
      if (!this.slide || this.slide.id !== slideId) return;
      const off = document.createElement("canvas");
      off.width = image.width;
      off.height = image.height;
      const c = off.getContext("2d");
      c.drawImage(image, 0, 0);
      const pixels = c.getImageData(0, 0, off.width, off.height);
      const d = pixels.data;
      for (let i = 0; i < d.length; i += 4) {  // tissue (white in the mask): cyan; glass: clear
        const tissue = d[i] > 127;
        d[i] = 0; d[i + 1] = 200; d[i + 2] = 255; d[i + 3] = tissue ? 90 : 0;
      }
      c.putImageData(pixels, 0, 0);
      this.mask = off;
      this.draw();
    };
    image.src = url;
  }

  colourOfReviewer(name) {
    if (!this.reviewerColour.has(name)) {
      this.reviewerColour.set(name, REVIEWER_COLOURS[this.reviewerColour.size % REVIEWER_COLOURS.length]);
    }
    return this.reviewerColour.get(name);
  }

  // Screen pixels per level-0 pixel and the level-0 point at the canvas origin.
  transform() {
    const item = this.viewer.world.getItemAt(0);
    if (!item) return null;
    const origin = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, 0));
    const unit = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(1000, 0));
    return {scale: (unit.x - origin.x) / 1000, ox: origin.x, oy: origin.y};
  }

  draw() {
    const canvas = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const width = this.viewer.container.clientWidth, height = this.viewer.container.clientHeight;
    if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(height * dpr);
      canvas.style.width = `${width}px`;
      canvas.style.height = `${height}px`;
    }
    const ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const t = this.transform();
    if (!t || !this.slide) return;
    ctx.setTransform(dpr * t.scale, 0, 0, dpr * t.scale, dpr * t.ox, dpr * t.oy);
    const px = 1 / t.scale;  // one screen pixel, in level-0 pixels
    // The visible part of the slide in level-0 pixels: patches outside it are not drawn.
    const view = {x0: -t.ox * px, y0: -t.oy * px, x1: (width - t.ox) * px, y1: (height - t.oy) * px};

    if (this.shown.mask && this.mask) {
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(this.mask, 0, 0, this.slide.width, this.slide.height);
    }
    const p = this.layers && this.layers.patches;
    if (p) {
      const visible = (i) => p.x[i] + p.size[i] >= view.x0 && p.x[i] <= view.x1 &&
                             p.y[i] + p.size[i] >= view.y0 && p.y[i] <= view.y1;
      if (this.shown.heatmap) {
        ctx.globalAlpha = 0.5;
        for (let i = 0; i < p.id.length; i++) {
          const a = p.attention[i];
          if (a === null || a < this.threshold || !visible(i)) continue;
          ctx.fillStyle = inferno(a);
          ctx.fillRect(p.x[i], p.y[i], p.size[i], p.size[i]);
        }
        ctx.globalAlpha = 1;
      }
      if (this.shown.grid && p.size.length && p.size[0] * t.scale >= 3) {
        ctx.strokeStyle = "rgba(20, 20, 20, 0.45)";
        ctx.lineWidth = px;
        ctx.beginPath();
        for (let i = 0; i < p.id.length; i++) {
          if (visible(i)) ctx.rect(p.x[i], p.y[i], p.size[i], p.size[i]);
        }
        ctx.stroke();
      }
      const index = new Map(p.id.map((id, i) => [id, i]));
      if (this.shown.verdicts) {
        for (const v of this.layers.verdicts) {
          const i = index.get(v.patch_id);
          if (i === undefined || !visible(i)) continue;
          const colour = this.byReviewer ? this.colourOfReviewer(v.reviewer) : VERDICT_COLOURS[v.verdict];
          ctx.fillStyle = colour;
          ctx.globalAlpha = 0.35;
          ctx.fillRect(p.x[i], p.y[i], p.size[i], p.size[i]);
          ctx.globalAlpha = 1;
          ctx.strokeStyle = colour;
          ctx.lineWidth = 2 * px;
          ctx.strokeRect(p.x[i], p.y[i], p.size[i], p.size[i]);
        }
      }
      if (this.shown.queue) {
        ctx.strokeStyle = "#00e5ff";
        ctx.lineWidth = 2 * px;
        ctx.fillStyle = "#00e5ff";
        ctx.font = `${12 * px}px sans-serif`;
        this.layers.queued.forEach((patchId, rank) => {
          const i = index.get(patchId);
          if (i === undefined || !visible(i)) return;
          ctx.strokeRect(p.x[i], p.y[i], p.size[i], p.size[i]);
          if (p.size[i] * t.scale >= 24) ctx.fillText(`${rank + 1}`, p.x[i] + 3 * px, p.y[i] + 13 * px);
        });
      }
    }
    if (this.focus) {
      const f = this.focus;
      ctx.strokeStyle = "#ffeb3b";
      ctx.lineWidth = 3 * px;
      ctx.strokeRect(f.x - 2 * px, f.y - 2 * px, f.size + 4 * px, f.size + 4 * px);
    }
  }
}
