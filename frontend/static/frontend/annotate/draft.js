// The object being annotated now, as one value that undo/redo can snapshot.

export class Draft {
  constructor() {
    this.points = []; // [{x, y, label}] in image pixels, label 1 include / 0 exclude
    this.box = null; // [x0, y0, x1, y1]
    this.candidates = []; // [{mask: Uint8Array, score, area}] best first
    this.selected = 0;
    this.handle = null; // the model's handle of the answer the candidates came from
    this.generation = 0; // socket generation the handle belongs to
    this.edited = null; // Uint8Array once brushed: the candidate with the strokes applied
    this.editedArea = 0;
    this.strokes = 0;
    // The prompt changed since the candidates were computed: restoring such a state (undo)
    // asks the model again.
    this.stale = false;
    this.editing = null; // {id, revision, seconds, clicks} when fixing a saved mask
  }

  /** A copy to change; the original stays as it was (History holds it). */
  clone() {
    const copy = Object.assign(new Draft(), this);
    copy.points = this.points.slice();
    copy.candidates = this.candidates.slice();
    return copy;
  }

  /** The mask arrays this state holds (History counts their bytes). */
  masks() {
    const masks = this.candidates.map((c) => c.mask);
    if (this.edited) masks.push(this.edited);
    return masks;
  }

  /** What would be saved: the brushed mask, else the chosen candidate. */
  get mask() {
    if (this.edited) return this.edited;
    const candidate = this.candidates[this.selected];
    return candidate ? candidate.mask : null;
  }

  get area() {
    if (this.edited) return this.editedArea;
    const candidate = this.candidates[this.selected];
    return candidate ? candidate.area : 0;
  }

  get isEmpty() {
    return !this.points.length && !this.box && !this.mask && !this.editing;
  }
}
