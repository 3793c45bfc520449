// Undo / redo over snapshots of the object being annotated.
//
// Snapshots share mask arrays instead of copying them: a mask is never changed in place once
// a snapshot holds it (a brush stroke paints into a fresh copy). The byte budget bounds what
// the copies made by strokes can cost on big images.

const MAX_STEPS = 200;
const MAX_MASK_BYTES = 256 * 1024 * 1024;

export class History {
  constructor() {
    this.past = [];
    this.future = [];
  }

  /** Remember `snapshot` (the state before a change); a new change forgets the redo steps. */
  push(snapshot) {
    this.past.push(snapshot);
    this.future = [];
    this.trim();
  }

  /** The state to go back to, given the current one (kept for redo); null when none. */
  undo(current) {
    if (!this.past.length) return null;
    this.future.push(current);
    return this.past.pop();
  }

  redo(current) {
    if (!this.future.length) return null;
    this.past.push(current);
    return this.future.pop();
  }

  clear() {
    this.past = [];
    this.future = [];
  }

  get canUndo() {
    return this.past.length > 0;
  }

  get canRedo() {
    return this.future.length > 0;
  }

  trim() {
    while (this.past.length > MAX_STEPS) this.past.shift();
    // Count each distinct mask array once; drop the oldest steps while over budget.
    for (;;) {
      const seen = new Set();
      let bytes = 0;
      for (const state of [...this.past, ...this.future]) {
        for (const mask of state.masks()) {
          if (!seen.has(mask)) {
            seen.add(mask);
            bytes += mask.byteLength;
          }
        }
      }
      if (bytes <= MAX_MASK_BYTES || this.past.length <= 1) return;
      this.past.shift();
    }
  }
}
