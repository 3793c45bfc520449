// What verification by people sent back on an image (engine/verification.py), as the pages
// draw it: the places of missed objects as numbered orange pins, and on the annotation page
// the image's masks verified bad outlined in red with a "rejected" label, beside a card that
// says who sent the image back and why (GET verification/feedback/?image=).

import { api, listAll } from "./api.js";
import { MaskOverlay } from "./mask-overlay.js";
import { decodeMask } from "./rle.js";

const HALO = "rgba(15, 23, 42, 0.75)";
export const HINT = "#f97316"; // orange: apart from every mask colour
const REJECTED = "#ef4444";

/** A numbered pin where a reviewer marked a missed object (screen coordinates). */
export function drawPin(ctx, { x, y }, number) {
  ctx.save();
  ctx.beginPath();
  ctx.arc(x, y, 13, 0, Math.PI * 2);
  ctx.fillStyle = "rgba(249, 115, 22, 0.18)";
  ctx.fill();
  ctx.lineWidth = 4;
  ctx.strokeStyle = HALO;
  ctx.stroke();
  ctx.lineWidth = 2.5;
  ctx.strokeStyle = HINT;
  ctx.stroke();
  ctx.beginPath();
  ctx.arc(x, y, 9, 0, Math.PI * 2);
  ctx.fillStyle = HINT;
  ctx.fill();
  ctx.fillStyle = "#ffffff";
  ctx.font = "700 11px system-ui, sans-serif";
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  ctx.fillText(String(number), x, y + 0.5);
  ctx.restore();
}

/** A dashed ring where an earlier check marked a missed object. */
export function drawOldPin(ctx, { x, y }) {
  ctx.save();
  ctx.beginPath();
  ctx.arc(x, y, 11, 0, Math.PI * 2);
  ctx.setLineDash([4, 3]);
  ctx.lineWidth = 3.5;
  ctx.strokeStyle = HALO;
  ctx.stroke();
  ctx.lineWidth = 2;
  ctx.strokeStyle = "#e5e7eb";
  ctx.stroke();
  ctx.restore();
}

/** A small label pill (screen coordinates, left edge at x, centred on y). */
function drawLabel(ctx, x, y, text, background) {
  ctx.save();
  ctx.font = "650 11px system-ui, sans-serif";
  const width = ctx.measureText(text).width + 12;
  const right = ctx.canvas.width / (window.devicePixelRatio || 1);
  const left = Math.min(Math.max(2, x), right - width - 2);
  ctx.beginPath();
  ctx.roundRect(left, y - 9, width, 18, 9);
  ctx.fillStyle = background;
  ctx.fill();
  ctx.lineWidth = 1;
  ctx.strokeStyle = "rgba(255, 255, 255, 0.85)";
  ctx.stroke();
  ctx.fillStyle = "#ffffff";
  ctx.textBaseline = "middle";
  ctx.fillText(text, left + 6, y + 0.5);
  ctx.restore();
}

export class VerificationFeedback {
  /**
   * @param {object} options
   *   apiBase "/api/projects/<id>/"; image {id, width, height};
   *   panel: the element the notice card goes first into;
   *   present(id) -> the mask is still on the page (not deleted) and shown;
   *   invalidate()
   */
  constructor(options) {
    this.options = options;
    this.hints = null; // {points, note, by, at} of the last failed exhaustivity check
    this.rejected = []; // [{mask, by, at, note}]
    this.outlines = []; // [{id, bbox, overlay}]
    this.card = null;
  }

  async load() {
    const { apiBase, image } = this.options;
    let feedback;
    try {
      feedback = await api(`${apiBase}verification/feedback/?image=${image.id}`);
    } catch {
      return; // the page works without it
    }
    this.hints = feedback.hints;
    this.rejected = feedback.rejected;
    if (this.rejected.length) {
      const masks = await listAll(
        `${apiBase}masks/?image=${image.id}&verification_state=bad`,
      ).catch(() => []);
      this.outlines = masks.map((mask) => {
        const [height, width] = mask.segmentation.size;
        const overlay = new MaskOverlay({
          fill: "rgba(239, 68, 68, 0.16)",
          edge: REJECTED,
          halo: HALO,
        });
        overlay.set(decodeMask(mask.segmentation.counts, height, width), width, height);
        return { id: mask.id, bbox: mask.bbox, overlay };
      });
    }
    this.renderCard();
    this.options.invalidate();
  }

  get points() {
    return this.hints ? this.hints.points : [];
  }

  /** Draw on top of the page's own drawing; ctx in screen coordinates. */
  draw(ctx, vp) {
    for (const { id, bbox, overlay } of this.outlines) {
      if (!this.options.present(id)) continue;
      overlay.draw(ctx, vp);
      const corner = vp.toScreen(bbox[0], bbox[1]);
      drawLabel(ctx, corner.x, Math.max(12, corner.y - 12), `rejected #${id}`, "#dc2626");
    }
    this.points.forEach(([x, y], n) => {
      const at = vp.toScreen(x, y);
      drawPin(ctx, at, n + 1);
      drawLabel(ctx, at.x + 16, at.y, "missed object?", "#c2410c");
    });
  }

  /** The card that says what came back, first in the side panel. */
  renderCard() {
    const rejected = this.rejected.length;
    const places = this.points.length;
    if (!rejected && !places) return;
    const card = document.createElement("section");
    card.className = "card verification-card";
    card.id = "verification-feedback";
    card.setAttribute("aria-label", "Sent back by verification");
    const head = document.createElement("h2");
    head.textContent = "Sent back by verification";
    card.append(head);
    const list = document.createElement("ul");
    if (rejected) {
      const who = [...new Set(this.rejected.map((r) => r.by).filter(Boolean))].join(", ");
      const ids = this.rejected.map((r) => `#${r.mask}`).join(", ");
      list.append(
        item(
          "rejected",
          `${rejected === 1 ? "Mask" : "Masks"} ${ids} judged bad${who ? ` by ${who}` : ""}: ` +
            `outlined in red; delete or redraw ${rejected === 1 ? "it" : "them"}.`,
          this.rejected.map((r) => r.note).filter(Boolean),
        ),
      );
    }
    if (places) {
      const by = this.hints.by ? ` by ${this.hints.by}` : "";
      list.append(
        item(
          "missed",
          `${places === 1 ? "An object" : `${places} objects`} nobody masked, marked${by} ` +
            "with orange pins: mask them.",
          this.hints.note ? [this.hints.note] : [],
        ),
      );
    }
    card.append(list);
    this.options.panel.prepend(card);
    this.card = card;
  }
}

function item(kind, text, notes) {
  const row = document.createElement("li");
  row.className = kind;
  const mark = document.createElement("span");
  mark.className = "verification-mark";
  mark.setAttribute("aria-hidden", "true");
  const body = document.createElement("span");
  body.textContent = text;
  for (const note of notes) {
    const quote = document.createElement("q");
    quote.textContent = note;
    body.append(" ", quote);
  }
  row.append(mark, body);
  return row;
}
