// One mask drawn over the photo at screen resolution, as the review and verify pages show the
// mask under judgement: a translucent fill, a light line along its edge on the inside and a
// dark halo on the outside.

const FILL = "rgba(34, 211, 238, 0.34)"; // cyan: apart from the buttons' green and red
const EDGE = "#ffffff";
const HALO = "rgba(15, 23, 42, 0.75)";

/**
 * The mask drawn over the photo at screen resolution: a translucent fill, a white line along
 * its edge on the inside and a dark halo on the outside, so that the edge reads on light and
 * dark photos at any zoom (a 1-px outline at image resolution vanishes once the image is
 * shown smaller than its size). Grown and shrunk shapes come from drawing the silhouette
 * shifted around a circle.
 */
export class MaskOverlay {
  /** colours: {fill, edge, halo} as CSS colours (default: the review page's cyan). */
  constructor({ fill = FILL, edge = EDGE, halo = HALO } = {}) {
    this.colors = { fill, edge, halo };
    this.source = document.createElement("canvas"); // image size, opaque where the mask is
    this.silhouette = document.createElement("canvas"); // canvas size (device pixels)
    this.work = document.createElement("canvas");
    this.spare = document.createElement("canvas");
  }

  /** mask: row-major Uint8Array of height * width. */
  set(mask, width, height) {
    const canvas = this.source;
    canvas.width = width;
    canvas.height = height;
    const ctx = canvas.getContext("2d");
    const image = ctx.createImageData(width, height);
    const data = image.data;
    for (let i = 0; i < mask.length; i += 1) {
      if (mask[i]) data.fill(255, i * 4, i * 4 + 4);
    }
    ctx.putImageData(image, 0, 0);
  }

  draw(ctx, vp) {
    const { width, height } = ctx.canvas;
    for (const canvas of [this.silhouette, this.work, this.spare]) {
      if (canvas.width !== width || canvas.height !== height) {
        canvas.width = width;
        canvas.height = height;
      }
    }
    const shape = this.silhouette.getContext("2d");
    shape.setTransform(1, 0, 0, 1, 0, 0);
    shape.clearRect(0, 0, width, height);
    vp.applyImageTransform(shape); // zoomed in, pixels stay square: the exact mask
    shape.drawImage(this.source, 0, 0);
    const ratio = vp.ratio;
    ctx.save();
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.drawImage(this.halo(3 * ratio), 0, 0);
    ctx.drawImage(this.tinted(), 0, 0);
    ctx.drawImage(this.edge(2 * ratio), 0, 0);
    ctx.restore();
  }

  /** The silhouette grown by `radius` px, less the silhouette, in HALO. */
  halo(radius) {
    const ctx = clean(this.work);
    for (const [dx, dy] of around(radius)) ctx.drawImage(this.silhouette, dx, dy);
    ctx.globalCompositeOperation = "destination-out";
    ctx.drawImage(this.silhouette, 0, 0);
    return paint(ctx, this.colors.halo);
  }

  tinted() {
    const ctx = clean(this.spare);
    ctx.drawImage(this.silhouette, 0, 0);
    return paint(ctx, this.colors.fill);
  }

  /** The silhouette less itself shrunk by `radius` px, in EDGE. */
  edge(radius) {
    const shrunk = clean(this.spare);
    shrunk.drawImage(this.silhouette, 0, 0);
    shrunk.globalCompositeOperation = "destination-in";
    for (const [dx, dy] of around(radius)) shrunk.drawImage(this.silhouette, dx, dy);
    shrunk.globalCompositeOperation = "source-over";
    const ctx = clean(this.work);
    ctx.drawImage(this.silhouette, 0, 0);
    ctx.globalCompositeOperation = "destination-out";
    ctx.drawImage(this.spare, 0, 0);
    return paint(ctx, this.colors.edge);
  }
}

function clean(canvas) {
  const ctx = canvas.getContext("2d");
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.globalCompositeOperation = "source-over";
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  return ctx;
}

/** Colour what is drawn on ctx with `color`, keeping its coverage; returns the canvas. */
function paint(ctx, color) {
  ctx.globalCompositeOperation = "source-in";
  ctx.fillStyle = color;
  ctx.fillRect(0, 0, ctx.canvas.width, ctx.canvas.height);
  ctx.globalCompositeOperation = "source-over";
  return ctx.canvas;
}

/** Offsets on circles of radius r and r / 2: shifted copies that leave no gap in a ring. */
function around(r) {
  const offsets = [];
  for (const radius of [r, r / 2]) {
    for (let k = 0; k < 12; k += 1) {
      const angle = (k * Math.PI) / 6;
      offsets.push([radius * Math.cos(angle), radius * Math.sin(angle)]);
    }
  }
  return offsets;
}
