// Brush and eraser: discs stamped into a row-major Uint8Array mask along the pointer's path.
//
// Stamps are spaced at a third of the radius so a fast stroke has no gaps; each call returns
// the pixels it changed (signed, for the live area) and the rectangle it touched (for a
// partial repaint of the overlay).

export class Stroke {
  constructor(mask, width, height, { radius, value }) {
    this.mask = mask;
    this.width = width;
    this.height = height;
    this.radius = Math.max(0.5, radius);
    this.value = value; // 1 paints (brush), 0 erases
    this.last = null;
    this.points = 0;
    this.changed = 0; // pixels flipped so far
    this.bounds = null; // [x0, y0, x1, y1) touched so far
  }

  /** Extend the stroke to image point (x, y); returns the rectangle touched, or null. */
  to(x, y) {
    const from = this.last || { x, y };
    this.last = { x, y };
    this.points += 1;
    const distance = Math.hypot(x - from.x, y - from.y);
    const steps = Math.max(1, Math.ceil(distance / Math.max(0.5, this.radius / 3)));
    let rect = null;
    for (let s = 0; s <= steps; s += 1) {
      const t = s / steps;
      const touched = this.stamp(from.x + (x - from.x) * t, from.y + (y - from.y) * t);
      if (touched) rect = union(rect, touched);
    }
    if (rect) this.bounds = union(this.bounds, rect);
    return rect;
  }

  stamp(cx, cy) {
    const { mask, width, height, radius, value } = this;
    const x0 = Math.max(0, Math.floor(cx - radius));
    const x1 = Math.min(width, Math.ceil(cx + radius));
    const y0 = Math.max(0, Math.floor(cy - radius));
    const y1 = Math.min(height, Math.ceil(cy + radius));
    if (x1 <= x0 || y1 <= y0) return null;
    const r2 = radius * radius;
    for (let y = y0; y < y1; y += 1) {
      const dy = y + 0.5 - cy;
      const row = y * width;
      for (let x = x0; x < x1; x += 1) {
        const dx = x + 0.5 - cx;
        // A pixel belongs to the disc when its centre does.
        if (dx * dx + dy * dy <= r2 && mask[row + x] !== value) {
          mask[row + x] = value;
          this.changed += 1;
        }
      }
    }
    return [x0, y0, x1, y1];
  }
}

function union(a, b) {
  if (!a) return b.slice();
  return [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[2], b[2]), Math.max(a[3], b[3])];
}
