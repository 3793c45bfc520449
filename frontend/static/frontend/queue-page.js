// What the review and verify pages share: one item at a time from a queue, shown on its photo,
// judged with one key each; the photo can be zoomed and panned, and a small mask is ringed so
// that it is not missed. The pages differ in what they ask and store (review.js, verify.js).

export const ZOOM_STEP = 1.25;
const KEPT_PHOTOS = 8; // photos kept loaded: the next masks are often on the same image
const HALO = "rgba(15, 23, 42, 0.75)";
const SMALL_ON_SCREEN_PX = 28; // a mask smaller than this on screen gets a ring around it
const CLICK_SLOP_PX = 4; // a press that moves less than this is a click, not a pan

export const $ = (id) => document.getElementById(id);
export const fmt = (n) => Math.round(n).toLocaleString("en-US");

/** The zoom keys every queue page has. */
export const ZOOM_KEYS = {
  "+": (app) => app.viewport.zoomCentre(ZOOM_STEP),
  "=": (app) => app.viewport.zoomCentre(ZOOM_STEP),
  "-": (app) => app.viewport.zoomCentre(1 / ZOOM_STEP),
  0: (app) => app.frame(false),
};

/** The status line under the photo. */
export function say(text, kind = "info") {
  const element = $("status-message");
  element.textContent = text;
  element.dataset.kind = kind;
}

/** Buttons by id -> action; a mouse click must not leave focus on a button, or a later
 * shortcut key (Enter, Space) would press it again. */
export function bindButtons(root, clicks) {
  for (const node of root.querySelectorAll("button")) {
    node.addEventListener("mousedown", (event) => event.preventDefault());
  }
  for (const [id, action] of Object.entries(clicks)) $(id).addEventListener("click", action);
}

/** The key a shortcut table is looked up by: letters in lower case, named keys as they are. */
export function shortcutKey(event) {
  return event.key.length === 1 ? event.key.toLowerCase() : event.key;
}

/**
 * Pan by dragging (left or middle button), zoom with the wheel around the pointer.
 * enabled(): whether there is a photo to move; onClick(point, button): a press that did not
 * move (screen coordinates of the canvas), for pages where a click marks something.
 */
export function bindPanZoom(canvas, viewport, { enabled, onClick = null }) {
  let press = null; // {start, last, moved, button}
  canvas.addEventListener("pointerdown", (event) => {
    if (!enabled() || (event.button !== 0 && event.button !== 1)) return;
    event.preventDefault();
    const p = viewport.eventPoint(event);
    press = { start: p, last: p, moved: event.button === 1 || !onClick, button: event.button };
    if (press.moved) $("stage").classList.add("panning");
    canvas.setPointerCapture(event.pointerId);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!press) return;
    const p = viewport.eventPoint(event);
    if (!press.moved && Math.hypot(p.x - press.start.x, p.y - press.start.y) < CLICK_SLOP_PX) {
      return;
    }
    if (!press.moved) $("stage").classList.add("panning");
    press.moved = true;
    viewport.panBy(p.x - press.last.x, p.y - press.last.y);
    press.last = p;
  });
  const end = (event, cancelled) => {
    const ended = press;
    press = null;
    $("stage").classList.remove("panning");
    if (canvas.hasPointerCapture(event.pointerId)) canvas.releasePointerCapture(event.pointerId);
    if (ended && !ended.moved && !cancelled && onClick) onClick(ended.start, ended.button);
  };
  canvas.addEventListener("pointerup", (event) => end(event, false));
  canvas.addEventListener("pointercancel", (event) => end(event, true));
  viewport.zoomOnWheel();
}

/** Frame a mask's box with room around it to judge its edges (a mask as large as the image
 * gets the whole image). */
export function frameBox(viewport, image, [x, y, w, h]) {
  const side = Math.min(Math.max(w, h, 48) * 1.6, Math.max(image.width, image.height));
  viewport.fitRect(x + w / 2 - side / 2, y + h / 2 - side / 2, side, side);
}

/** A mask of a few pixels on screen would be missed: a dashed ring shows where it is. */
export function ringIfSmall(ctx, vp, [x, y, w, h]) {
  if (Math.max(w, h) * vp.scale >= SMALL_ON_SCREEN_PX) return;
  const centre = vp.toScreen(x + w / 2, y + h / 2);
  ctx.beginPath();
  ctx.arc(centre.x, centre.y, SMALL_ON_SCREEN_PX, 0, Math.PI * 2);
  ctx.setLineDash([5, 4]);
  ctx.lineWidth = 3;
  ctx.strokeStyle = HALO;
  ctx.stroke();
  ctx.lineWidth = 1.5;
  ctx.strokeStyle = "#facc15";
  ctx.stroke();
  ctx.setLineDash([]);
}

/** A promise kept per id (the last few); a failed one is forgotten so it can be retried. */
export function remember(cache, id, make) {
  if (!cache.has(id)) {
    const promise = make();
    promise.catch(() => cache.delete(id));
    cache.set(id, promise);
    if (cache.size > KEPT_PHOTOS) cache.delete(cache.keys().next().value);
  }
  return cache.get(id);
}

/** The photo of image ``id``, loaded from the page's file URL pattern. */
export function loadPhoto(cache, urlPattern, id) {
  return remember(
    cache,
    id,
    () =>
      new Promise((resolve, reject) => {
        const photo = new Image();
        photo.addEventListener("load", () => resolve(photo));
        photo.addEventListener("error", () =>
          reject(new Error(`the file of image ${id} could not be loaded`)),
        );
        photo.src = urlPattern.replace("{image}", String(id));
      }),
  );
}

/** For tests and the browser console: image pixel -> page coordinates. */
export function toPage(viewport, x, y) {
  const box = $("canvas").getBoundingClientRect();
  const s = viewport.toScreen(x, y);
  return { x: box.left + s.x, y: box.top + s.y };
}

export function score(value) {
  return value === null || value === undefined ? "n/a" : value.toFixed(3);
}

export function plural(n, word) {
  return `${fmt(n)} ${word}${n === 1 ? "" : "s"}`;
}

/** 94 -> "94", 93.75 -> "93.8". */
export function trim(value) {
  const rounded = Math.round(value * 10) / 10;
  return Number.isInteger(rounded) ? String(rounded) : rounded.toFixed(1);
}
