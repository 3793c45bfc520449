// The image's saved masks: the side list (select, hide, edit, delete) and the overlay that
// shows them, own and other annotators' alike, one colour per mask. Masks the model pre-filled
// before anyone opened the image (the semi-automatic stage) are drawn apart, tagged in the
// list, and may be deleted by whoever may delete masks; a hint says how many there are.

import { api, listAll } from "./api.js";
import { maskColor, rgbCss, SavedLayer } from "./layers.js";
import { decodeCountsString } from "./rle.js";

const $ = (id) => document.getElementById(id);
const fmt = (n) => Math.round(n).toLocaleString("en-US");

export class SavedMasks {
  /**
   * @param {object} options
   *   image {id, width, height}; apiBase "/api/projects/<id>/"; username; categories;
   *   mayDelete (the role may delete any mask of the project: the pre-filled ones too);
   *   editingId() -> id of the mask being edited (drawn by the editor, not here) or null;
   *   onEdit(entry), onDeleted(entry), say(text, kind), invalidate()
   */
  constructor(options) {
    this.options = options;
    this.entries = []; // [{id, runs, area, category, createdBy, revision, own, hidden, rgb, ...}]
    this.selected = null;
    this.allHidden = false; // the H key: hides the overlay, keeps each mask's own setting
    this.deleteArmed = null;
    this.layer = new SavedLayer(options.image.width, options.image.height);
    this.categories = new Map(options.categories.map((c) => [c.id, c]));
  }

  async load() {
    const { apiBase, image } = this.options;
    const masks = await listAll(`${apiBase}masks/?image=${image.id}`);
    this.entries = [];
    for (const mask of masks) this.add(mask, { render: false });
    this.render();
  }

  /** Add or replace a mask as the API returns it. */
  add(mask, { render = true } = {}) {
    const counts = mask.segmentation.counts;
    const entry = {
      id: mask.id,
      // Runs, not a decoded bitmap: the overlay stamps them directly and they stay small.
      runs: typeof counts === "string" ? decodeCountsString(counts) : counts,
      area: mask.area,
      category: mask.category,
      createdBy: mask.created_by,
      revision: mask.revision,
      seconds: mask.seconds_spent || 0,
      clicks: mask.clicks || 0,
      own: mask.created_by === this.options.username,
      prefilled: isPrefilled(mask),
      predictedIou: mask.predicted_iou,
      hidden: false,
      rgb: maskColor(mask.id),
    };
    const at = this.entries.findIndex((m) => m.id === mask.id);
    if (at >= 0) {
      entry.hidden = this.entries[at].hidden;
      this.entries[at] = entry;
    } else {
      this.entries.push(entry);
    }
    if (render) this.render();
  }

  select(id) {
    this.selected = id;
    this.render();
  }

  toggleAll() {
    this.allHidden = !this.allHidden;
    this.renderList();
    this.options.invalidate();
  }

  /** Repaint the overlay and the list. */
  render() {
    const editingId = this.options.editingId();
    const shown = this.entries.filter((m) => !m.hidden && m.id !== editingId);
    const selected = this.selected;
    // The selected mask is stamped last so that it is on top.
    shown.sort((a, b) => (a.id === selected) - (b.id === selected));
    this.layer.render(
      shown.map((m) => ({
        runs: m.runs,
        rgb: m.rgb,
        look: selected === null ? "normal" : m.id === selected ? "selected" : "dim",
        prefilled: m.prefilled,
      })),
    );
    this.renderList();
    this.options.invalidate();
  }

  renderList() {
    $("mask-list").replaceChildren(...this.entries.map((m) => this.item(m)));
    $("mask-count").textContent = String(this.entries.length);
    $("mask-empty").hidden = this.entries.length > 0;
    const prefilled = this.entries.filter((m) => m.prefilled).length;
    const hint = $("prefill-hint");
    hint.hidden = prefilled === 0;
    $("prefill-count").textContent = `${prefilled} ${prefilled === 1 ? "mask" : "masks"}`;
    const toggle = $("toggle-masks");
    toggle.textContent = this.allHidden ? "Show all" : "Hide all";
    toggle.setAttribute("aria-pressed", String(this.allHidden));
  }

  item(m) {
    const item = document.createElement("li");
    item.className = "mask-item";
    item.dataset.maskId = m.id;
    item.classList.toggle("selected", m.id === this.selected);
    item.classList.toggle("hidden", m.hidden);
    item.classList.toggle("prefilled", m.prefilled);
    const category = this.categories.get(m.category);
    const who = m.own ? "you" : m.createdBy || "model";
    const score =
      m.prefilled && typeof m.predictedIou === "number"
        ? ` · IoU ${m.predictedIou.toFixed(2)}`
        : "";
    const label = m.prefilled
      ? `Select mask ${m.id} (pre-filled by the model)`
      : `Select mask ${m.id}`;
    const select = button("mask-select", label, null);
    select.setAttribute("aria-pressed", String(m.id === this.selected));
    const name = element(
      "span",
      "mask-name",
      category ? category.name : "No category",
      {},
      `#${m.id} `,
    );
    if (m.prefilled) name.append(element("span", "tag prefilled-tag", "pre-filled"));
    select.append(
      m.prefilled
        ? element("span", "swatch prefilled", "", {
            background: rgbCss(m.rgb, 0.3),
            borderColor: rgbCss(m.rgb),
          })
        : element("span", "swatch", "", { background: rgbCss(m.rgb) }),
      name,
      element("span", "mask-meta", `${who} · ${fmt(m.area)} px${score}`),
    );
    select.addEventListener("click", () => this.select(this.selected === m.id ? null : m.id));
    const hide = button(
      "icon-button small",
      `${m.hidden ? "Show" : "Hide"} mask ${m.id}`,
      m.hidden ? "eye-off" : "eye",
    );
    hide.setAttribute("aria-pressed", String(m.hidden));
    hide.addEventListener("click", () => {
      m.hidden = !m.hidden;
      this.render();
    });
    item.append(select, hide);
    // The list offers changes only on one's own masks (the API lets admins do more), and
    // deletion of the model's pre-filled ones: wrong ones go, right ones stay as they are.
    if (m.own) {
      const edit = button("icon-button small", `Edit mask ${m.id}`, "edit");
      edit.addEventListener("click", () => this.options.onEdit(m));
      item.append(edit, this.deleteButton(m));
    } else if (m.prefilled && this.options.mayDelete) {
      item.append(this.deleteButton(m));
    }
    return item;
  }

  deleteButton(m) {
    const remove = button("icon-button small danger", `Delete mask ${m.id}`, "trash");
    if (this.deleteArmed === m.id) {
      remove.classList.add("armed");
      remove.title = "Click again to delete";
    }
    remove.addEventListener("click", () => this.remove(m));
    return remove;
  }

  async remove(entry) {
    const { say } = this.options;
    // Two clicks, no modal dialog: the first arms the button for a few seconds.
    if (this.deleteArmed !== entry.id) {
      this.deleteArmed = entry.id;
      say(`Click the red bin again to delete mask #${entry.id}.`, "warn");
      this.renderList();
      window.setTimeout(() => {
        if (this.deleteArmed === entry.id) {
          this.deleteArmed = null;
          this.renderList();
        }
      }, 3000);
      return;
    }
    this.deleteArmed = null;
    try {
      await api(`${this.options.apiBase}masks/${entry.id}/`, { method: "DELETE" });
      this.entries = this.entries.filter((m) => m.id !== entry.id);
      if (this.selected === entry.id) this.selected = null;
      this.options.onDeleted(entry);
      say(`Deleted mask #${entry.id}.`, "ok");
    } catch (error) {
      say(`Not deleted: ${error.message}`, "error");
    }
    this.render();
  }
}

/** Pre-filled by the model before anyone opened the image (engine/stages/semi.py): a mask of
 * the semi-automatic stage that no person made. People's masks on a project in that stage
 * carry the same stage, and their author. */
export function isPrefilled(mask) {
  return mask.source_stage === "semi" && !mask.created_by;
}

/** A button that does not keep focus after a mouse click (Enter must still save). */
export function button(className, label, icon) {
  const node = document.createElement("button");
  node.type = "button";
  node.className = className;
  node.setAttribute("aria-label", label);
  node.title = label;
  node.addEventListener("mousedown", (event) => event.preventDefault());
  if (icon) {
    node.innerHTML = `<svg class="icon" aria-hidden="true"><use href="#i-${icon}"/></svg>`;
  }
  return node;
}

function element(tag, className, text, style = {}, strong = "") {
  const node = document.createElement(tag);
  node.className = className;
  if (strong) node.append(Object.assign(document.createElement("strong"), { textContent: strong }));
  node.append(text);
  Object.assign(node.style, style);
  return node;
}
