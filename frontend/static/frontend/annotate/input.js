// Mouse, keyboard and the page's controls, turned into calls on the Annotator.
//
// Mouse map (points tool): click = include point, right-click or Alt+click = exclude point,
// drag = box. Brush / eraser: drag paints / erases, right-drag does the other. Everywhere:
// wheel zooms at the cursor, Space+drag or middle-drag pans.

const DRAG_THRESHOLD_PX = 5; // below this a press is a click, above it a box
const ZOOM_STEP = 1.25;

const $ = (id) => document.getElementById(id);

/** Shortcut key (lower case, or KeyboardEvent.key for named keys) -> action. */
const KEYS = {
  1: (app) => app.choose(0),
  2: (app) => app.choose(1),
  3: (app) => app.choose(2),
  v: (app) => app.setTool("prompt"),
  b: (app) => app.setTool(app.tool === "brush" ? "prompt" : "brush"),
  e: (app) => app.setTool(app.tool === "eraser" ? "prompt" : "eraser"),
  "[": (app) => app.setBrushSize(Math.min(app.brushSize - 1, app.brushSize / 1.2)),
  "]": (app) => app.setBrushSize(Math.max(app.brushSize + 1, app.brushSize * 1.2)),
  c: (app, event) => app.cycleCategory(event.shiftKey ? -1 : 1),
  Enter: (app) => app.save(),
  Escape: (app) => app.clearDraft(),
  n: (app) => app.nextImage(),
  h: (app) => app.saved.toggleAll(),
  q: (app) => app.toggleHq(),
  f: (app) => app.viewport.fit(),
  0: (app) => app.viewport.fit(),
  "+": (app) => app.viewport.zoomCentre(ZOOM_STEP),
  "=": (app) => app.viewport.zoomCentre(ZOOM_STEP),
  "-": (app) => app.viewport.zoomCentre(1 / ZOOM_STEP),
  _: (app) => app.viewport.zoomCentre(1 / ZOOM_STEP),
};

export class Input {
  constructor(app) {
    this.app = app;
    this.drag = null; // {kind: "pan"|"prompt"|"exclude"|"stroke", ...} while a button is down
    this.pointer = null; // last pointer position on the canvas (CSS px), null when outside
    this.spaceHeld = false;
  }

  bind() {
    this.bindPointer();
    this.bindKeys();
    this.bindControls();
  }

  // ---------------------------------------------------------------- pointer

  bindPointer() {
    const { viewport } = this.app;
    const canvas = $("canvas");
    canvas.addEventListener("contextmenu", (event) => event.preventDefault());
    canvas.addEventListener("pointerdown", (event) => this.onPointerDown(event));
    canvas.addEventListener("pointermove", (event) => this.onPointerMove(event));
    canvas.addEventListener("pointerup", (event) => this.onPointerUp(event));
    canvas.addEventListener("pointercancel", () => {
      if (this.drag && this.drag.kind === "stroke") this.app.endStroke();
      this.drag = null;
    });
    canvas.addEventListener("pointerleave", () => {
      this.pointer = null;
      $("status-cursor").textContent = "";
      viewport.invalidate();
    });
    viewport.zoomOnWheel();
    $("stage").addEventListener("mousedown", (event) => {
      if (event.button === 1) event.preventDefault(); // no autoscroll on middle-drag
    });
  }

  onPointerDown(event) {
    const app = this.app;
    if (!app.imageLoaded() || this.drag) return;
    // Take the keys back from a form control (the shortcuts ignore typing targets), without
    // focusing the canvas: a focus ring after every mouse click would only distract.
    if (document.activeElement instanceof HTMLElement && document.activeElement !== document.body) {
      document.activeElement.blur();
    }
    const p = app.viewport.eventPoint(event);
    const point = app.viewport.toImage(p.x, p.y);
    const exclude = event.button === 2 || (event.button === 0 && event.altKey);
    if (event.button === 1 || (event.button === 0 && this.spaceHeld)) {
      this.drag = { kind: "pan", last: p };
      $("stage").classList.add("panning");
    } else if (event.button !== 0 && event.button !== 2) {
      return;
    } else if (app.tool === "prompt") {
      this.drag = { kind: exclude ? "exclude" : "prompt", start: p, point, box: null };
    } else {
      // Brush paints and eraser erases; with the right button (or Alt) each does the other.
      const paint = (app.tool === "brush") !== exclude;
      this.drag = { kind: "stroke" };
      app.beginStroke(point, paint ? 1 : 0);
    }
    event.preventDefault();
    $("canvas").setPointerCapture(event.pointerId);
  }

  onPointerMove(event) {
    const { viewport } = this.app;
    const p = viewport.eventPoint(event);
    this.pointer = p;
    const point = viewport.toImage(p.x, p.y);
    $("status-cursor").textContent = this.app.insideImage(point.x, point.y)
      ? `x ${Math.floor(point.x)}, y ${Math.floor(point.y)}`
      : "";
    const drag = this.drag;
    if (drag && drag.kind === "pan") {
      viewport.panBy(p.x - drag.last.x, p.y - drag.last.y);
      drag.last = p;
    } else if (drag && drag.kind === "prompt") {
      if (Math.hypot(p.x - drag.start.x, p.y - drag.start.y) > DRAG_THRESHOLD_PX) {
        drag.box = this.app.clampBox(drag.point, point);
      }
    } else if (drag && drag.kind === "stroke") {
      // Coalesced events keep fast strokes smooth where the browser batches them.
      const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
      for (const e of events.length ? events : [event]) {
        const q = viewport.eventPoint(e);
        this.app.extendStroke(viewport.toImage(q.x, q.y));
      }
    }
    viewport.invalidate();
  }

  onPointerUp(event) {
    const drag = this.drag;
    if (!drag) return;
    this.drag = null;
    $("stage").classList.remove("panning");
    if (drag.kind === "stroke") {
      this.app.endStroke();
    } else if (drag.kind === "prompt" && drag.box) {
      const [x0, y0, x1, y1] = drag.box;
      if (x1 - x0 >= 2 && y1 - y0 >= 2) this.app.setBox(drag.box);
    } else if (drag.kind === "prompt" || drag.kind === "exclude") {
      this.app.addPoint(drag.point.x, drag.point.y, drag.kind === "prompt" ? 1 : 0);
    }
    if ($("canvas").hasPointerCapture(event.pointerId)) {
      $("canvas").releasePointerCapture(event.pointerId);
    }
    this.app.viewport.invalidate();
  }

  // ---------------------------------------------------------------- keyboard

  bindKeys() {
    const release = () => {
      this.spaceHeld = false;
      $("stage").classList.remove("pan-ready");
    };
    window.addEventListener("keydown", (event) => this.onKeyDown(event));
    window.addEventListener("keyup", (event) => {
      if (event.code === "Space") release();
    });
    window.addEventListener("blur", release);
  }

  onKeyDown(event) {
    const app = this.app;
    const target = event.target;
    const typing =
      target instanceof HTMLSelectElement ||
      target instanceof HTMLTextAreaElement ||
      (target instanceof HTMLInputElement && target.type !== "range");
    if (typing) {
      if (event.key === "Escape") target.blur();
      return;
    }
    // A focused button or summary keeps its own Enter / Space (keyboard users press them).
    const activates = event.key === "Enter" || event.key === " ";
    if (activates && target instanceof HTMLElement && target.closest("button, summary, a")) return;
    const ctrl = event.ctrlKey || event.metaKey;
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    let action = null;
    if (ctrl && key === "z") action = event.shiftKey ? () => app.redo() : () => app.undo();
    else if (ctrl && key === "y") action = () => app.redo();
    else if (ctrl || event.altKey) action = null; // the browser's own shortcuts
    else if (event.code === "Space") {
      action = () => {
        this.spaceHeld = true;
        $("stage").classList.add("pan-ready");
      };
    } else if (Object.hasOwn(KEYS, key)) action = () => KEYS[key](app, event);
    if (!action) return;
    event.preventDefault();
    action();
  }

  // ---------------------------------------------------------------- buttons and fields

  bindControls() {
    const app = this.app;
    // Mouse clicks on buttons must not leave focus on them: Enter would then press the
    // button again instead of saving the mask. Keyboard focus (Tab) still works.
    for (const node of document.querySelectorAll("#annotate button")) {
      node.addEventListener("mousedown", (event) => event.preventDefault());
    }
    for (const node of document.querySelectorAll(".tool")) {
      node.addEventListener("click", () => app.setTool(node.dataset.tool));
    }
    for (const node of document.querySelectorAll(".candidate")) {
      node.addEventListener("click", () => app.choose(Number(node.dataset.index)));
    }
    const size = $("brush-size");
    size.addEventListener("input", () => app.setBrushSize(Number(size.value)));
    size.addEventListener("change", () => size.blur());
    const clicks = {
      undo: () => app.undo(),
      redo: () => app.redo(),
      "zoom-in": () => app.viewport.zoomCentre(ZOOM_STEP),
      "zoom-out": () => app.viewport.zoomCentre(1 / ZOOM_STEP),
      "zoom-fit": () => app.viewport.fit(),
      save: () => app.save(),
      clear: () => app.clearDraft(),
      next: () => app.nextImage(),
      "toggle-masks": () => app.saved.toggleAll(),
      "hq-toggle": () => app.toggleHq(),
      "conflict-reload": () => app.reloadAfterConflict(),
    };
    for (const [id, action] of Object.entries(clicks)) $(id).addEventListener("click", action);
    $("category").addEventListener("change", (event) => {
      app.onCategoryChange();
      event.target.blur(); // back to the shortcuts: Enter saves, not re-opens the list
    });
  }
}
