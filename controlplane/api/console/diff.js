// A line diff of two policy documents, the way `fusionctl policy diff` shows one: both documents
// printed the same way (keys sorted, two-space indent), then the longest common subsequence of lines.

function sorted(value) {
  if (Array.isArray(value)) return value.map(sorted);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.keys(value).sort().map((key) => [key, sorted(value[key])]));
  }
  return value;
}

/** A document as the lines a reader compares: sorted keys, two-space indent. */
export function pretty(document) {
  return JSON.stringify(sorted(document), null, 2).split("\n");
}

/** [[" ", line] | ["-", line] | ["+", line], ...] turning `before` into `after`. */
export function lineDiff(before, after) {
  const n = before.length;
  const m = after.length;
  // lengths of common subsequences of the suffixes; policies are hundreds of lines, so n*m is small
  const common = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i -= 1) {
    for (let j = m - 1; j >= 0; j -= 1) {
      common[i][j] = before[i] === after[j] ? common[i + 1][j + 1] + 1 : Math.max(common[i + 1][j], common[i][j + 1]);
    }
  }
  const lines = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (before[i] === after[j]) {
      lines.push([" ", before[i]]);
      i += 1;
      j += 1;
    } else if (common[i + 1][j] >= common[i][j + 1]) {
      lines.push(["-", before[i]]);
      i += 1;
    } else {
      lines.push(["+", after[j]]);
      j += 1;
    }
  }
  while (i < n) lines.push(["-", before[i++]]);
  while (j < m) lines.push(["+", after[j++]]);
  return lines;
}

/** Only the changed lines and `context` lines around each change; "…" where lines were left out. */
export function hunks(lines, context = 3) {
  const keep = new Array(lines.length).fill(false);
  lines.forEach(([mark], index) => {
    if (mark === " ") return;
    for (let k = Math.max(0, index - context); k <= Math.min(lines.length - 1, index + context); k += 1) keep[k] = true;
  });
  const shown = [];
  lines.forEach((line, index) => {
    if (keep[index]) shown.push(line);
    else if (!shown.length || shown[shown.length - 1][0] !== "…") shown.push(["…", ""]);
  });
  return shown;
}
