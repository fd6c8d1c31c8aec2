// ANSI SGR colours (ESC [ ... m) as spans; other escape sequences are dropped.
//
// One parser per stream keeps the current style and any escape sequence cut in two by a
// chunk boundary, so a colour set in one chunk goes on in the next.

const ESC = "\x1b";
// CSI (ESC [ params final), OSC (ESC ] ... BEL or ESC \), or a two-character escape.
const SEQUENCE = /\x1b(?:\[([0-9;:?]*)([@-~])|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()][0-9A-Za-z]|[@-Z\\-_])/g;
// An escape sequence that has started but not ended at the end of a chunk.
const UNFINISHED = /\x1b(?:\[[0-9;:?]*|\][^\x07\x1b]*|)$/;

function plain() {
  return { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false,
    inverse: false };
}

/** The CSS colour of xterm-256 colour `n` (16 and above; below are classes). */
function xterm(n) {
  if (n >= 232) {
    const level = 8 + (n - 232) * 10;
    return `rgb(${level}, ${level}, ${level})`;
  }
  const cube = n - 16;
  const level = (c) => (c === 0 ? 0 : 55 + c * 40);
  return `rgb(${level(Math.floor(cube / 36))}, ${level(Math.floor(cube / 6) % 6)}, ${level(cube % 6)})`;
}

/** `38;5;n` or `38;2;r;g;b` from `codes[i]` on: [colour, codes used]. */
function extended(codes, i) {
  if (codes[i + 1] === 5 && codes[i + 2] !== undefined) {
    const n = codes[i + 2] & 255;
    return [n < 16 ? n : xterm(n), 3];
  }
  if (codes[i + 1] === 2 && codes[i + 4] !== undefined) {
    const [r, g, b] = codes.slice(i + 2, i + 5).map((c) => c & 255);
    return [`rgb(${r}, ${g}, ${b})`, 5];
  }
  return [null, codes.length - i];
}

const SIMPLE = {
  1: ["bold", true], 2: ["dim", true], 3: ["italic", true], 4: ["underline", true],
  7: ["inverse", true], 22: ["bold", false], 23: ["italic", false], 24: ["underline", false],
  27: ["inverse", false], 39: ["fg", null], 49: ["bg", null],
};

/** Apply one SGR parameter list to `style` (in place). */
export function applySgr(style, params) {
  const codes = params === "" ? [0] : params.split(/[;:]/).map((c) => (c === "" ? 0 : Number(c)));
  for (let i = 0; i < codes.length; i += 1) {
    const code = codes[i];
    if (code === 0) Object.assign(style, plain());
    else if (code === 22) Object.assign(style, { bold: false, dim: false });
    else if (SIMPLE[code]) style[SIMPLE[code][0]] = SIMPLE[code][1];
    else if (code >= 30 && code <= 37) style.fg = code - 30;
    else if (code >= 90 && code <= 97) style.fg = code - 90 + 8;
    else if (code >= 40 && code <= 47) style.bg = code - 40;
    else if (code >= 100 && code <= 107) style.bg = code - 100 + 8;
    else if (code === 38 || code === 48) {
      const [colour, used] = extended(codes, i);
      style[code === 38 ? "fg" : "bg"] = colour;
      i += used - 1;
    }
  }
}

function styled(style, text) {
  const { fg, bg, bold, dim, italic, underline, inverse } = style;
  if (fg === null && bg === null && !bold && !dim && !italic && !underline && !inverse) {
    return document.createTextNode(text);
  }
  const span = document.createElement("span");
  const classes = [];
  const [front, back] = inverse ? [bg, fg] : [fg, bg];
  // Palette colours are classes (themed in CSS); others are set through the CSSOM, which
  // the Content-Security-Policy allows, unlike style attributes.
  if (typeof front === "number") classes.push(`fg-${front}`);
  else if (front) span.style.color = front;
  if (typeof back === "number") classes.push(`bg-${back}`);
  else if (back) span.style.backgroundColor = back;
  if (inverse && front === null) classes.push("inverse-fg");
  if (inverse && back === null) classes.push("inverse-bg");
  if (bold) classes.push("a-bold");
  if (dim) classes.push("a-dim");
  if (italic) classes.push("a-italic");
  if (underline) classes.push("a-underline");
  span.className = classes.join(" ");
  span.textContent = text;
  return span;
}

export class AnsiParser {
  constructor() {
    this.style = plain();
    this.held = "";
  }

  /** The nodes for `text`, continuing the style of the text before it. */
  feed(text) {
    text = this.held + text;
    this.held = "";
    const cut = text.lastIndexOf(ESC);
    if (cut >= 0 && UNFINISHED.test(text.slice(cut))) {
      this.held = text.slice(cut);
      text = text.slice(0, cut);
    }
    const nodes = [];
    let last = 0;
    for (const match of text.matchAll(SEQUENCE)) {
      if (match.index > last) nodes.push(styled(this.style, text.slice(last, match.index)));
      if (match[2] === "m") applySgr(this.style, match[1] || "");
      last = match.index + match[0].length;
    }
    if (last < text.length) nodes.push(styled(this.style, text.slice(last)));
    return nodes;
  }

  /** Whatever was held back, when no more text will come. */
  flush() {
    const rest = this.held;
    this.held = "";
    return rest ? [styled(this.style, rest)] : [];
  }
}
