// The annotation page: prompts (points, box) answered by the model over a websocket, brush
// and eraser on the chosen candidate, undo/redo, save to the REST API, next image.
//
// This file holds the page's state (the Annotator) and its drawing. Around it, in annotate/:
// rle.js (COCO RLE), api.js (REST), model-socket.js (websocket), viewport.js (canvas, zoom,
// pan), layers.js (mask overlays), brush.js, history.js (undo/redo), draft.js (the object
// being made), saved-masks.js (the image's saved masks), input.js (mouse, keys, controls),
// verification-marks.js (what verification sent back: rejected masks, missed objects).

import { api, ApiError, uuid4 } from "./annotate/api.js";
import { Stroke } from "./annotate/brush.js";
import { Draft } from "./annotate/draft.js";
import { History } from "./annotate/history.js";
import { Input } from "./annotate/input.js";
import { CurrentLayer, hexToRgb } from "./annotate/layers.js";
import { ModelSocket } from "./annotate/model-socket.js";
import { decodeMask, encodeMask } from "./annotate/rle.js";
import { SavedMasks } from "./annotate/saved-masks.js";
import { VerificationFeedback } from "./annotate/verification-marks.js";
import { Viewport } from "./annotate/viewport.js";

const LEASE_RENEW_MS = 2 * 60 * 1000; // the server's lease lasts 10 minutes
const DEFAULT_RGB = [56, 189, 248];
const NEEDS_WORK = ["new", "in_progress"];
const MAY_DELETE = ["admin", "annotator"]; // roles that may delete any mask of the project

const HQ_STORAGE_KEY = "maskloop.hq";

const $ = (id) => document.getElementById(id);
const fmt = (n) => Math.round(n).toLocaleString("en-US");

class Annotator {
  constructor(config) {
    this.config = config;
    this.image = config.image;
    this.api = config.urls.api;
    this.draft = new Draft();
    this.history = new History();
    this.tool = "prompt";
    this.brushSize = 16;
    this.expected = null; // id of the one prediction whose answer is still wanted
    this.waitingForModel = false; // a prompt made before the model was ready
    this.modelVersion = config.model.version;
    // HQ-SAM versions: their HQ head (true) or the base model's answer; the choice is kept.
    this.hqAvailable = false;
    this.hq = window.localStorage.getItem(HQ_STORAGE_KEY) !== "off";
    this.session = uuid4(); // groups the prompt logs of one mask
    this.startedAt = null; // first prompt of this mask (performance.now())
    this.clicks = 0; // points and boxes made for this mask, undone ones included
    this.pendingLogs = new Set();
    this.stroke = null; // the brush or eraser stroke in progress
    this.saving = false;
    this.leaveArmedUntil = 0;
    this.drawnEditingId = null; // the saved mask left out of the overlay while edited
    // Opened from the review page (?edit=<id>&review=1): saving that mask marks it fixed and
    // goes back there. {mask, url} or null.
    this.review = config.review || null;
    this.untouched = null; // the draft as ?edit= opened it: nothing to save yet

    this.photo = new Image();
    this.current = new CurrentLayer(this.image.width, this.image.height);
    this.viewport = new Viewport($("canvas"), (ctx, vp) => this.draw(ctx, vp));
    this.viewport.onChange = () => {
      $("zoom-value").textContent = `${Math.round(this.viewport.scale * 100)}%`;
    };
    this.socket = new ModelSocket(config.urls.socket, {
      onReady: (message) => this.onReady(message),
      onPrediction: (message, rtt) => this.onPrediction(message, rtt),
      onError: (message) => this.onModelError(message),
      onState: (state, text) => this.setModelState(state, text),
    });
    this.saved = new SavedMasks({
      image: this.image,
      apiBase: this.api,
      username: config.user.username,
      mayDelete: MAY_DELETE.includes(config.user.role),
      categories: config.categories,
      editingId: () => (this.draft.editing ? this.draft.editing.id : null),
      onEdit: (entry) => this.editMask(entry),
      onDeleted: (entry) => {
        if (this.draft.editing && this.draft.editing.id === entry.id) this.startNewObject();
        this.refresh();
      },
      say: (text, kind) => this.say(text, kind),
      invalidate: () => this.viewport.invalidate(),
    });
    this.verification = new VerificationFeedback({
      apiBase: this.api,
      image: this.image,
      panel: document.querySelector("#annotate .panel"),
      // A rejected mask is outlined while it is shown and not open in the editor.
      present: (id) =>
        !this.saved.allHidden &&
        !(this.draft.editing && this.draft.editing.id === id) &&
        this.saved.entries.some((m) => m.id === id && !m.hidden),
      invalidate: () => this.viewport.invalidate(),
    });
    this.input = new Input(this);
  }

  start() {
    this.input.bind();
    this.restoreCategory();
    this.photo.addEventListener("load", () => {
      $("loading").hidden = true;
      this.viewport.setImageSize(this.image.width, this.image.height);
    });
    this.photo.addEventListener("error", () => {
      $("loading").querySelector("span").textContent = "The image could not be loaded.";
      this.say("The image file could not be loaded.", "error");
    });
    this.photo.src = this.config.urls.file;
    this.socket.connect();
    this.loadMasks().then(() => this.openRequestedMask());
    this.verification.load();
    this.renewLease();
    window.setInterval(() => this.renewLease(), LEASE_RENEW_MS);
    window.setInterval(() => this.updateTimer(), 1000);
    window.addEventListener("beforeunload", (event) => {
      if (this.hasUnsavedMask()) event.preventDefault();
    });
    // Give the image back when the tab goes, so that it is not held for the lease's 10 minutes.
    window.addEventListener("pagehide", () => {
      api(`${this.api}images/${this.image.id}/lease/`, { method: "DELETE", keepalive: true }).catch(
        () => {},
      );
    });
    this.refresh();
  }

  // ---------------------------------------------------------------- model

  onReady(message) {
    this.modelVersion = message.model_version;
    const name = message.model === "grabcut" ? "GrabCut" : `Model v${message.model_number}`;
    const ms = fmt(message.ms);
    const how = {
      computed: `embedding computed in ${ms} ms`,
      disk: `embedding loaded from disk in ${ms} ms`,
      memory: "embedding cached",
      image: `ready in ${ms} ms`,
    }[message.embedding] || `ready in ${ms} ms`;
    this.hqAvailable = Boolean(message.hq);
    $("hq-group").hidden = !this.hqAvailable;
    $("hq-key").hidden = !this.hqAvailable;
    this.showHq();
    this.setModelState("ready", `${name}${this.hqAvailable ? " (HQ-SAM)" : ""} · ${how}`);
    if (message.embedding === "computed") this.say(`Model ready (embedding computed in ${ms} ms).`);
    // Handles from before a reconnect are unknown to the new server session; a prompt made
    // while connecting is sent now.
    if (this.waitingForModel || this.draft.stale) this.predict();
  }

  /** HQ head on or off (Q): the current prompt is asked again, from its points alone. */
  toggleHq() {
    if (!this.hqAvailable) return;
    this.hq = !this.hq;
    window.localStorage.setItem(HQ_STORAGE_KEY, this.hq ? "on" : "off");
    this.showHq();
    this.say(this.hq ? "HQ head on: sharper boundaries." : "HQ head off: the base model's masks.");
    if (this.draft.points.length || this.draft.box) {
      this.draft.handle = null; // the other head's logits are no starting point
      this.predict();
    }
  }

  showHq() {
    const button = $("hq-toggle");
    button.setAttribute("aria-pressed", String(this.hq));
    button.classList.toggle("off", !this.hq);
  }

  setModelState(state, text) {
    $("status-model").dataset.state = state;
    $("status-model-text").textContent = text;
    if (state !== "ready") this.setBusy(false);
  }

  predict() {
    const draft = this.draft;
    if (!draft.points.some((p) => p.label === 1) && !draft.box) {
      // Only exclusions: nothing is asked for yet, so nothing is segmented.
      this.expected = null;
      draft.candidates = [];
      draft.edited = null;
      draft.handle = null;
      draft.stale = false;
      this.setBusy(false);
      this.refresh();
      return;
    }
    const reusable = draft.handle !== null && draft.generation === this.socket.generation;
    const prompt = {
      points: draft.points.map((p) => [round1(p.x), round1(p.y)]),
      labels: draft.points.map((p) => p.label),
      box: draft.box,
      // Refining: continue from the candidate the annotator had selected (SAM's mask input).
      mask_input: reusable ? `${draft.handle}:${draft.selected}` : null,
      // Three guesses at every click, best first by predicted IoU: measured better than the
      // single-mask output after the first click (DECISIONS 4; docs/benchmarks.md, session 3:
      // NoC@85 14.10 against 14.68, mIoU@3 0.648 against 0.560). A box is not ambiguous.
      multimask: !draft.box,
    };
    if (this.hqAvailable) prompt.hq = this.hq;
    const id = this.socket.predict(prompt);
    if (id === null) {
      this.waitingForModel = true;
      this.say("Waiting for the model to be ready…");
      return;
    }
    this.waitingForModel = false;
    this.expected = id;
    this.setBusy(true);
  }

  onPrediction(message, rtt) {
    // The annotator clicks faster than the model: only the answer to the latest prompt
    // counts, and none once the prompt was undone or cleared.
    if (message.id !== this.expected) return;
    this.expected = null;
    this.setBusy(false);
    const { width, height } = this.image;
    let candidates;
    try {
      candidates = message.masks.map((m) => ({
        mask: decodeMask(m.counts, height, width),
        score: m.score,
        area: m.area,
      }));
    } catch (error) {
      this.say(`The model's answer could not be read: ${error.message}`, "error");
      return;
    }
    const draft = this.draft;
    draft.candidates = candidates;
    draft.selected = 0;
    draft.handle = message.handle;
    draft.generation = this.socket.generation;
    draft.edited = null;
    draft.stale = false;
    const server = message.ms !== undefined ? ` (model ${fmt(message.ms)} ms)` : "";
    $("status-rtt").textContent = rtt === null ? "" : `${fmt(rtt)} ms round trip${server}`;
    if (candidates.every((c) => c.area === 0)) this.say("The model found nothing there.", "warn");
    else this.say("");
    this.refresh();
  }

  onModelError(message) {
    if (message.id !== null && message.id !== this.expected) return;
    this.expected = null;
    this.setBusy(false);
    this.say(`Model: ${message.detail}`, "error");
  }

  setBusy(busy) {
    $("busy").hidden = !busy;
  }

  // ---------------------------------------------------------------- prompts and edits

  /** Record `this.draft` for undo, then let `mutate` change it. */
  change(mutate) {
    this.history.push(this.draft);
    this.draft = this.draft.clone();
    mutate(this.draft);
  }

  touch() {
    if (this.startedAt === null) this.startedAt = performance.now();
  }

  addPoint(x, y, label) {
    if (this.saving) return; // the draft is on its way to the server
    if (!this.insideImage(x, y)) {
      this.say("Click inside the image.", "warn");
      return;
    }
    this.touch();
    this.clicks += 1;
    this.change((draft) => {
      draft.points.push({ x, y, label });
      draft.stale = true;
    });
    this.log("point", { x: round1(x), y: round1(y), label, index: this.draft.points.length - 1 });
    this.predict();
    this.refresh();
  }

  setBox(box) {
    if (this.saving) return;
    this.touch();
    this.clicks += 1;
    this.change((draft) => {
      draft.box = box;
      draft.stale = true;
    });
    this.log("box", { box });
    this.predict();
    this.refresh();
  }

  choose(index) {
    const draft = this.draft;
    if (this.saving) return;
    if (index >= draft.candidates.length || (index === draft.selected && !draft.edited)) return;
    this.change((d) => {
      d.selected = index;
      d.edited = null; // strokes were on the other candidate (undo brings them back)
    });
    this.log("choose", { index, score: draft.candidates[index].score });
    this.refresh();
  }

  beginStroke(point, value) {
    if (this.saving) return;
    this.touch();
    const { width, height } = this.image;
    const base = this.draft.mask;
    const baseArea = this.draft.area;
    this.change((draft) => {
      // A fresh copy: the snapshot in the history keeps the mask as it was.
      draft.edited = base ? base.slice() : new Uint8Array(width * height);
      draft.editedArea = baseArea;
    });
    const draft = this.draft;
    this.stroke = new Stroke(draft.edited, width, height, { radius: this.brushSize / 2, value });
    this.current.set(draft.edited, this.maskRgb());
    this.extendStroke(point);
  }

  extendStroke(point) {
    const stroke = this.stroke;
    if (!stroke) return;
    const before = stroke.changed;
    const rect = stroke.to(point.x, point.y);
    const delta = stroke.changed - before;
    this.draft.editedArea += stroke.value ? delta : -delta;
    if (rect) this.current.renderRect(...rect);
    $("draft-area").textContent = `${fmt(this.draft.editedArea)} px`;
    this.viewport.invalidate();
  }

  endStroke() {
    const stroke = this.stroke;
    if (!stroke) return;
    this.stroke = null;
    if (!stroke.changed) {
      // Nothing painted: forget the step rather than leave an undo that does nothing.
      this.draft = this.history.undo(this.draft);
      this.history.future.pop();
      this.refresh();
      return;
    }
    this.draft.strokes += 1;
    const bounds = stroke.bounds;
    this.log(stroke.value ? "brush" : "erase", {
      size: this.brushSize,
      samples: stroke.points,
      pixels: stroke.changed,
      bbox: bounds && [bounds[0], bounds[1], bounds[2] - bounds[0], bounds[3] - bounds[1]],
      area: this.draft.editedArea,
    });
    this.refresh();
  }

  clearDraft() {
    if (this.saving) return;
    if (this.draft.isEmpty) {
      if (this.saved.selected !== null) this.saved.select(null);
      return;
    }
    this.change(() => {});
    if (this.draft.editing) this.newSession(); // the edit's strokes belong to no new mask
    this.draft = new Draft();
    this.expected = null;
    this.setBusy(false);
    this.say("Prompt cleared (Ctrl+Z brings it back).");
    this.refresh();
  }

  undo() {
    if (!this.stroke && !this.saving) this.restore(this.history.undo(this.draft), "Undone.");
  }

  redo() {
    if (!this.stroke && !this.saving) this.restore(this.history.redo(this.draft), "Redone.");
  }

  restore(state, text) {
    if (!state) return;
    this.draft = state;
    this.expected = null;
    this.setBusy(false);
    if (state.stale) this.predict(); // its answer never came: ask again
    this.say(text);
    this.refresh();
  }

  /** Forget the draft and its history once saved: the next object starts clean. */
  startNewObject() {
    this.draft = new Draft();
    this.history.clear();
    this.expected = null;
    this.newSession();
    this.setBusy(false);
  }

  /** A new prompt-log session: its events, clicks and seconds go to the next saved mask. */
  newSession() {
    this.session = uuid4();
    this.startedAt = null;
    this.clicks = 0;
  }

  hasUnsavedMask() {
    if (this.untouched !== null && this.draft === this.untouched) return false;
    return Boolean(this.draft.mask) && this.draft.area > 0;
  }

  /** The mask the review page sent here to be fixed, while it is the one being edited. */
  reviewing(id) {
    return this.review !== null && this.review.mask === id;
  }

  /** Go to another page, without the "unsaved mask" prompt. */
  leave(url) {
    this.draft = new Draft();
    this.socket.close();
    window.location.assign(url);
  }

  // ---------------------------------------------------------------- saving

  log(kind, data) {
    const request = api(`${this.api}prompt-logs/`, {
      method: "POST",
      body: {
        image: this.image.id,
        session: this.session,
        kind,
        data,
        client_time: new Date().toISOString(),
      },
    }).catch((error) => this.say(`A prompt could not be logged: ${error.message}`, "warn"));
    this.pendingLogs.add(request);
    request.finally(() => this.pendingLogs.delete(request));
  }

  async save() {
    const draft = this.draft;
    if (this.saving || this.stroke) return;
    if (!draft.mask || draft.area <= 0) {
      this.say(
        draft.stale ? "Wait for the model's answer, then save." : "Nothing to save yet.",
        "warn",
      );
      return;
    }
    if (draft === this.untouched) {
      this.say("Nothing changed yet: brush, erase or click to change the mask first.", "warn");
      return;
    }
    this.saving = true;
    this.refresh();
    const { width, height } = this.image;
    const seconds = this.startedAt === null ? 0 : (performance.now() - this.startedAt) / 1000;
    const candidate = draft.candidates[draft.selected];
    const category = this.categoryId();
    const editing = draft.editing;
    try {
      this.log("save", {
        area: draft.area,
        candidate: draft.edited ? null : draft.selected,
        strokes: draft.strokes,
        clicks: this.clicks,
        seconds: round1(seconds),
        category,
        mask: editing ? editing.id : null,
      });
      // The server links the session's logs to the mask when the mask is saved: they must
      // be stored first.
      await Promise.all([...this.pendingLogs]);
      const body = {
        segmentation: { size: [height, width], counts: encodeMask(draft.mask, height, width) },
        category,
        point_coords: draft.points.map((p) => [round1(p.x), round1(p.y)]),
        seconds_spent: round1(seconds + (editing ? editing.seconds : 0)),
        clicks: this.clicks + (editing ? editing.clicks : 0),
        session: this.session,
      };
      let saved;
      if (editing) {
        const review = this.reviewing(editing.id) ? { review_state: "fixed" } : {};
        saved = await api(`${this.api}masks/${editing.id}/`, {
          method: "PATCH",
          body: { ...body, ...review, revision: editing.revision },
        });
      } else {
        saved = await api(`${this.api}masks/`, {
          method: "POST",
          body: {
            ...body,
            image: this.image.id,
            model_version: draft.candidates.length ? this.modelVersion : null,
            // The model's own estimate describes its mask, not one fixed by hand.
            predicted_iou: candidate && !draft.edited ? candidate.score : null,
          },
        });
      }
      this.startNewObject();
      this.saved.add(saved);
      this.setTool("prompt"); // the next object starts with a click
      if (this.image.state === "new") this.setImageState("in_progress");
      const what = editing ? "Updated" : "Saved";
      const spent = round1(saved.seconds_spent);
      const facts = `${fmt(saved.area)} px, ${saved.clicks} clicks, ${spent} s`;
      this.say(`${what} mask #${saved.id}: ${facts}.`, "ok");
      if (editing && this.reviewing(editing.id)) {
        this.say(`Mask #${saved.id} saved as fixed; back to the review…`, "ok");
        this.leave(`${this.review.url}?fixed=${saved.id}`);
      }
    } catch (error) {
      if (error instanceof ApiError && error.status === 409 && editing) {
        const current = error.body && error.body.current;
        const who = current && current.updated_by ? ` by ${current.updated_by}` : "";
        const revision = error.body.current_revision;
        this.showConflict(
          `Mask #${editing.id} was changed${who} since you opened it (now revision ${revision}). ` +
            "Your edit was not saved.",
        );
      } else {
        this.say(`Not saved: ${error.message}`, "error");
      }
    } finally {
      this.saving = false;
      this.refresh();
    }
  }

  showConflict(text) {
    $("conflict-text").textContent = text;
    $("conflict-banner").hidden = false;
  }

  async nextImage() {
    if (this.hasUnsavedMask() && performance.now() > this.leaveArmedUntil) {
      this.leaveArmedUntil = performance.now() + 4000;
      this.say("The current mask is not saved: Enter saves it, N again leaves it.", "warn");
      return;
    }
    this.leaveArmedUntil = 0;
    if (this.review) {
      this.leave(this.review.url); // the image is the review's business, not marked done
      return;
    }
    $("next").disabled = true;
    try {
      // Reviewed or skipped images keep their state; an image that needed work is done now.
      if (NEEDS_WORK.includes(this.image.state)) {
        await api(`${this.api}images/${this.image.id}/`, {
          method: "PATCH",
          body: { state: "annotated" },
        });
        this.setImageState("annotated");
      }
      const next = await api(`${this.api}images/next/`, {
        method: "POST",
        body: { after: this.image.id },
      });
      this.draft = new Draft(); // no "unsaved" prompt on the way out
      this.socket.close();
      window.location.assign(
        next ? this.config.urls.image_page.replace("{id}", next.id) : this.config.urls.next,
      );
    } catch (error) {
      $("next").disabled = false;
      this.say(`Could not move on: ${error.message}`, "error");
    }
  }

  setImageState(state) {
    this.image.state = state;
    const label = { new: "New", in_progress: "In progress", annotated: "Annotated" }[state];
    const badge = $("image-state");
    badge.className = `state state-${state}`;
    if (label) badge.textContent = label;
  }

  async renewLease() {
    try {
      const image = await api(`${this.api}images/${this.image.id}/lease/`, { method: "POST" });
      const until = image.assigned_until ? new Date(image.assigned_until) : null;
      $("status-lease").textContent = until
        ? `Yours until ${until.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}`
        : "";
      $("lease-banner").hidden = true;
    } catch (error) {
      if (error instanceof ApiError && error.status === 409) {
        $("lease-banner").hidden = false;
        $("status-lease").textContent = "Held by another annotator";
      } else if (error instanceof ApiError && error.status === 403) {
        $("status-lease").textContent = "View only";
      } else {
        $("status-lease").textContent = "Lease not renewed";
      }
    }
  }

  // ---------------------------------------------------------------- saved masks

  async loadMasks() {
    try {
      await this.saved.load();
    } catch (error) {
      this.say(`The image's masks could not be loaded: ${error.message}`, "error");
    }
  }

  /** ?edit=<id>: open that mask of the image for editing (the review page's Fix). */
  openRequestedMask() {
    const id = this.config.edit;
    if (id === null || id === undefined) return;
    const entry = this.saved.entries.find((m) => m.id === id);
    if (!entry) {
      this.say(`Mask #${id} is not a mask of this image (any more).`, "warn");
      return;
    }
    this.editMask(entry);
    this.untouched = this.draft;
    if (this.reviewing(id)) {
      // The reviewer judges this one mask: the image's others stay hidden until H.
      if (!this.saved.allHidden) this.saved.toggleAll();
      this.say(`Fixing mask #${id} for review: brush, eraser or clicks; Enter saves it as fixed.`);
    }
    this.refresh(); // nothing to save until it changes
  }

  async reloadAfterConflict() {
    $("conflict-banner").hidden = true;
    this.startNewObject();
    await this.loadMasks();
    this.refresh();
  }

  /** Load an own saved mask into the editor; Enter then saves it back (PATCH). */
  editMask(entry) {
    if (this.hasUnsavedMask()) {
      this.say("Save or clear the current mask before editing another one.", "warn");
      return;
    }
    const { width, height } = this.image;
    this.newSession(); // the strokes of this edit are logged apart, and attached on save
    this.change((draft) => {
      Object.assign(draft, new Draft());
      draft.edited = decodeMask(entry.runs, height, width);
      draft.editedArea = entry.area;
      draft.editing = {
        id: entry.id,
        revision: entry.revision,
        seconds: entry.seconds,
        clicks: entry.clicks,
      };
    });
    this.setCategory(entry.category);
    this.setTool("brush");
    this.saved.selected = null; // refresh() redraws the saved masks without this one
    this.say(`Editing mask #${entry.id}: brush and eraser change it, Enter saves, Esc cancels.`);
    this.refresh();
  }

  // ---------------------------------------------------------------- categories and tools

  categoryId() {
    const value = $("category").value;
    return value ? Number(value) : null;
  }

  setCategory(id) {
    $("category").value = id === null || id === undefined ? "" : String(id);
    this.onCategoryChange();
  }

  cycleCategory(step) {
    const select = $("category");
    const count = select.options.length;
    select.selectedIndex = (select.selectedIndex + step + count) % count;
    this.onCategoryChange();
    const name = select.options[select.selectedIndex].textContent;
    this.say(`Category: ${name}`);
  }

  onCategoryChange() {
    const option = $("category").selectedOptions[0];
    const color = option && option.dataset.color;
    $("category-swatch").style.background = color || "transparent";
    $("category-swatch").classList.toggle("none", !color);
    // Annotators often label many objects of one kind in a row: keep the choice.
    const key = `maskloop-category-${this.config.project.id}`;
    window.sessionStorage.setItem(key, $("category").value);
    this.refresh();
  }

  restoreCategory() {
    const kept = window.sessionStorage.getItem(`maskloop-category-${this.config.project.id}`);
    if (kept && [...$("category").options].some((o) => o.value === kept)) {
      $("category").value = kept;
    }
    this.onCategoryChange();
  }

  maskRgb() {
    const option = $("category").selectedOptions[0];
    return option && option.dataset.color ? hexToRgb(option.dataset.color) : DEFAULT_RGB;
  }

  setTool(tool) {
    this.tool = tool;
    for (const element of document.querySelectorAll(".tool")) {
      element.setAttribute("aria-pressed", String(element.dataset.tool === tool));
    }
    const stage = $("stage");
    stage.dataset.tool = tool;
    $("stage-hint").textContent = {
      prompt: "Click an object to segment it · right-click to exclude · drag a box",
      brush: "Paint to add to the mask · right-drag erases · [ ] size",
      eraser: "Paint to remove from the mask · right-drag paints · [ ] size",
    }[tool];
    this.viewport.invalidate();
  }

  setBrushSize(size) {
    this.brushSize = Math.max(1, Math.min(200, Math.round(size)));
    $("brush-size").value = String(this.brushSize);
    $("brush-size-value").textContent = `${this.brushSize} px`;
    this.viewport.invalidate();
  }

  // ---------------------------------------------------------------- geometry

  imageLoaded() {
    return this.photo.complete && this.photo.naturalWidth > 0;
  }

  insideImage(x, y) {
    return x >= 0 && y >= 0 && x < this.image.width && y < this.image.height;
  }

  /** The box spanned by two image points, inside the image. */
  clampBox(a, b) {
    const { width, height } = this.image;
    const clamp = (v, max) => Math.max(0, Math.min(max, v));
    return [
      round1(clamp(Math.min(a.x, b.x), width)),
      round1(clamp(Math.min(a.y, b.y), height)),
      round1(clamp(Math.max(a.x, b.x), width)),
      round1(clamp(Math.max(a.y, b.y), height)),
    ];
  }

  // ---------------------------------------------------------------- drawing and panel

  draw(ctx, vp) {
    if (!this.imageLoaded()) return;
    vp.applyImageTransform(ctx);
    ctx.drawImage(this.photo, 0, 0, this.image.width, this.image.height);
    if (!this.saved.allHidden) ctx.drawImage(this.saved.layer.canvas, 0, 0);
    if (this.draft.mask) ctx.drawImage(this.current.canvas, 0, 0);
    vp.applyScreenTransform(ctx);
    this.verification.draw(ctx, vp);

    const { drag, pointer } = this.input;
    const box = drag && drag.kind === "prompt" && drag.box;
    for (const [b, dashed] of [
      [this.draft.box, false],
      [box, true],
    ]) {
      if (!b) continue;
      const a = vp.toScreen(b[0], b[1]);
      const c = vp.toScreen(b[2], b[3]);
      // Yellow on a dark halo reads on light and dark photos; the box being dragged is dashed.
      ctx.setLineDash(dashed ? [6, 4] : []);
      ctx.lineWidth = 3;
      ctx.strokeStyle = "rgba(15, 23, 42, 0.6)";
      ctx.strokeRect(a.x, a.y, c.x - a.x, c.y - a.y);
      ctx.lineWidth = 1.5;
      ctx.strokeStyle = "#facc15";
      ctx.strokeRect(a.x, a.y, c.x - a.x, c.y - a.y);
      ctx.setLineDash([]);
    }

    for (const point of this.draft.points) {
      const s = vp.toScreen(point.x, point.y);
      ctx.beginPath();
      ctx.arc(s.x, s.y, 7, 0, Math.PI * 2);
      ctx.fillStyle = point.label ? "#16a34a" : "#dc2626";
      ctx.fill();
      ctx.lineWidth = 2;
      ctx.strokeStyle = "#fff";
      ctx.stroke();
      ctx.beginPath();
      ctx.moveTo(s.x - 3.5, s.y);
      ctx.lineTo(s.x + 3.5, s.y);
      if (point.label) {
        ctx.moveTo(s.x, s.y - 3.5);
        ctx.lineTo(s.x, s.y + 3.5);
      }
      ctx.lineWidth = 1.8;
      ctx.stroke();
    }

    if (this.tool !== "prompt" && pointer && !(drag && drag.kind === "pan")) {
      const radius = Math.max(2, (this.brushSize / 2) * vp.scale);
      ctx.beginPath();
      ctx.arc(pointer.x, pointer.y, radius, 0, Math.PI * 2);
      ctx.lineWidth = 3;
      ctx.strokeStyle = "rgba(15, 23, 42, 0.75)";
      ctx.stroke();
      ctx.lineWidth = 1.5;
      ctx.strokeStyle = this.tool === "brush" ? "#fff" : "#fca5a5";
      ctx.stroke();
    }
  }

  /** Bring the panel, the buttons and the overlay in line with the state. */
  refresh() {
    const draft = this.draft;
    this.current.set(draft.mask, this.maskRgb());
    // A saved mask being edited is drawn by the editor only; redraw the saved ones whenever
    // that changes (edit started, cancelled, undone, saved).
    const editingId = draft.editing ? draft.editing.id : null;
    if (editingId !== this.drawnEditingId) {
      this.drawnEditingId = editingId;
      this.saved.render();
    }
    const buttons = document.querySelectorAll(".candidate");
    buttons.forEach((element, index) => {
      const candidate = draft.candidates[index];
      const chosen = Boolean(candidate) && index === draft.selected;
      element.disabled = !candidate;
      element.setAttribute("aria-pressed", String(chosen));
      element.classList.toggle("edited", chosen && Boolean(draft.edited));
      // GrabCut has no IoU estimate: its one candidate says so instead of a number.
      element.querySelector(".score").textContent = candidate
        ? candidate.score === null
          ? "n/a"
          : candidate.score.toFixed(2)
        : "—";
      element.querySelector(".area").textContent = candidate
        ? `${compact(candidate.area)} px`
        : "\u00a0";
      const iou = candidate && candidate.score !== null ? candidate.score.toFixed(3) : "n/a";
      element.title = candidate
        ? `Candidate ${index + 1}: predicted IoU ${iou}, ${fmt(candidate.area)} px`
        : `Candidate ${index + 1}: none`;
      element.setAttribute("aria-label", element.title);
    });
    const positives = draft.points.filter((p) => p.label === 1).length;
    const negatives = draft.points.length - positives;
    $("draft-points").textContent = negatives
      ? `${positives} + ${negatives} excl.`
      : `${positives}`;
    $("draft-points").dataset.positive = String(positives);
    $("draft-points").dataset.negative = String(negatives);
    $("draft-area").textContent = `${fmt(draft.area)} px`;
    $("draft-area").dataset.area = String(draft.area);
    $("draft-clicks").textContent = String(this.clicks);
    $("draft-mode").textContent = draft.editing
      ? `${this.reviewing(draft.editing.id) ? "fixing" : "editing"} #${draft.editing.id}`
      : draft.edited
        ? "brushed"
        : draft.mask
          ? "predicted"
          : "new";
    $("save").disabled = this.saving || !this.hasUnsavedMask();
    $("undo").disabled = !this.history.canUndo;
    $("redo").disabled = !this.history.canRedo;
    this.updateTimer();
    this.viewport.invalidate();
  }

  updateTimer() {
    const seconds = this.startedAt === null ? 0 : (performance.now() - this.startedAt) / 1000;
    $("draft-time").textContent = `${Math.floor(seconds)} s`;
  }

  say(text, kind = "info") {
    const element = $("status-message");
    element.textContent = text;
    element.dataset.kind = kind;
  }

  /** For tests and the browser console: image pixel -> page coordinates, and a summary. */
  debugHandle() {
    return {
      toPage: (x, y) => {
        const box = $("canvas").getBoundingClientRect();
        const s = this.viewport.toScreen(x, y);
        return { x: box.left + s.x, y: box.top + s.y };
      },
      state: () => ({
        ready: this.socket.ready,
        hq: this.hqAvailable ? this.hq : null,
        loaded: this.imageLoaded(),
        pending: this.expected !== null || this.waitingForModel,
        tool: this.tool,
        points: this.draft.points.map((p) => ({ ...p })),
        candidates: this.draft.candidates.map((c) => ({ score: c.score, area: c.area })),
        selected: this.draft.selected,
        area: this.draft.area,
        edited: Boolean(this.draft.edited),
        clicks: this.clicks,
        saved: this.saved.entries.map((m) => ({
          id: m.id,
          area: m.area,
          own: m.own,
          prefilled: m.prefilled,
        })),
        scale: this.viewport.scale,
      }),
    };
  }
}

/** 950 -> "950", 12345 -> "12.3k", 1234567 -> "1.23M": fits a candidate button. */
function compact(n) {
  if (n < 1000) return String(n);
  if (n < 1e6) return `${(n / 1000).toFixed(n < 1e4 ? 2 : n < 1e5 ? 1 : 0)}k`;
  return `${(n / 1e6).toFixed(2)}M`;
}

function round1(value) {
  return Math.round(value * 10) / 10;
}

const annotator = new Annotator(JSON.parse($("annotate-config").textContent));
window.maskloop = annotator.debugHandle();
annotator.start();
