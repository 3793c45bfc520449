// The review page: the masks the model made alone, one at a time and drawn at random (a fair
// sample for the figures), each shown on its image. The reviewer accepts it, rejects it, skips
// it, or fixes it on the annotation page (which saves it as "fixed" and comes back here).
// Below, the quality figures per model version (engine/review.py), refreshed after each
// decision, beside what the SA paper measured.
//
// From annotate/: api.js (REST), rle.js (COCO RLE), viewport.js (canvas, zoom, pan),
// mask-overlay.js (the mask over the photo); queue-page.js: what this page shares with the
// verify page.

import { api, ApiError, listAll } from "./annotate/api.js";
import { MaskOverlay } from "./annotate/mask-overlay.js";
import { decodeMask } from "./annotate/rle.js";
import { Viewport } from "./annotate/viewport.js";
import {
  $,
  bindButtons,
  bindPanZoom,
  fmt,
  frameBox,
  loadPhoto,
  plural,
  remember,
  ringIfSmall,
  say,
  score,
  shortcutKey,
  toPage,
  trim,
  ZOOM_KEYS,
} from "./queue-page.js";

/** Shortcut key -> action; typing in the version list and Ctrl/Alt combinations are left alone. */
const KEYS = {
  a: (app) => app.decide("accepted"),
  r: (app) => app.decide("rejected"),
  f: (app) => app.fix(),
  s: (app) => app.skip(),
  u: (app) => app.undo(),
  h: (app) => app.toggleMask(),
  z: (app) => app.toggleZoom(),
  ...ZOOM_KEYS,
};

class Reviewer {
  constructor(config) {
    this.config = config;
    this.api = config.urls.api;
    this.storageKey = `maskloop-review-${config.project.id}`;
    const kept = readKept(this.storageKey);
    this.version = kept.version || ""; // model version id filter, "" for all
    this.skipped = kept.skipped || []; // ids skipped in this sitting (this tab)
    this.mask = null; // the mask under review, as the API gives it
    this.image = null; // its image, as the API gives it
    this.photo = null;
    this.loading = false;
    this.empty = false;
    this.busy = false; // a decision on its way to the server
    this.last = null; // the last accepted or rejected mask (as saved), for undo
    this.showMask = true;
    this.zoomed = false; // framed on the mask rather than the whole image
    this.generation = 0; // one per mask shown; answers for an older one are dropped
    this.versions = new Map(); // id -> {number, state}
    this.images = new Map(); // id -> promise of the image's JSON
    this.photos = new Map(); // id -> promise of the loaded photo (the last few)
    this.drag = null;
    this.overlay = new MaskOverlay();
    this.viewport = new Viewport($("canvas"), (ctx, vp) => this.draw(ctx, vp));
  }

  async start() {
    this.bind();
    const fixed = new URLSearchParams(window.location.search).get("fixed");
    if (fixed) {
      this.say(`Your fix of mask #${fixed} is saved.`, "ok");
      window.history.replaceState(null, "", window.location.pathname);
    }
    await this.loadVersions();
    this.refreshQuality();
    await this.next();
  }

  // ---------------------------------------------------------------- the mask under review

  async loadVersions() {
    try {
      const versions = await listAll(`${this.api}model-versions/`);
      const select = $("version");
      for (const version of versions) {
        this.versions.set(version.id, version);
        const option = document.createElement("option");
        option.value = String(version.id);
        option.textContent = `v${version.number} · ${version.state}`;
        select.append(option);
      }
      if (!this.versions.has(Number(this.version))) this.version = "";
      select.value = this.version;
    } catch (error) {
      this.say(`The model versions could not be loaded: ${error.message}`, "warn");
    }
  }

  /** Ask for the next pending mask (none of the skipped ones) and show it. */
  async next() {
    const generation = this.begin();
    const params = new URLSearchParams({ source: this.config.source });
    if (this.version) params.set("version", this.version);
    if (this.skipped.length) params.set("exclude", this.skipped.join(","));
    try {
      const mask = await api(`${this.api}review/next/?${params}`);
      if (generation !== this.generation) return;
      if (mask === null) this.showEmpty();
      else await this.show(mask, generation);
    } catch (error) {
      if (generation !== this.generation) return;
      this.failed(`The next mask could not be loaded: ${error.message}`);
    }
  }

  /** Forget the mask shown; returns the generation of what comes next. */
  begin() {
    this.generation += 1;
    this.mask = null;
    this.loading = true;
    this.empty = false;
    $("empty").hidden = true;
    $("loading").hidden = false;
    $("loading").querySelector("span").textContent = "Loading the next mask…";
    this.refresh();
    return this.generation;
  }

  async show(mask, generation) {
    const image = await this.imageInfo(mask.image);
    const photo = await this.loadPhoto(mask.image);
    if (generation !== this.generation) return;
    const [height, width] = mask.segmentation.size;
    this.overlay.set(decodeMask(mask.segmentation.counts, height, width), width, height);
    const sameImage = this.image && this.image.id === image.id;
    this.mask = mask;
    this.image = image;
    this.photo = photo;
    this.loading = false;
    $("loading").hidden = true;
    if (!sameImage) this.viewport.setImageSize(width, height);
    this.frame(this.zoomed);
    this.refresh();
  }

  showEmpty() {
    this.loading = false;
    this.empty = true;
    this.image = null;
    this.photo = null;
    $("loading").hidden = true;
    const version = this.versions.get(Number(this.version));
    const which = version ? `of model v${version.number} ` : "";
    const skipped = this.skipped.length;
    $("empty-text").textContent = skipped
      ? `Every automatic mask ${which}is reviewed, except the ${plural(skipped, "mask")} you skipped.`
      : `Every automatic mask ${which}is reviewed.`;
    $("unskip").hidden = !skipped;
    $("unskip").textContent = `Review the ${plural(skipped, "skipped mask")}`;
    $("empty").hidden = false;
    this.refresh();
  }

  failed(text) {
    this.loading = false;
    $("loading").querySelector("span").textContent = "Nothing could be loaded.";
    this.say(text, "error");
    this.refresh();
  }

  imageInfo(id) {
    return remember(this.images, id, () => api(`${this.api}images/${id}/`));
  }

  loadPhoto(id) {
    return loadPhoto(this.photos, this.config.urls.file, id);
  }

  // ---------------------------------------------------------------- decisions

  async decide(state) {
    const mask = this.mask;
    if (!mask || this.busy) return;
    this.busy = true;
    this.refresh();
    try {
      const saved = await api(`${this.api}masks/${mask.id}/`, {
        method: "PATCH",
        body: { revision: mask.revision, review_state: state },
      });
      this.last = saved;
      this.say(`${state === "accepted" ? "Accepted" : "Rejected"} mask #${mask.id}.`, "ok");
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 409)) {
        this.busy = false;
        this.say(`Not saved: ${error.message}`, "error");
        this.refresh();
        return;
      }
      const who = error.body && error.body.current && error.body.current.updated_by;
      this.say(`Mask #${mask.id} was changed${who ? ` by ${who}` : ""} meanwhile: left as is.`, "warn");
    }
    this.busy = false;
    this.refreshQuality();
    await this.next();
  }

  /** Put the last accepted or rejected mask back to pending and show it again. */
  async undo() {
    const last = this.last;
    if (!last || this.busy) return;
    this.busy = true;
    this.refresh();
    let restored;
    try {
      restored = await api(`${this.api}masks/${last.id}/`, {
        method: "PATCH",
        body: { revision: last.revision, review_state: "pending" },
      });
    } catch (error) {
      this.busy = false;
      this.last = null; // a 409: someone changed it since; it stays as they left it
      this.say(`Not undone: ${error.message}`, "error");
      this.refresh();
      return;
    }
    this.last = null;
    this.busy = false;
    this.say(`Mask #${restored.id} is pending again.`, "ok");
    this.refreshQuality();
    const generation = this.begin();
    try {
      await this.show(restored, generation);
    } catch (error) {
      if (generation === this.generation) this.failed(`It could not be shown: ${error.message}`);
    }
  }

  skip() {
    const mask = this.mask;
    if (!mask || this.busy) return;
    this.skipped.push(mask.id);
    this.keep();
    this.say(`Skipped mask #${mask.id}.`);
    this.next();
  }

  unskip() {
    this.skipped = [];
    this.keep();
    this.next();
  }

  /** The annotation page, with this mask open for editing; saving it there marks it fixed. */
  fix() {
    const mask = this.mask;
    if (!mask || this.busy) return;
    this.keep();
    window.location.assign(
      this.config.urls.fix.replace("{image}", String(mask.image)).replace("{mask}", String(mask.id)),
    );
  }

  setVersion(value) {
    this.version = value;
    this.keep();
    this.refreshQuality();
    this.next();
  }

  keep() {
    const kept = { version: this.version, skipped: this.skipped };
    window.sessionStorage.setItem(this.storageKey, JSON.stringify(kept));
  }

  // ---------------------------------------------------------------- quality figures

  async refreshQuality() {
    try {
      const rows = await api(`${this.api}review/quality/?source=${this.config.source}`);
      this.renderQuality(rows);
    } catch (error) {
      this.say(`The quality figures could not be loaded: ${error.message}`, "warn");
    }
  }

  renderQuality(rows) {
    const reference = this.config.reference;
    const selected = this.versions.get(Number(this.version));
    const body = $("quality-rows");
    if (!rows.length) {
      const row = document.createElement("tr");
      const cell = cellOf("td", "No automatic masks yet.", "none");
      cell.colSpan = 9;
      row.append(cell);
      body.replaceChildren(row);
    } else {
      body.replaceChildren(
        ...rows.map((q) => {
          const row = document.createElement("tr");
          row.dataset.version = String(q.version);
          row.classList.toggle("current", Boolean(selected) && selected.number === q.version);
          row.append(
            cellOf("th", `v${q.version}`),
            ...[q.masks, q.reviewed, q.accepted, q.fixed, q.rejected].map((n) =>
              cellOf("td", fmt(n), "num"),
            ),
            shareCell(q.share_iou_above_0_90, reference.iou_above_0_90),
            shareCell(q.share_iou_above_0_75, reference.iou_above_0_75),
            shareCell(q.share_rejected, null),
          );
          row.firstChild.scope = "row";
          return row;
        }),
      );
    }
    const counted = selected ? rows.filter((q) => q.version === selected.number) : rows;
    const pending = counted.reduce((sum, q) => sum + q.masks - q.reviewed, 0);
    $("pending").textContent = `${fmt(pending)} to review${selected ? ` in v${selected.number}` : ""}`;
  }

  // ---------------------------------------------------------------- view

  toggleMask() {
    this.showMask = !this.showMask;
    this.say(this.showMask ? "Mask shown." : "Mask hidden (H shows it).");
    this.viewport.invalidate();
  }

  toggleZoom() {
    this.frame(!this.zoomed);
  }

  /** Frame the whole image, or the mask with room around it to judge its edges. */
  frame(zoomed) {
    this.zoomed = zoomed;
    if (!this.image) return;
    if (!zoomed || !this.mask) {
      this.viewport.fit();
      return;
    }
    frameBox(this.viewport, this.image, this.mask.bbox);
  }

  draw(ctx, vp) {
    if (!this.photo || !this.image) return;
    vp.applyImageTransform(ctx);
    ctx.drawImage(this.photo, 0, 0, this.image.width, this.image.height);
    vp.applyScreenTransform(ctx);
    if (!this.mask || !this.showMask) return;
    this.overlay.draw(ctx, vp);
    ringIfSmall(ctx, vp, this.mask.bbox);
  }

  /** Bring the panel and the buttons in line with the state. */
  refresh() {
    const mask = this.mask;
    const version = mask && this.versions.get(mask.model_version);
    $("mask-id").textContent = mask ? `#${mask.id}` : "";
    $("image-name").textContent = mask && this.image ? this.image.file_name : "—";
    $("mask-iou").textContent = mask ? score(mask.predicted_iou) : "—";
    $("mask-stability").textContent = mask ? score(mask.stability_score) : "—";
    $("mask-version").textContent = version ? `v${version.number}` : "—";
    $("mask-area").textContent = mask ? `${fmt(mask.area)} px` : "—";
    for (const id of ["accept", "reject", "fix", "skip"]) $(id).disabled = !mask || this.busy;
    $("undo").disabled = !this.last || this.busy;
    $("review").dataset.state = this.loading ? "loading" : this.empty ? "empty" : "mask";
    this.viewport.invalidate();
  }

  say(text, kind = "info") {
    say(text, kind);
  }

  // ---------------------------------------------------------------- input

  bind() {
    bindButtons($("review"), {
      accept: () => this.decide("accepted"),
      reject: () => this.decide("rejected"),
      fix: () => this.fix(),
      skip: () => this.skip(),
      undo: () => this.undo(),
      unskip: () => this.unskip(),
    });
    $("version").addEventListener("change", (event) => {
      this.setVersion(event.target.value);
      event.target.blur(); // back to the shortcuts
    });
    window.addEventListener("keydown", (event) => this.onKeyDown(event));
    bindPanZoom($("canvas"), this.viewport, { enabled: () => Boolean(this.photo) });
  }

  onKeyDown(event) {
    const target = event.target;
    if (target instanceof HTMLSelectElement || target instanceof HTMLInputElement) {
      if (event.key === "Escape") target.blur();
      return;
    }
    if (event.altKey || event.repeat) return;
    const key = shortcutKey(event);
    if (event.ctrlKey || event.metaKey) {
      if (key !== "z") return; // the browser's own shortcuts
      event.preventDefault();
      this.undo();
      return;
    }
    if (!Object.hasOwn(KEYS, key)) return;
    event.preventDefault();
    KEYS[key](this);
  }

  /** For tests and the browser console. */
  debugHandle() {
    return {
      state: () => ({
        mask: this.mask ? this.mask.id : null,
        image: this.mask ? this.mask.image : null,
        bbox: this.mask ? this.mask.bbox : null,
        loading: this.loading,
        empty: this.empty,
        busy: this.busy,
        skipped: this.skipped.slice(),
        shown: this.showMask,
        zoomed: this.zoomed,
      }),
      toPage: (x, y) => toPage(this.viewport, x, y),
    };
  }
}

function readKept(key) {
  try {
    const kept = JSON.parse(window.sessionStorage.getItem(key) || "{}");
    return {
      version: typeof kept.version === "string" ? kept.version : "",
      skipped: Array.isArray(kept.skipped) ? kept.skipped.filter(Number.isInteger) : [],
    };
  } catch {
    return { version: "", skipped: [] };
  }
}

function cellOf(tag, text, className = "") {
  const cell = document.createElement(tag);
  cell.textContent = text;
  if (className) cell.className = className;
  return cell;
}

/** A share as a percentage, green at or above the paper's figure and amber below it. */
function shareCell(share, reference) {
  const cell = cellOf("td", share === null ? "—" : `${trim(share * 100)}%`, "num");
  if (share !== null && reference !== null) {
    cell.classList.add(share >= reference ? "good" : "below");
    cell.title = `SA-1B paper: ${trim(reference * 100)}%`;
  }
  return cell;
}

const reviewer = new Reviewer(JSON.parse($("review-config").textContent));
window.maskloop = reviewer.debugHandle();
reviewer.start();
