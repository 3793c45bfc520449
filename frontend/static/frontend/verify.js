// The verify page (engine/verification.py): two checks by people, after the review.
//
// Masks: the masks of the semi-automatic and automatic stages (all, or the project's sample),
// one at a time on their image: good (G) or bad (B); F fixes it on the annotation page and
// comes back to judge it; S skips it for this sitting. Masks of one image follow each other.
// Images: each annotated image whose masks are verified, with all its masks drawn: is every
// object masked? Y marks it complete; N (or a click on the image) starts marking the places
// of the missed objects, and Enter sends the image back to annotation with them as hints.
//
// The seconds spent on each item are measured here (only while the tab is visible) and stored
// with the decision. Below, the figures of GET verification/summary/, after every decision.
//
// From annotate/: api.js (REST), rle.js (COCO RLE), viewport.js (canvas, zoom, pan),
// layers.js (all the masks of an image), mask-overlay.js (the one mask under judgement),
// verification-marks.js (the pins of missed objects); queue-page.js: what this page shares
// with the review page.

import { api, ApiError, listAll } from "./annotate/api.js";
import { maskColor, SavedLayer } from "./annotate/layers.js";
import { MaskOverlay } from "./annotate/mask-overlay.js";
import { decodeCountsString, decodeMask } from "./annotate/rle.js";
import { drawOldPin, drawPin } from "./annotate/verification-marks.js";
import { Viewport } from "./annotate/viewport.js";
import {
  $,
  bindButtons,
  bindPanZoom,
  fmt,
  frameBox,
  loadPhoto,
  plural,
  ringIfSmall,
  say,
  score,
  shortcutKey,
  toPage,
  trim,
  ZOOM_KEYS,
} from "./queue-page.js";

const MODES = ["mask", "exhaustivity"];

/** Shortcut keys per mode; typing in the note field and Ctrl/Alt combinations are left alone. */
const KEYS = {
  mask: {
    g: (app) => app.judgeMask("good"),
    b: (app) => app.judgeMask("bad"),
    f: (app) => app.fix(),
    s: (app) => app.skip(),
    h: (app) => app.toggleMasks(),
    z: (app) => app.toggleZoom(),
  },
  exhaustivity: {
    y: (app) => app.answerYes(),
    n: (app) => app.startMarking(),
    Enter: (app) => app.sendBack(),
    Escape: (app) => app.cancelMarking(),
    Backspace: (app) => app.removeLastPoint(),
    s: (app) => app.skip(),
    h: (app) => app.toggleMasks(),
  },
  any: ZOOM_KEYS,
};

/** Seconds on the item shown, counted only while the page is visible. */
class Clock {
  constructor() {
    this.total = 0;
    this.since = null;
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) this.pause();
      else if (this.running) this.resume();
    });
  }

  start() {
    this.total = 0;
    this.running = true;
    this.since = document.hidden ? null : performance.now();
  }

  stop() {
    this.pause();
    this.running = false;
  }

  pause() {
    if (this.since !== null) this.total += performance.now() - this.since;
    this.since = null;
  }

  resume() {
    if (this.since === null) this.since = performance.now();
  }

  seconds() {
    const extra = this.since !== null ? performance.now() - this.since : 0;
    return (this.total + extra) / 1000;
  }
}

class Verifier {
  constructor(config) {
    this.config = config;
    this.api = config.urls.api;
    this.storageKey = `maskloop-verify-${config.project.id}`;
    this.skipped = readKept(this.storageKey); // {mask: [ids], exhaustivity: [ids]}, this tab
    this.mode = config.mode;
    this.item = null; // what GET verification/next/ gave: {kind, image, mask | masks}
    this.photo = null;
    this.loading = false;
    this.empty = false;
    this.busy = false; // a decision on its way to the server
    this.showMasks = true;
    this.zoomed = false;
    this.marking = false; // exhaustivity "no": clicks mark the missed objects
    this.points = []; // [[x, y], ...] in image pixels
    this.previousHints = []; // places an earlier check marked on this image
    this.summary = null;
    this.generation = 0;
    this.versions = new Map();
    this.photos = new Map();
    this.clock = new Clock();
    this.overlay = new MaskOverlay();
    this.layer = null; // SavedLayer of the image's masks (images mode)
    this.viewport = new Viewport($("canvas"), (ctx, vp) => this.draw(ctx, vp));
  }

  async start() {
    this.bind();
    const params = new URLSearchParams(window.location.search);
    const fixed = Number(params.get("fixed"));
    window.history.replaceState(null, "", `${window.location.pathname}?mode=${this.mode}`);
    await this.loadVersions();
    this.refreshSummary();
    window.setInterval(() => this.tick(), 1000);
    if (fixed && this.mode === "mask" && (await this.showFixed(fixed))) return;
    await this.next();
  }

  async loadVersions() {
    try {
      for (const version of await listAll(`${this.api}model-versions/`)) {
        this.versions.set(version.id, version);
      }
    } catch (error) {
      this.say(`The model versions could not be loaded: ${error.message}`, "warn");
    }
  }

  // ---------------------------------------------------------------- what is shown

  setMode(mode) {
    if (!MODES.includes(mode) || mode === this.mode || this.busy) return;
    this.mode = mode;
    this.cancelMarking({ quiet: true });
    this.zoomed = false;
    this.image = null;
    window.history.replaceState(null, "", `${window.location.pathname}?mode=${mode}`);
    this.say("");
    this.next();
  }

  /** Ask for the next mask (another of the same image first) or image, and show it. */
  async next() {
    const generation = this.begin();
    const params = new URLSearchParams({ kind: this.mode });
    const skipped = this.skipped[this.mode];
    if (skipped.length) params.set("exclude", skipped.join(","));
    if (this.mode === "mask" && this.lastImage) params.set("image", String(this.lastImage));
    try {
      const item = await api(`${this.api}verification/next/?${params}`);
      if (generation !== this.generation) return;
      if (item === null) this.showEmpty();
      else await this.show(item, generation);
    } catch (error) {
      if (generation !== this.generation) return;
      this.failed(`The next item could not be loaded: ${error.message}`);
    }
  }

  /** Back from fixing a mask on the annotation page: show it again to be judged. */
  async showFixed(id) {
    try {
      const mask = await api(`${this.api}masks/${id}/`);
      if (mask.verification_state !== "unverified") return false;
      const image = await api(`${this.api}images/${mask.image}/`);
      await this.show({ kind: "mask", mask, image }, this.begin());
      this.say(`Your fix of mask #${id} is saved: G verifies it as it is now.`, "ok");
      return true;
    } catch {
      return false;
    }
  }

  /** Forget what is shown; returns the generation of what comes next. */
  begin() {
    this.generation += 1;
    this.clock.stop();
    this.item = null;
    this.loading = true;
    this.empty = false;
    this.points = [];
    this.previousHints = [];
    this.marking = false;
    $("empty").hidden = true;
    $("loading").hidden = false;
    $("loading").querySelector("span").textContent =
      this.mode === "mask" ? "Loading the next mask…" : "Loading the next image…";
    this.refresh();
    return this.generation;
  }

  async show(item, generation) {
    const image = item.image;
    const [photo, previous] = await Promise.all([
      this.loadPhoto(image.id),
      item.kind === "exhaustivity" ? this.loadPreviousHints(image.id) : [],
    ]);
    if (generation !== this.generation) return;
    const { width, height } = image;
    if (item.kind === "mask") {
      const [h, w] = item.mask.segmentation.size;
      this.overlay.set(decodeMask(item.mask.segmentation.counts, h, w), w, h);
    } else {
      this.layer = new SavedLayer(width, height);
      this.layer.render(
        item.masks.map((mask) => ({
          runs: runsOf(mask.segmentation.counts),
          rgb: maskColor(mask.id),
          look: "normal",
        })),
      );
    }
    const sameImage = this.image && this.image.id === image.id;
    this.item = item;
    this.image = image;
    this.photo = photo;
    this.previousHints = previous;
    this.lastImage = image.id;
    this.loading = false;
    $("loading").hidden = true;
    if (!sameImage) this.viewport.setImageSize(width, height);
    this.frame(this.zoomed && item.kind === "mask");
    this.clock.start();
    this.refresh();
  }

  showEmpty() {
    this.loading = false;
    this.empty = true;
    this.image = null;
    this.photo = null;
    $("loading").hidden = true;
    const skipped = this.skipped[this.mode].length;
    const masks = this.mode === "mask";
    const figures = this.summary;
    $("empty-title").textContent = masks ? "No mask left to verify" : "No image left to check";
    let text = masks
      ? "Every model mask of the annotated images has its verdict."
      : "Every annotated image whose masks are verified has been checked.";
    if (skipped) text += ` ${plural(skipped, masks ? "mask" : "image")} skipped in this sitting.`;
    if (!masks && figures && figures.images.waiting) {
      text += ` ${plural(figures.images.waiting, "image")} still wait${figures.images.waiting === 1 ? "s" : ""} for mask verdicts.`;
    }
    $("empty-text").textContent = text;
    $("unskip").hidden = !skipped;
    $("unskip").textContent = `Show the ${plural(skipped, masks ? "skipped mask" : "skipped image")}`;
    const other = masks ? figures && figures.images.pending : figures && figures.masks.pending;
    $("switch-mode").hidden = !other;
    $("switch-mode").textContent = masks
      ? `Check the images (${fmt(other || 0)} ready)`
      : `Verify the masks (${fmt(other || 0)} to go)`;
    $("empty").hidden = false;
    this.refresh();
  }

  failed(text) {
    this.loading = false;
    $("loading").querySelector("span").textContent = "Nothing could be loaded.";
    this.say(text, "error");
    this.refresh();
  }

  loadPhoto(id) {
    return loadPhoto(this.photos, this.config.urls.file, id);
  }

  /** The places an earlier exhaustivity check of this image marked (to see they are done). */
  async loadPreviousHints(id) {
    try {
      const feedback = await api(`${this.api}verification/feedback/?image=${id}`);
      return feedback.hints ? feedback.hints.points : [];
    } catch {
      return [];
    }
  }

  // ---------------------------------------------------------------- decisions

  async decide(body, done) {
    if (this.busy) return;
    this.busy = true;
    this.refresh();
    const seconds = Math.round(this.clock.seconds() * 100) / 100;
    try {
      const decision = await api(`${this.api}verification/`, {
        method: "POST",
        body: { ...body, seconds },
      });
      this.say(done(decision), "ok");
    } catch (error) {
      this.busy = false;
      if (error instanceof ApiError && error.status === 409) {
        this.say(`${error.message}: left as it is.`, "warn");
      } else {
        this.say(`Not saved: ${error.message}`, "error");
        this.refresh();
        return;
      }
    }
    this.busy = false;
    this.refreshSummary();
    await this.next();
  }

  judgeMask(verdict) {
    const item = this.item;
    if (!item || item.kind !== "mask") return;
    const id = item.mask.id;
    this.decide({ kind: "mask", mask: id, verdict }, () =>
      verdict === "good"
        ? `Mask #${id} is good.`
        : `Mask #${id} is bad: rejected; ${this.image.file_name} goes back to annotation.`,
    );
  }

  answerYes() {
    const item = this.item;
    if (!item || item.kind !== "exhaustivity") return;
    if (this.points.length) {
      this.say("Places are marked: Enter sends the image back, Esc forgets them.", "warn");
      return;
    }
    const image = this.image;
    this.decide({ kind: "exhaustivity", image: image.id, verdict: "yes" }, () => {
      return `${image.file_name} is complete.`;
    });
  }

  startMarking() {
    if (!this.item || this.item.kind !== "exhaustivity" || this.busy) return;
    this.marking = true;
    this.say("");
    this.refresh();
  }

  cancelMarking({ quiet = false } = {}) {
    if (!this.marking) return;
    this.marking = false;
    this.points = [];
    $("note").value = "";
    if (!quiet) this.say("No place marked.");
    this.refresh();
  }

  addPoint(x, y) {
    if (!this.image || this.busy) return;
    const { width, height } = this.image;
    if (x < 0 || y < 0 || x > width || y > height) return;
    this.marking = true;
    this.points.push([Math.round(x * 10) / 10, Math.round(y * 10) / 10]);
    this.refresh();
  }

  removeLastPoint() {
    if (!this.points.length) return;
    this.points.pop();
    this.refresh();
  }

  removePoint(index) {
    this.points.splice(index, 1);
    this.refresh();
  }

  sendBack() {
    const item = this.item;
    if (!item || item.kind !== "exhaustivity") return;
    if (!this.points.length) {
      this.startMarking();
      return;
    }
    const image = this.image;
    const count = this.points.length;
    const note = $("note").value.trim();
    this.decide(
      { kind: "exhaustivity", image: image.id, verdict: "no", points: this.points, note },
      () => `${image.file_name} goes back to annotation with ${plural(count, "place")} to mask.`,
    );
    $("note").value = "";
  }

  skip() {
    if (!this.item || this.busy) return;
    const id = this.item.kind === "mask" ? this.item.mask.id : this.item.image.id;
    this.skipped[this.mode].push(id);
    this.keep();
    this.say(`Skipped ${this.item.kind === "mask" ? "mask" : "image"} #${id}.`);
    this.next();
  }

  unskip() {
    this.skipped[this.mode] = [];
    this.keep();
    this.next();
  }

  /** The annotation page with this mask open for editing; saving there comes back here. */
  fix() {
    const item = this.item;
    if (!item || item.kind !== "mask" || this.busy) return;
    this.keep();
    window.location.assign(
      this.config.urls.fix
        .replace("{image}", String(item.mask.image))
        .replace("{mask}", String(item.mask.id)),
    );
  }

  keep() {
    window.sessionStorage.setItem(this.storageKey, JSON.stringify(this.skipped));
  }

  // ---------------------------------------------------------------- figures

  async refreshSummary() {
    try {
      this.summary = await api(`${this.api}verification/summary/`);
      this.renderSummary();
    } catch (error) {
      this.say(`The figures could not be loaded: ${error.message}`, "warn");
    }
  }

  renderSummary() {
    const { masks, images, decisions } = this.summary;
    $("count-masks").textContent = fmt(masks.pending);
    $("count-images").textContent = fmt(images.pending);
    $("fig-masks-pending").textContent = fmt(masks.pending);
    $("fig-masks-good").textContent = fmt(masks.good);
    $("fig-masks-bad").textContent = fmt(masks.bad);
    $("fig-masks-seconds").textContent = secondsText(masks.seconds_per_mask);
    $("fig-images-pending").textContent = fmt(images.pending);
    $("fig-images-waiting").textContent = fmt(images.waiting);
    $("fig-images-complete").textContent = fmt(images.complete);
    $("fig-images-sent-back").textContent = fmt(images.sent_back);
    $("fig-images-seconds").textContent = secondsText(images.seconds_per_image);
    const judged = masks.good + masks.bad;
    $("bar-good").style.flexGrow = String(masks.good);
    $("bar-bad").style.flexGrow = String(masks.bad);
    $("fig-masks-share").textContent = judged
      ? `${trim((masks.good / judged) * 100)}% of ${plural(judged, "verified mask")} good`
      : "No mask verified yet.";
    $("decision-count").textContent = `${plural(decisions, "decision")} recorded`;
  }

  // ---------------------------------------------------------------- view

  toggleMasks() {
    this.showMasks = !this.showMasks;
    const what = this.mode === "mask" ? "Mask" : "Masks";
    this.say(this.showMasks ? `${what} shown.` : `${what} hidden (H shows ${what === "Mask" ? "it" : "them"}).`);
    this.viewport.invalidate();
  }

  toggleZoom() {
    this.frame(!this.zoomed);
  }

  frame(zoomed) {
    this.zoomed = zoomed;
    if (!this.image) return;
    const item = this.item;
    if (!zoomed || !item || item.kind !== "mask") {
      this.viewport.fit();
      return;
    }
    frameBox(this.viewport, this.image, item.mask.bbox);
  }

  draw(ctx, vp) {
    if (!this.photo || !this.image || !this.item) return;
    vp.applyImageTransform(ctx);
    ctx.drawImage(this.photo, 0, 0, this.image.width, this.image.height);
    if (this.item.kind === "exhaustivity") {
      if (this.showMasks && this.layer) {
        ctx.imageSmoothingEnabled = vp.scale < 1;
        ctx.drawImage(this.layer.canvas, 0, 0);
        ctx.imageSmoothingEnabled = true;
      }
      vp.applyScreenTransform(ctx);
      this.previousHints.forEach(([x, y]) => drawOldPin(ctx, vp.toScreen(x, y)));
      this.points.forEach(([x, y], n) => drawPin(ctx, vp.toScreen(x, y), n + 1));
      return;
    }
    vp.applyScreenTransform(ctx);
    if (!this.showMasks) return;
    this.overlay.draw(ctx, vp);
    ringIfSmall(ctx, vp, this.item.mask.bbox);
  }

  tick() {
    const text = this.item && !this.busy ? `${Math.floor(this.clock.seconds())} s` : "—";
    $(this.mode === "mask" ? "mask-clock" : "image-clock").textContent = text;
  }

  /** Bring the panel and the buttons in line with the state. */
  refresh() {
    const root = $("verify");
    root.dataset.mode = this.mode;
    root.dataset.state = this.loading ? "loading" : this.empty ? "empty" : this.mode;
    root.classList.toggle("marking", this.marking);
    for (const mode of MODES) {
      $(`mode-${mode}`).setAttribute("aria-selected", String(mode === this.mode));
    }
    const item = this.item;
    const mask = item && item.kind === "mask" ? item.mask : null;
    const version = mask && this.versions.get(mask.model_version);
    $("mask-id").textContent = mask ? `#${mask.id}` : "";
    $("mask-source").textContent = mask ? sourceText(mask) : "—";
    $("mask-source").dataset.source = mask ? mask.source_stage : "";
    $("mask-image-name").textContent = mask && this.image ? this.image.file_name : "—";
    $("mask-iou").textContent = mask ? score(mask.predicted_iou) : "—";
    $("mask-stability").textContent = mask ? score(mask.stability_score) : "—";
    $("mask-version").textContent = version ? `v${version.number}` : mask ? "—" : "—";
    $("mask-area").textContent = mask ? `${fmt(mask.area)} px` : "—";
    $("mask-review").textContent = mask ? mask.review_state : "—";
    for (const id of ["good", "bad", "fix", "skip"]) $(id).disabled = !mask || this.busy;

    const checked = item && item.kind === "exhaustivity" ? item : null;
    const image = checked ? checked.image : null;
    const byModel = checked ? checked.masks.filter(isModelMask).length : 0;
    $("image-id").textContent = image ? `#${image.id}` : "";
    $("image-name").textContent = image ? image.file_name : "—";
    $("image-masks").textContent = checked ? plural(checked.masks.length, "mask") : "—";
    $("image-model-masks").textContent = checked ? fmt(byModel) : "—";
    $("image-people-masks").textContent = checked ? fmt(checked.masks.length - byModel) : "—";
    $("image-size").textContent = image ? `${image.width}×${image.height}` : "—";
    const previous = this.previousHints.length;
    $("previous-hints").hidden = !checked || !previous;
    $("previous-hints").textContent = previous
      ? `An earlier check marked ${plural(previous, "missed place")} (grey rings): are they masked now?`
      : "";
    for (const id of ["yes", "no", "skip-image"]) $(id).disabled = !checked || this.busy;
    $("yes").disabled = !checked || this.busy || this.points.length > 0;
    $("marking").hidden = !checked || !this.marking;
    $("answer-buttons").hidden = Boolean(checked && this.marking);
    $("send").disabled = !this.points.length || this.busy;
    $("cancel-marking").disabled = this.busy;
    this.renderPoints();
    $("stage-hint").textContent =
      this.mode === "mask"
        ? "H hides the mask · Z zooms to it · wheel zooms · drag pans"
        : this.marking
          ? "Click each missed object · Backspace takes the last back · Enter sends"
          : "Y every object is masked · N or a click marks a missed one · H hides the masks";
    this.tick();
    this.viewport.invalidate();
  }

  renderPoints() {
    const list = $("point-list");
    list.replaceChildren(
      ...this.points.map(([x, y], index) => {
        const row = document.createElement("li");
        const label = document.createElement("span");
        label.className = "point-label";
        label.textContent = `Missed object at ${Math.round(x)}, ${Math.round(y)}`;
        const remove = document.createElement("button");
        remove.type = "button";
        remove.className = "link-button";
        remove.textContent = "remove";
        remove.setAttribute("aria-label", `Remove place ${index + 1}`);
        remove.addEventListener("mousedown", (event) => event.preventDefault());
        remove.addEventListener("click", () => this.removePoint(index));
        row.append(label, remove);
        return row;
      }),
    );
    list.hidden = !this.points.length;
  }

  say(text, kind = "info") {
    say(text, kind);
  }

  // ---------------------------------------------------------------- input

  bind() {
    bindButtons($("verify"), {
      good: () => this.judgeMask("good"),
      bad: () => this.judgeMask("bad"),
      fix: () => this.fix(),
      skip: () => this.skip(),
      yes: () => this.answerYes(),
      no: () => this.startMarking(),
      "skip-image": () => this.skip(),
      send: () => this.sendBack(),
      "cancel-marking": () => this.cancelMarking(),
      unskip: () => this.unskip(),
      "switch-mode": () => this.setMode(this.mode === "mask" ? "exhaustivity" : "mask"),
      "mode-mask": () => this.setMode("mask"),
      "mode-exhaustivity": () => this.setMode("exhaustivity"),
    });
    window.addEventListener("keydown", (event) => this.onKeyDown(event));
    bindPanZoom($("canvas"), this.viewport, {
      enabled: () => Boolean(this.photo),
      // In the images mode a click (not a pan) marks a missed object there.
      onClick: (point, button) => {
        if (button !== 0 || this.mode !== "exhaustivity") return;
        if (!this.item || this.item.kind !== "exhaustivity") return;
        const at = this.viewport.toImage(point.x, point.y);
        this.addPoint(at.x, at.y);
      },
    });
  }

  onKeyDown(event) {
    const target = event.target;
    if (target instanceof HTMLInputElement) {
      // The note: Enter sends, Esc leaves the field; every other key is typing.
      if (event.key === "Enter") {
        event.preventDefault();
        target.blur();
        this.sendBack();
      } else if (event.key === "Escape") {
        target.blur();
      }
      return;
    }
    if (event.altKey || event.ctrlKey || event.metaKey || event.repeat) return;
    const key = shortcutKey(event);
    const keys = Object.hasOwn(KEYS[this.mode], key) ? KEYS[this.mode] : KEYS.any;
    if (!Object.hasOwn(keys, key)) return;
    const action = keys[key];
    event.preventDefault();
    action(this);
  }

  /** For tests and the browser console. */
  debugHandle() {
    return {
      state: () => ({
        mode: this.mode,
        kind: this.item ? this.item.kind : null,
        mask: this.item && this.item.kind === "mask" ? this.item.mask.id : null,
        image: this.item ? this.item.image.id : null,
        masks: this.item && this.item.kind === "exhaustivity" ? this.item.masks.length : null,
        loading: this.loading,
        empty: this.empty,
        busy: this.busy,
        marking: this.marking,
        points: this.points.map((p) => p.slice()),
        skipped: { mask: this.skipped.mask.slice(), exhaustivity: this.skipped.exhaustivity.slice() },
        shown: this.showMasks,
        zoomed: this.zoomed,
        seconds: this.clock.seconds(),
      }),
      toPage: (x, y) => toPage(this.viewport, x, y),
    };
  }
}

function runsOf(counts) {
  return typeof counts === "string" ? decodeCountsString(counts) : counts;
}

/** A mask the model made alone (no person saved it). */
function isModelMask(mask) {
  return (mask.source_stage === "automatic" || mask.source_stage === "semi") && !mask.created_by;
}

function sourceText(mask) {
  if (mask.source_stage === "automatic") return "automatic";
  return mask.created_by ? `semi · ${mask.created_by}` : "semi · pre-filled";
}

function readKept(key) {
  const ids = (list) => (Array.isArray(list) ? list.filter(Number.isInteger) : []);
  try {
    const kept = JSON.parse(window.sessionStorage.getItem(key) || "{}");
    return { mask: ids(kept.mask), exhaustivity: ids(kept.exhaustivity) };
  } catch {
    return { mask: [], exhaustivity: [] };
  }
}

function secondsText(value) {
  return value === null || value === undefined ? "—" : `${trim(value)} s`;
}

const verifier = new Verifier(JSON.parse($("verify-config").textContent));
window.maskloop = verifier.debugHandle();
verifier.start();
