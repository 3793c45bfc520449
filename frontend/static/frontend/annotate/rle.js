// COCO run-length encoding, as engine/rle.py and pycocotools write it.
//
// Runs are column-major (Fortran order: pixel index = x * height + y) and start with a run of
// zeros. The compressed string packs each count in 5-bit groups (48 + value, bit 0x20 =
// "more groups follow", bit 0x10 of the last group = sign), and every count after the second
// is stored as the difference to the count two places back.
//
// In the page a mask is a Uint8Array of height * width in ROW-major order (index = y * width
// + x), because that is how canvas ImageData is laid out and how the brush paints; the
// conversion to and from column-major happens only here.

/** The run lengths of a compressed COCO RLE string (port of engine.rle.decode_counts_string). */
export function decodeCountsString(counts) {
  const runs = [];
  let pos = 0;
  while (pos < counts.length) {
    // Arithmetic instead of JS bitwise operators: those work on 32 bits, and a 7-group count
    // needs 35. Counts stay far below 2**53, so doubles are exact.
    let value = 0;
    let shift = 0;
    let more = true;
    while (more) {
      if (pos >= counts.length) throw new Error("RLE counts string ends in the middle of a number");
      const char = counts.charCodeAt(pos) - 48;
      if (char < 0 || char > 63) {
        throw new Error(`RLE counts contain an invalid character ${JSON.stringify(counts[pos])}`);
      }
      value += (char & 0x1f) * 2 ** (5 * shift);
      more = (char & 0x20) !== 0;
      pos += 1;
      shift += 1;
      // Sign extension: Python's `value |= -1 << (5 * shift)` on a value below 2**(5*shift).
      if (!more && (char & 0x10)) value -= 2 ** (5 * shift);
    }
    if (runs.length > 2) value += runs[runs.length - 2];
    runs.push(value);
  }
  return runs;
}

/** Compress run lengths into COCO's string form (port of engine.rle.encode_counts). */
export function encodeCountsString(runs) {
  let out = "";
  for (let i = 0; i < runs.length; i += 1) {
    let value = runs[i] - (i > 2 ? runs[i - 2] : 0);
    let more = true;
    while (more) {
      // value & 0x1f and value >> 5 on possibly negative numbers, without 32-bit overflow.
      let char = ((value % 32) + 32) % 32;
      value = Math.floor(value / 32);
      more = !(((char & 0x10) === 0 && value === 0) || ((char & 0x10) !== 0 && value === -1));
      if (more) char |= 0x20;
      out += String.fromCharCode(char + 48);
    }
  }
  return out;
}

/** Decode a COCO RLE (compressed string or list of runs) into a row-major Uint8Array mask. */
export function decodeMask(counts, height, width) {
  const runs = typeof counts === "string" ? decodeCountsString(counts) : counts;
  const total = height * width;
  const mask = new Uint8Array(total);
  let index = 0; // column-major position of the run's first pixel
  for (let r = 0; r < runs.length; r += 1) {
    const run = runs[r];
    if (run < 0 || index + run > total) throw new Error("RLE counts do not fit the image size");
    if (r % 2 === 1) {
      // A run of ones: walk down the column, wrapping to the next column at the bottom.
      let x = Math.floor(index / height);
      let y = index - x * height;
      for (let k = 0; k < run; k += 1) {
        mask[y * width + x] = 1;
        y += 1;
        if (y === height) {
          y = 0;
          x += 1;
        }
      }
    }
    index += run;
  }
  if (index !== total) throw new Error(`RLE counts sum to ${index}, not ${height} x ${width}`);
  return mask;
}

/** Uncompressed column-major COCO counts of a row-major mask (what POST masks/ accepts). */
export function encodeMask(mask, height, width) {
  const runs = [];
  let current = 0; // COCO starts with a run of zeros, possibly empty
  let run = 0;
  for (let x = 0; x < width; x += 1) {
    for (let index = x; index < mask.length; index += width) {
      const value = mask[index] ? 1 : 0;
      if (value !== current) {
        runs.push(run);
        run = 0;
        current = value;
      }
      run += 1;
    }
  }
  runs.push(run);
  return runs;
}

/** Number of set pixels. */
export function maskArea(mask) {
  let area = 0;
  for (let i = 0; i < mask.length; i += 1) area += mask[i] ? 1 : 0;
  return area;
}

/** [x, y, width, height] of the set pixels (COCO convention), or null for an empty mask. */
export function maskBbox(mask, height, width) {
  let x0 = width;
  let y0 = height;
  let x1 = -1;
  let y1 = -1;
  for (let y = 0; y < height; y += 1) {
    const row = y * width;
    for (let x = 0; x < width; x += 1) {
      if (mask[row + x]) {
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        y1 = y;
      }
    }
  }
  return x1 < 0 ? null : [x0, y0, x1 - x0 + 1, y1 - y0 + 1];
}
