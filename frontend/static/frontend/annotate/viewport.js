// The canvas and its view transform: screen = image * scale + offset (CSS pixels).
//
// Drawing is coalesced into one requestAnimationFrame: every change calls invalidate(), so a
// burst of pointer events costs one repaint per frame.

const MIN_SCALE = 0.05;
const MAX_SCALE = 40;

export class Viewport {
  constructor(canvas, draw) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.draw = draw;
    this.scale = 1;
    this.offsetX = 0;
    this.offsetY = 0;
    this.width = 0; // CSS pixels
    this.height = 0;
    this.imageWidth = 0;
    this.imageHeight = 0;
    this.frame = null;
    this.onChange = () => {};
    new ResizeObserver(() => this.resize()).observe(canvas.parentElement);
    this.resize();
  }

  resize() {
    const box = this.canvas.parentElement.getBoundingClientRect();
    const ratio = window.devicePixelRatio || 1;
    const hadSize = this.width > 0;
    const before = hadSize ? this.toImage(this.width / 2, this.height / 2) : null;
    this.width = Math.max(1, Math.floor(box.width));
    this.height = Math.max(1, Math.floor(box.height));
    this.canvas.width = Math.round(this.width * ratio);
    this.canvas.height = Math.round(this.height * ratio);
    this.canvas.style.width = `${this.width}px`;
    this.canvas.style.height = `${this.height}px`;
    this.ratio = ratio;
    if (before) {
      // Keep what was in the middle in the middle.
      this.offsetX = this.width / 2 - before.x * this.scale;
      this.offsetY = this.height / 2 - before.y * this.scale;
    }
    this.invalidate();
  }

  setImageSize(width, height) {
    this.imageWidth = width;
    this.imageHeight = height;
    this.fit();
  }

  /** Whole image visible, centred, with a margin. */
  fit() {
    if (!this.imageWidth) return;
    this.fitRect(0, 0, this.imageWidth, this.imageHeight);
  }

  /** The image rectangle [x, x + w) x [y, y + h) visible, centred, with a margin. */
  fitRect(x, y, w, h) {
    const margin = 24;
    this.scale = Math.min((this.width - 2 * margin) / w, (this.height - 2 * margin) / h);
    this.scale = Math.min(MAX_SCALE, Math.max(MIN_SCALE, this.scale));
    this.offsetX = (this.width - w * this.scale) / 2 - x * this.scale;
    this.offsetY = (this.height - h * this.scale) / 2 - y * this.scale;
    this.changed();
  }

  /** Zoom by `factor` keeping the image point under (sx, sy) where it is. */
  zoomAt(factor, sx, sy) {
    const scale = Math.min(MAX_SCALE, Math.max(MIN_SCALE, this.scale * factor));
    const point = this.toImage(sx, sy);
    this.scale = scale;
    this.offsetX = sx - point.x * scale;
    this.offsetY = sy - point.y * scale;
    this.changed();
  }

  zoomCentre(factor) {
    this.zoomAt(factor, this.width / 2, this.height / 2);
  }

  panBy(dx, dy) {
    this.offsetX += dx;
    this.offsetY += dy;
    this.changed();
  }

  toImage(sx, sy) {
    return { x: (sx - this.offsetX) / this.scale, y: (sy - this.offsetY) / this.scale };
  }

  toScreen(x, y) {
    return { x: x * this.scale + this.offsetX, y: y * this.scale + this.offsetY };
  }

  /** Zoom with the wheel around the pointer, on the canvas this viewport draws. */
  zoomOnWheel() {
    this.canvas.addEventListener(
      "wheel",
      (event) => {
        event.preventDefault();
        const p = this.eventPoint(event);
        // Lines (Firefox) and pixels (Chrome) both end up as a gentle exponential zoom.
        const delta = event.deltaMode === 1 ? event.deltaY * 16 : event.deltaY;
        this.zoomAt(Math.exp(-delta * 0.0015), p.x, p.y);
      },
      { passive: false },
    );
  }

  /** Pointer event -> canvas CSS coordinates. */
  eventPoint(event) {
    const box = this.canvas.getBoundingClientRect();
    return { x: event.clientX - box.left, y: event.clientY - box.top };
  }

  changed() {
    this.onChange();
    this.invalidate();
  }

  invalidate() {
    if (this.frame !== null) return;
    this.frame = window.requestAnimationFrame(() => {
      this.frame = null;
      const ctx = this.ctx;
      ctx.setTransform(this.ratio, 0, 0, this.ratio, 0, 0);
      ctx.clearRect(0, 0, this.width, this.height);
      this.draw(ctx, this);
    });
  }

  /** Apply the image transform to ctx (on top of the device-pixel ratio). */
  applyImageTransform(ctx) {
    const r = this.ratio;
    ctx.setTransform(r * this.scale, 0, 0, r * this.scale, r * this.offsetX, r * this.offsetY);
    // Zoomed in, pixels stay square (edits are pixel-precise); zoomed out, smooth.
    ctx.imageSmoothingEnabled = this.scale < 1;
  }

  applyScreenTransform(ctx) {
    ctx.setTransform(this.ratio, 0, 0, this.ratio, 0, 0);
  }
}
