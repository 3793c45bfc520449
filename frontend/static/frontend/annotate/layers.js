// Masks turned into coloured, outlined overlays: offscreen canvases at the image's size that
// the viewport draws scaled on top of the photo.
//
// Filling ImageData by hand (instead of drawing paths) keeps the overlay pixel-exact: what the
// annotator sees is exactly the mask that will be saved.

export function hexToRgb(hex) {
  const value = parseInt(hex.replace("#", ""), 16);
  return [(value >> 16) & 255, (value >> 8) & 255, value & 255];
}

/** A distinct, stable colour per saved mask: golden-angle hues from its id. */
export function maskColor(id) {
  const hue = (id * 137.508) % 360;
  return hslToRgb(hue / 360, 0.78, 0.55);
}

function hslToRgb(h, s, l) {
  const q = l < 0.5 ? l * (1 + s) : l + s - l * s;
  const p = 2 * l - q;
  const channel = (t) => {
    let u = t;
    if (u < 0) u += 1;
    if (u > 1) u -= 1;
    if (u < 1 / 6) return p + (q - p) * 6 * u;
    if (u < 1 / 2) return q;
    if (u < 2 / 3) return p + (q - p) * (2 / 3 - u) * 6;
    return p;
  };
  return [channel(h + 1 / 3), channel(h), channel(h - 1 / 3)].map((v) => Math.round(v * 255));
}

export function rgbCss([r, g, b], alpha = 1) {
  return `rgba(${r}, ${g}, ${b}, ${alpha})`;
}

class Layer {
  constructor(width, height) {
    this.width = width;
    this.height = height;
    this.canvas = document.createElement("canvas");
    this.canvas.width = width;
    this.canvas.height = height;
    this.ctx = this.canvas.getContext("2d");
    this.image = this.ctx.createImageData(width, height);
  }

  clear() {
    this.image.data.fill(0);
    this.ctx.clearRect(0, 0, this.width, this.height);
  }
}

/** The mask being made: filled in its colour, outlined in white so its edge reads on any photo. */
export class CurrentLayer extends Layer {
  constructor(width, height) {
    super(width, height);
    this.mask = null;
    this.rgb = [56, 189, 248];
  }

  set(mask, rgb) {
    const sameColour = !rgb || rgb.join() === this.rgb.join();
    // Refreshing the panel calls this often; repaint only for another mask or colour (a
    // stroke repaints its own rectangles as it goes).
    if (mask === this.mask && sameColour) return;
    this.mask = mask;
    if (rgb) this.rgb = rgb;
    if (!mask) {
      this.clear();
      return;
    }
    this.renderRect(0, 0, this.width, this.height);
  }

  /** Repaint [x0, x1) x [y0, y1) after a brush stroke touched it (plus the 1-px outline ring). */
  renderRect(x0, y0, x1, y1) {
    const { width, height, mask } = this;
    const left = Math.max(0, Math.floor(x0) - 1);
    const top = Math.max(0, Math.floor(y0) - 1);
    const right = Math.min(width, Math.ceil(x1) + 1);
    const bottom = Math.min(height, Math.ceil(y1) + 1);
    if (right <= left || bottom <= top) return;
    const data = this.image.data;
    const [r, g, b] = this.rgb;
    for (let y = top; y < bottom; y += 1) {
      for (let x = left; x < right; x += 1) {
        const i = y * width + x;
        const o = i * 4;
        if (!mask[i]) {
          data[o + 3] = 0;
          continue;
        }
        const edge =
          x === 0 ||
          y === 0 ||
          x === width - 1 ||
          y === height - 1 ||
          !mask[i - 1] ||
          !mask[i + 1] ||
          !mask[i - width] ||
          !mask[i + width];
        if (edge) {
          data[o] = 255;
          data[o + 1] = 255;
          data[o + 2] = 255;
          data[o + 3] = 235;
        } else {
          data[o] = r;
          data[o + 1] = g;
          data[o + 2] = b;
          data[o + 3] = 125;
        }
      }
    }
    this.ctx.putImageData(this.image, 0, 0, left, top, right - left, bottom - top);
  }
}

const LOOK = {
  // [fill alpha, outline alpha] out of 255
  normal: [90, 230],
  selected: [150, 255],
  dim: [35, 110],
};

// Masks the model pre-filled (the semi-automatic stage) are told apart from people's: a lighter
// fill crossed by thin diagonal hatching, and a dashed outline (the mask's colour alternating
// with white, so that it reads on dark and light photos alike).
const PREFILLED_LOOK = {
  // [fill alpha, hatch alpha, outline alpha]
  normal: [34, 120, 240],
  selected: [90, 190, 255],
  dim: [14, 50, 110],
};

/**
 * The saved masks of the image, all in one canvas. Each mask's runs are stamped into a label
 * buffer (later masks on top, the selected one last), then one pass colours every pixel by
 * its label and outlines where the label changes, so touching masks keep a visible border.
 */
export class SavedLayer extends Layer {
  constructor(width, height) {
    super(width, height);
    this.labels = new Uint16Array(width * height);
    // Dashes and hatching in image pixels, so that they stay visible once a large image is
    // shown smaller than its size.
    this.dash = Math.max(3, Math.round(Math.max(width, height) / 160));
    this.hatch = 3 * this.dash;
    this.hatchWidth = Math.max(1, Math.round(this.dash / 3));
  }

  /**
   * entries: [{runs: column-major COCO runs, rgb: [r, g, b], look: "normal"|"selected"|"dim",
   *   prefilled: true for the model's pre-filled masks}]
   */
  render(entries) {
    const { width, height, labels } = this;
    labels.fill(0);
    entries.slice(0, 65535).forEach((entry, n) => {
      const label = n + 1;
      let index = 0;
      const runs = entry.runs;
      for (let r = 0; r < runs.length; r += 1) {
        const run = runs[r];
        if (r % 2 === 1) {
          let x = Math.floor(index / height);
          let y = index - x * height;
          for (let k = 0; k < run; k += 1) {
            labels[y * width + x] = label;
            y += 1;
            if (y === height) {
              y = 0;
              x += 1;
            }
          }
        }
        index += run;
      }
    });
    const looks = entries.map((entry) => LOOK[entry.look] || LOOK.normal);
    const prefilled = entries.map((entry) =>
      entry.prefilled ? PREFILLED_LOOK[entry.look] || PREFILLED_LOOK.normal : null,
    );
    const { dash, hatch, hatchWidth } = this;
    const data = this.image.data;
    for (let y = 0; y < height; y += 1) {
      for (let x = 0; x < width; x += 1) {
        const i = y * width + x;
        const o = i * 4;
        const label = labels[i];
        if (!label) {
          data[o + 3] = 0;
          continue;
        }
        const [r, g, b] = entries[label - 1].rgb;
        const edge =
          x === 0 ||
          y === 0 ||
          x === width - 1 ||
          y === height - 1 ||
          labels[i - 1] !== label ||
          labels[i + 1] !== label ||
          labels[i - width] !== label ||
          labels[i + width] !== label;
        data[o] = r;
        data[o + 1] = g;
        data[o + 2] = b;
        const model = prefilled[label - 1];
        if (!model) {
          const [fill, outline] = looks[label - 1];
          data[o + 3] = edge ? outline : fill;
          continue;
        }
        const [fill, hatched, outline] = model;
        if (edge) {
          // Dashes along edges of any direction: the y term is offset by half a dash, so that
          // a diagonal edge crosses the x and y boundaries at different places.
          if ((Math.floor(x / dash) + Math.floor((y + dash / 2) / dash)) & 1) {
            data[o] = 255;
            data[o + 1] = 255;
            data[o + 2] = 255;
          }
          data[o + 3] = outline;
        } else {
          data[o + 3] = (x + y) % hatch < hatchWidth ? hatched : fill;
        }
      }
    }
    this.ctx.putImageData(this.image, 0, 0);
  }
}
