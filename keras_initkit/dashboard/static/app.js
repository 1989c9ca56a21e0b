// The initkit dashboard: layers x steps heatmaps of one metric for runs side by side,
// a layer's curve on click, and the findings the monitors wrote into each run.
// Hand-written ES module, no build step, no dependencies: used by the TensorBoard
// plugin (data from its routes) and inlined into `keras-initkit report --html` (data
// inlined too). `mount(root, source)` with source = {runs(), heatmap(run, metric),
// findings(run), live}.

const CSS = `
.ik { font: 13px/1.4 Roboto, "Segoe UI", Helvetica, Arial, sans-serif; color: #202124;
  padding: 12px 16px; }
.ik h1 { font-size: 18px; font-weight: 500; margin: 0 0 8px; }
.ik h2 { font-size: 14px; font-weight: 500; margin: 14px 0 6px; }
.ik-bar { display: flex; flex-wrap: wrap; gap: 8px 16px; align-items: center;
  padding: 8px 0 10px; border-bottom: 1px solid #e0e0e0; }
.ik-bar label { display: inline-flex; gap: 4px; align-items: center; }
.ik-runs label { margin-right: 14px; }
.ik-bar select, .ik-bar button { font: inherit; padding: 2px 8px; }
.ik-status { color: #5f6368; }
.ik-note { color: #5f6368; margin: 6px 0; }
.ik-grid { display: flex; gap: 12px; align-items: flex-start; margin-top: 10px; }
.ik-labels { flex: none; text-align: right; font-size: 11px; color: #3c4043;
  padding-top: 22px; }
.ik-rowlabel { white-space: nowrap; overflow: hidden; padding-right: 4px;
  box-sizing: border-box; cursor: pointer; }
.ik-rowlabel.ik-sel { font-weight: 700; color: #1a73e8; }
.ik-labeltext { display: inline-block; max-width: 100%; overflow: hidden;
  text-overflow: ellipsis; vertical-align: top; pointer-events: none; }
.ik-panel { flex: 1 1 0; min-width: 80px; }
.ik-panel-title { font-weight: 500; height: 22px; overflow: hidden; white-space: nowrap;
  text-overflow: ellipsis; }
.ik-panel canvas { display: block; image-rendering: pixelated; cursor: crosshair;
  border: 1px solid #dadce0; }
.ik-axis { font-size: 11px; color: #5f6368; display: flex; justify-content: space-between;
  white-space: nowrap; }
.ik-tip { position: fixed; pointer-events: none; background: rgba(32,33,36,.92);
  color: #fff; padding: 4px 8px; border-radius: 3px; font-size: 12px; z-index: 10;
  max-width: 600px; display: none; }
.ik-legend { display: flex; align-items: center; gap: 8px; margin-top: 8px; font-size: 12px; }
.ik-curve { margin-top: 6px; }
.ik-curve svg { overflow: visible; }
.ik-findings table { border-collapse: collapse; width: 100%; margin-bottom: 8px;
  table-layout: fixed; }
.ik-findings col.ik-c-rule { width: 18%; } .ik-findings col.ik-c-layers { width: 22%; }
.ik-findings col.ik-c-step { width: 8%; } .ik-findings col.ik-c-worst { width: 14%; }
.ik-findings th, .ik-findings td { text-align: left; padding: 4px 8px; vertical-align: top;
  border-bottom: 1px solid #eceff1; overflow-wrap: anywhere; }
.ik-findings th { font-weight: 500; color: #5f6368; }
.ik-findings td.ik-num { text-align: right; font-variant-numeric: tabular-nums; }
.ik-rule { font-family: monospace; color: #c5221f; }
.ik-findings td.ik-rule { overflow-wrap: normal; }
`;

const RUN_COLOURS = ['#1a73e8', '#e8710a', '#188038', '#d01884', '#9334e6', '#12b5cb',
  '#b06000', '#5f6368'];
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
const COOL = [[247, 251, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181]];
const HOT = [[254, 224, 139], [253, 174, 97], [244, 109, 67], [215, 48, 39], [165, 0, 38]];
const DIVERGING = [[33, 102, 172], [146, 197, 222], [247, 247, 247], [244, 165, 130],
  [178, 24, 43]];
const MISSING = [236, 239, 241];
// A value beyond a threshold that the rule behind it does not judge there.
const UNJUDGED = [206, 190, 232];
// A logged NaN or ±inf (a diverged layer): always a finding.
const NONFINITE = [20, 20, 20];
// The routes send a non-finite value as a string (JSON has no number for it).
const NONFINITE_TEXT = {nan: NaN, inf: Infinity, '-inf': -Infinity};

/** A heatmap's values as numbers: null where not logged, NaN and ±Infinity as logged. */
function numeric(values) {
  return values.map((row) => row.map((v) => (typeof v === 'string' ? NONFINITE_TEXT[v] : v)));
}

const nonFinite = (v) => typeof v === 'number' && !Number.isFinite(v);

/** A run's display name: its directory without the monitors' `/initkit`. */
export function short(run) {
  return run.endsWith('/initkit') ? run.slice(0, -'/initkit'.length) : run;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

export function fmt(value) {
  if (value === null || value === undefined) return '—';
  if (typeof value === 'string') return value;
  if (value === 0) return '0';
  const a = Math.abs(value);
  if (a >= 1e4 || a < 1e-3) return value.toExponential(2);
  return String(Number(value.toPrecision(3)));
}

function ramp(stops, t) {
  t = Math.min(1, Math.max(0, t));
  const x = t * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  return stops[i].map((c, k) => Math.round(c + (stops[i + 1][k] - c) * f));
}

/** Position of `value` on the scale, in [0, 1]. */
export function position(scale, value) {
  let [lo, hi] = scale.domain;
  let v = value;
  if (scale.kind === 'log') {
    if (!(v > 0)) return 0;
    [lo, hi, v] = [Math.log10(lo), Math.log10(hi), Math.log10(v)];
  }
  if (hi === lo) return 0.5;
  return Math.min(1, Math.max(0, (v - lo) / (hi - lo)));
}

const given = (x) => x !== null && x !== undefined;

/**
 * One colour scale for heatmaps drawn side by side, each with the scale of its own
 * values (`model.scale`): signed if any is, else log if any is (from the smallest
 * positive value any of them holds), else linear over the union of their domains.
 */
export function sharedScale(maps) {
  const scales = maps.map((m) => m.scale);
  if (scales.length < 2) return scales[0];
  const his = scales.map((s) => s.domain[1]);
  if (scales.some((s) => s.kind === 'signed')) {
    const bound = Math.max(...scales.flatMap((s) => s.domain.map(Math.abs)));
    return {kind: 'signed', domain: [-bound, bound]};
  }
  if (scales.some((s) => s.kind === 'log')) {
    let lo = Infinity;  // a loop: a spread of every value can overflow the stack
    for (const m of maps) {
      if (m.scale.kind === 'log') lo = Math.min(lo, m.scale.domain[0]);
      else for (const row of m.values) for (const v of row) if (v > 0 && v < lo) lo = v;
    }
    return {kind: 'log', domain: [lo, Math.max(...his)]};
  }
  return {kind: 'linear', domain: [Math.min(...scales.map((s) => s.domain[0])), Math.max(...his)]};
}

/**
 * RGB of a value: within the thresholds cool blues, beyond them (above `threshold`,
 * below `lower`) yellow to red, redder the further out.
 */
export function colour(scale, threshold, value, lower) {
  if (value === null || value === undefined) return MISSING;
  if (!Number.isFinite(value)) return NONFINITE;
  const t = position(scale, value);
  if (scale.kind === 'signed') return ramp(DIVERGING, t);
  if (!given(threshold) && !given(lower)) return ramp(VIRIDIS, t);
  const hi = given(threshold) ? position(scale, threshold) : 1;
  const lo = given(lower) ? position(scale, lower) : 0;
  if (given(threshold) && value > threshold) {
    return ramp(HOT, hi >= 1 ? 1 : (t - hi) / (1 - hi));
  }
  if (given(lower) && value < lower) return ramp(HOT, lo <= 0 ? 1 : (lo - t) / lo);
  return ramp(COOL, hi <= lo ? 0 : (t - lo) / (hi - lo));
}

/** The legend's words for a metric's thresholds, or '' when it has none. */
export function thresholdText(threshold, lower) {
  if (given(threshold) && given(lower)) {
    return `▮ thresholds ${fmt(lower)} and ${fmt(threshold)}: below the first or above ` +
      'the second is a finding (warm colours)';
  }
  if (given(lower)) return `▮ threshold ${fmt(lower)}: below it is a finding (warm colours)`;
  if (given(threshold)) {
    return `▮ threshold ${fmt(threshold)}: above it is a finding (warm colours)`;
  }
  return '';
}

function legend(data, withUnjudged, withNonFinite, withZeros) {
  const width = 220;
  const canvas = el('canvas', {width, height: 12, class: 'ik-legend-bar'});
  const ctx = canvas.getContext('2d');
  const [lo, hi] = data.scale.domain;
  for (let x = 0; x < width; x++) {
    let v = x / (width - 1);
    v = data.scale.kind === 'log'
      ? 10 ** (Math.log10(lo) + v * (Math.log10(hi) - Math.log10(lo)))
      : lo + v * (hi - lo);
    const [r, g, b] = colour(data.scale, data.threshold, v, data.lower);
    ctx.fillStyle = `rgb(${r},${g},${b})`;
    ctx.fillRect(x, 0, 1, 12);
  }
  const parts = [el('span', {text: fmt(lo), style: 'white-space:nowrap'}), canvas,
    el('span', {text: fmt(hi), style: 'white-space:nowrap'})];
  ctx.fillStyle = '#000';
  const offScale = [];  // a mark at the bar's end would read as a threshold there
  for (const limit of [data.lower, data.threshold].filter(given)) {
    if (limit < lo || limit > hi) {
      offScale.push(`${fmt(limit)} lies ${limit > hi ? 'above' : 'below'} every value shown`);
      continue;
    }
    const x = Math.round(position(data.scale, limit) * (width - 1));
    ctx.fillRect(Math.max(0, x - 1), 0, 2, 12);
  }
  const words = thresholdText(data.threshold, data.lower) +
    (offScale.length ? ` (${offScale.join('; ')}: not on the bar)` : '');
  if (words) parts.push(el('span', {class: 'ik-threshold', text: words}));
  parts.push(el('span', {class: 'ik-note',
    text: `${data.scale.kind === 'log' ? 'log scale' : 'linear scale'}; grey: not logged` +
      (withUnjudged ? '; violet: beyond a threshold where its rule does not judge (hover)' : '') +
      (withNonFinite ? '; black: NaN or inf (diverged)' : '') +
      (withZeros ? '; 0 (off a log scale): as its lowest colour' : '')}));
  return el('div', {class: 'ik-legend'}, el('b', {text: data.metric}), ...parts);
}

/**
 * `{above: Set, below: Set, ends: Set or null}`: the rows a threshold's rule does not
 * judge, and the steps it judges at where those are the ends of epochs.
 */
function exemptRows(data) {
  const exempt = data.exempt || {};
  return {above: new Set(exempt.above || []), below: new Set(exempt.below || []),
    // The steps an epoch-end rule judges at (null: every step), looked up per cell.
    ends: data.epoch_end_steps ? new Set(data.epoch_end_steps) : null};
}

/** Whether the heatmap `data` has rows or steps a threshold's rule does not judge. */
function hasUnjudged(data) {
  const exempt = data.exempt || {};
  const until = data.exempt_until || {};
  return Boolean((exempt.above || []).length || (exempt.below || []).length ||
    (data.judged_from || []).some((step) => step > 0) ||
    [...(until.above || []), ...(until.below || [])].some((step) => step > 0) ||
    (data.epoch_end_steps && data.steps.some((s) => !data.epoch_end_steps.includes(s))));
}

/**
 * Why the value in row `r`, column `c` is beyond a threshold and yet no finding, or ''
 * (within the thresholds, or a finding): the rule judges the layer from a later step
 * (batch norm's mismatch waits while the initial statistics weigh), or not as logged.
 */
export function unjudged(data, exempt, r, c) {
  const value = data.values[r][c];
  if (nonFinite(value)) return '';  // a finding under every rule
  const above = given(data.threshold) && value > data.threshold;
  const below = given(data.lower) && value < data.lower;
  if (!above && !below) return '';
  const from = (data.judged_from || [])[r] || 0;
  if (data.steps[c] < from) return `the rule judges this layer from step ${from} on`;
  if (exempt.ends && !exempt.ends.has(data.steps[c])) {
    return 'the rule judges it at the end of an epoch only';
  }
  const side = above ? 'above' : 'below';
  const why = '(it exempts attention\'s query and key projections, and divides the ratio ' +
    'of a residual branch closed by a small scale by that scale)';
  if (exempt[side].has(r)) {
    return `the rule does not judge this layer's logged value as it is ${why}`;
  }
  const until = ((data.exempt_until || {})[side] || [])[r] || 0;
  if (data.steps[c] < until) {
    return `the rule did not judge this layer's logged value as it is before step ${until} ${why}`;
  }
  return '';
}

/** Put the tooltip beside the pointer, on the side where it fits inside the window. */
function placeTip(tip, event) {
  const {offsetWidth: w, offsetHeight: h} = tip;
  const right = event.clientX + 12 + w <= window.innerWidth - 4;
  const below = event.clientY + 12 + h <= window.innerHeight - 4;
  tip.style.left = `${Math.max(4, right ? event.clientX + 12 : event.clientX - 12 - w)}px`;
  tip.style.top = `${Math.max(4, below ? event.clientY + 12 : event.clientY - 12 - h)}px`;
}

// The width of one character of the 11px axis labels, a little generous.
const AXIS_CHAR_PX = 7;

/**
 * The row labels' font for rows `rowHeight` px high: `{size, line, every}`, a label on
 * every `every`-th row, `size` px (9 to 11) with a line box `line` px high that holds the
 * font's descent (an underscore, a "g") and fits the rows down to the next label. A
 * line box as high as the font size cut the underscores off ("block 0 conv 0").
 * `measure`: a canvas context whose font is the labels' (its size is read off it).
 */
export function labelFont(rowHeight, measure) {
  const metrics = measure.measureText('Hg_');
  const px = parseFloat(measure.font.match(/([\d.]+)px/)[1]);
  // Ascent and descent per px of font size (1.2 where the browser does not tell).
  const extent = (metrics.fontBoundingBoxAscent + metrics.fontBoundingBoxDescent) / px || 1.2;
  const every = Math.max(1, Math.ceil(Math.ceil(9 * extent) / rowHeight));
  const size = Math.min(11, Math.floor((every * rowHeight) / extent));
  return {size, line: Math.ceil(size * extent), every};
}

function heatmapPanel(data, cell, tip, onRow, colourIndex) {
  const rows = data.layers.length;
  const cols = data.steps.length;
  const canvas = el('canvas', {
    width: Math.max(1, cols * cell.w), height: Math.max(1, rows * cell.h),
    class: 'ik-heatmap', 'data-run': data.run, 'data-rows': rows, 'data-cols': cols,
    'data-scale': `${data.scale.kind} ${data.scale.domain.join(' ')}`,
  });
  const ctx = canvas.getContext('2d');
  const image = ctx.createImageData(canvas.width, canvas.height);
  const exempt = exemptRows(data);
  for (let r = 0; r < rows; r++) {
    const values = data.values[r];
    for (let c = 0; c < cols; c++) {
      const [red, green, blue] = unjudged(data, exempt, r, c) ? UNJUDGED
        : colour(data.scale, data.threshold, values[c], data.lower);
      for (let y = r * cell.h; y < (r + 1) * cell.h; y++) {
        let offset = (y * canvas.width + c * cell.w) * 4;
        for (let x = 0; x < cell.w; x++, offset += 4) {
          image.data[offset] = red;
          image.data[offset + 1] = green;
          image.data[offset + 2] = blue;
          image.data[offset + 3] = 255;
        }
      }
    }
  }
  ctx.putImageData(image, 0, 0);
  const locate = (event) => {
    const box = canvas.getBoundingClientRect();
    const r = Math.floor((event.clientY - box.top) / (box.height / rows));
    const c = Math.floor((event.clientX - box.left) / (box.width / cols));
    return r >= 0 && r < rows && c >= 0 && c < cols ? [r, c] : null;
  };
  canvas.addEventListener('mousemove', (event) => {
    const at = locate(event);
    if (!at) { tip.style.display = 'none'; return; }
    const [r, c] = at;
    const value = data.values[r][c];
    const why = unjudged(data, exempt, r, c);
    tip.textContent = `${short(data.run)} · ${data.layers[r]} (depth ${r}) · step ${data.steps[c]}` +
      ` · ${data.metric} = ${fmt(value)}` + (why ? ` (beyond the threshold, but ${why})` : '') +
      (nonFinite(value) ? ' (not finite: the layer diverged)' : '') +
      (data.scale.kind === 'log' && value !== null && value <= 0 ?
        ' (0 or below: drawn as the log scale\'s lowest colour)' : '') +
      (value === null ? ' (not logged)' : '');
    tip.style.display = 'block';
    placeTip(tip, event);
  });
  canvas.addEventListener('mouseleave', () => { tip.style.display = 'none'; });
  canvas.addEventListener('click', (event) => {
    const at = locate(event);
    if (at) onRow(at[0]);
  });
  const first = cols ? data.steps[0] : '';
  const last = cols ? data.steps[cols - 1] : '';
  const title = el('div', {class: 'ik-panel-title', title: data.run},
    el('span', {text: '■ ', style: `color:${RUN_COLOURS[colourIndex % RUN_COLOURS.length]}`}),
    short(data.run));
  // First step, count, last step; a canvas too narrow for three labels (a few steps
  // logged) gets one, "steps 0–4", which may run past its right edge.
  const labels = [`step ${first}`, `${cols} steps`, `${last}`];
  const fits = canvas.width >= AXIS_CHAR_PX * labels.join('').length + 24;
  const axis = el('div', {class: 'ik-axis', style: `width:${canvas.width}px`},
    ...(fits ? labels : [cols > 1 ? `steps ${first}–${last}` : `step ${first}`])
      .map((text) => el('span', {text})));
  return el('div', {class: 'ik-panel', 'data-run': data.run}, title, canvas, axis);
}

/** The curve of depth `row` in `maps`, one line per run, `room` pixels wide at most. */
function curve(maps, row, room = 846) {
  const pad = {l: 56, r: 150, t: 8, b: 24};
  const width = Math.max(200, Math.min(640, room - pad.l - pad.r));
  const height = 180;
  const series = maps.map((data) => ({
    data, name: data.layers[row],
    points: (data.values[row] || []).map((v, c) => [data.steps[c], v, c])
      .filter(([, v]) => v !== null && Number.isFinite(v)),
  })).filter((s) => s.name !== undefined);
  const all = series.flatMap((s) => s.points);
  const box = svg('svg', {width: width + pad.l + pad.r, height: height + pad.t + pad.b,
    class: 'ik-curve-svg'});
  if (!all.length) return box;
  const log = maps[0].scale.kind === 'log' && all.every(([, v]) => v > 0);
  const ys = all.map(([, v]) => (log ? Math.log10(v) : v));
  // The thresholds are in the y range, so a curve shows how far it is from them.
  const limits = [maps[0].lower, maps[0].threshold].filter((v) => given(v) && (!log || v > 0));
  ys.push(...limits.map((v) => (log ? Math.log10(v) : v)));
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
  const xs = all.map(([s]) => s);
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  if (x0 === x1) x1 = x0 + 1;
  const X = (s) => pad.l + ((s - x0) / (x1 - x0)) * width;
  const Y = (v) => pad.t + (1 - ((log ? Math.log10(v) : v) - y0) / (y1 - y0)) * height;
  box.append(svg('rect', {x: pad.l, y: pad.t, width, height, fill: '#fafafa',
    stroke: '#dadce0'}));
  const ends = limits.map((l) => (log ? Math.log10(l) : l));
  for (const [v, anchor] of [[y0, 'lo'], [y1, 'hi']]) {
    if (ends.includes(v)) continue;  // a threshold: labelled by its line
    const label = svg('text', {x: pad.l - 6, y: anchor === 'lo' ? pad.t + height : pad.t + 10,
      'text-anchor': 'end', 'font-size': 11, fill: '#5f6368'});
    label.textContent = fmt(log ? 10 ** v : v);
    box.append(label);
  }
  for (const [s, anchor] of [[x0, 'start'], [x1, 'end']]) {
    const label = svg('text', {x: X(s), y: pad.t + height + 16, 'text-anchor': anchor,
      'font-size': 11, fill: '#5f6368'});
    label.textContent = `step ${s}`;
    box.append(label);
  }
  for (const limit of limits) {
    const y = Y(limit);
    if (y >= pad.t && y <= pad.t + height) {
      box.append(svg('line', {x1: pad.l, x2: pad.l + width, y1: y, y2: y, stroke: '#c5221f',
        'stroke-dasharray': '4 3', class: 'ik-limit'}));
      const value = svg('text', {x: pad.l - 6, y: y + 4, 'text-anchor': 'end', 'font-size': 11,
        fill: '#c5221f', class: 'ik-limit-value'});
      value.textContent = fmt(limit);  // the threshold's number, by its line
      box.append(value);
    }
  }
  series.forEach((s, k) => {
    const colourOf = RUN_COLOURS[s.data.colourIndex % RUN_COLOURS.length];
    box.append(svg('polyline', {fill: 'none', stroke: colourOf, 'stroke-width': 1.8,
      points: s.points.map(([x, v]) => `${X(x).toFixed(1)},${Y(v).toFixed(1)}`).join(' ')}));
    const label = svg('text', {x: pad.l + width + 8, y: pad.t + 12 + 16 * k, 'font-size': 11,
      fill: colourOf});
    label.textContent = `${short(s.data.run)}: ${s.name}`;
    box.append(label);
    // Beyond a threshold where the rule does not judge: violet, as on the heatmap.
    const exempt = exemptRows(s.data);
    for (const [x, v, c] of s.points) {
      const why = unjudged(s.data, exempt, row, c);
      if (!why) continue;
      const dot = svg('circle', {cx: X(x).toFixed(1), cy: Y(v).toFixed(1), r: 3.5,
        fill: `rgb(${UNJUDGED.join(',')})`, stroke: '#7b5ea7', class: 'ik-unjudged'});
      const title = svg('title', {});
      title.textContent = `step ${x}: ${fmt(v)}, not a finding: ${why}`;
      dot.append(title);
      box.append(dot);
    }
  });
  return box;
}

const SOURCES = {
  derived: ' (derived from the logged values and thresholds: the run holds no findings ' +
    'record)',
  none: ': the run holds no findings record and no thresholds',
};

function findingsTable(run, groups, source) {
  const section = el('div', {class: 'ik-findings-run', 'data-run': run, 'data-source': source});
  // Findings are per layer and rule, grouped by rule: "49 findings (1 rule)".
  const layers = groups.reduce((n, g) => n + (g.count || 1), 0);
  const count = groups.length ? `${layers} finding${layers === 1 ? '' : 's'} (` +
    `${groups.length} rule${groups.length === 1 ? '' : 's'})` : 'no findings';
  section.append(el('h2', {text: `${short(run)} — ${source === 'none' ? 'findings unknown' :
    count}${SOURCES[source] || ''}`}));
  if (!groups.length) return section;
  const head = el('tr', {}, ...['rule', 'layers', 'first step', 'worst', 'fix']
    .map((text) => el('th', {text})));
  const rows = groups.map((g) => el('tr', {class: 'ik-finding', 'data-rule': g.rule},
    el('td', {class: 'ik-rule', text: g.rule, title: g.message || ''}),
    el('td', {text: g.layers, title: (g.names || []).join(', ')}),
    el('td', {class: 'ik-num', text: g.first_step === null ? '—' : String(g.first_step)}),
    el('td', {class: 'ik-num', text: fmt(g.worst) +
      (g.worst_layer && g.count > 1 ? ` (${g.worst_layer})` : '')}),
    el('td', {text: g.fix || ''})));
  const cols = el('colgroup', {}, ...['rule', 'layers', 'step', 'worst', 'fix']
    .map((name) => el('col', {class: `ik-c-${name}`})));
  section.append(el('table', {}, cols, el('thead', {}, head), el('tbody', {}, ...rows)));
  return section;
}

/** The runs' layer names at depth `row` of `maps`, each once (runs may differ in depth). */
function namesAt(maps, row) {
  return [...new Set(maps.map((m) => m.layers[row]).filter(given))];
}

/** Builds the dashboard into `root`; returns {reload()}. */
export function mount(root, source) {
  if (!document.getElementById('ik-style')) {
    document.head.append(el('style', {id: 'ik-style', text: CSS}));
  }
  const state = {runs: [], metric: null, selected: new Set(), row: null, rowNames: [], maps: [],
    timer: null};
  const metricSelect = el('select', {class: 'ik-metric', 'aria-label': 'metric'});
  const runBox = el('span', {class: 'ik-runs'});
  const status = el('span', {class: 'ik-status'});
  const reloadButton = el('button', {class: 'ik-reload', text: '⟳ Reload'});
  const follow = el('input', {type: 'checkbox', class: 'ik-follow'});
  const tip = el('div', {class: 'ik-tip'});
  const grid = el('div', {class: 'ik-grid'});
  const legendBox = el('div');
  const note = el('div', {class: 'ik-note'});
  const curveBox = el('div', {class: 'ik-curve'});
  const findingsBox = el('div', {class: 'ik-findings'});
  const bar = el('div', {class: 'ik-bar'},
    el('label', {}, 'Metric', metricSelect),
    el('span', {}, 'Runs: ', runBox));
  if (source.live) {
    bar.append(reloadButton);
    follow.checked = true;
    bar.append(el('label', {title: 'reload every 30 s'}, follow, 'follow live run'));
  }
  bar.append(status);
  root.classList.add('ik');
  root.append(el('h1', {text: source.title || 'initkit — the whole network at once'}), bar,
    legendBox, note, grid, curveBox, el('h2', {text: 'Findings'}), findingsBox, tip);

  function metricsOf(runs) {
    const seen = [];
    for (const run of runs) for (const m of run.metrics) if (!seen.includes(m)) seen.push(m);
    return seen;
  }

  function renderControls() {
    const metrics = metricsOf(state.runs);
    if (!metrics.includes(state.metric)) {
      // The metric of the earliest finding, where a run has one: not a blank first view.
      const found = state.runs.flatMap((r) => r.finding_metrics || []);
      state.metric = found.find((m) => metrics.includes(m)) || metrics[0] || null;
    }
    metricSelect.replaceChildren(...metrics.map((m) => el('option', {value: m, text: m})));
    if (state.metric) metricSelect.value = state.metric;
    const names = state.runs.map((r) => r.run);
    for (const name of [...state.selected]) if (!names.includes(name)) state.selected.delete(name);
    if (!state.selected.size && state.runs.length) {
      // The first run and those of its depth (the same model, say with another
      // initializer), 6 at most: other models in the log directory are listed, not drawn.
      const depth = state.runs[0].layers;
      state.runs.filter((r) => r.layers === depth).slice(0, 6)
        .forEach((r) => state.selected.add(r.run));
    }
    runBox.replaceChildren(...state.runs.map((r, i) => {
      const box = el('input', {type: 'checkbox', value: r.run});
      box.checked = state.selected.has(r.run);
      box.addEventListener('change', () => {
        if (box.checked) state.selected.add(r.run); else state.selected.delete(r.run);
        draw();
      });
      return el('label', {style: `color:${RUN_COLOURS[i % RUN_COLOURS.length]}`}, box,
        short(r.run));
    }));
  }

  async function draw() {
    tip.style.display = 'none';  // its cell may be gone
    const runs = state.runs.filter((r) => state.selected.has(r.run) &&
      r.metrics.includes(state.metric));
    const others = state.runs.filter((r) => state.selected.has(r.run));
    if (!state.metric || !others.length) {
      grid.replaceChildren(el('div', {class: 'ik-note',
        text: state.runs.length ? 'Select a run.' : 'No keras_initkit runs in this log ' +
          'directory yet (the monitors write <log_dir>/initkit).'}));
      // Nothing of the last drawing stays: its legend, note, curve and status.
      state.maps = [];
      for (const box of [findingsBox, legendBox, curveBox]) box.replaceChildren();
      note.textContent = status.textContent = '';
      return;
    }
    status.textContent = 'loading…';
    const started = performance.now();
    const [own, findings] = await Promise.all([
      Promise.all(runs.map((r) => source.heatmap(r.run, state.metric))),
      Promise.all(others.map((r) => source.findings(r.run))),
    ]);
    // Runs side by side share one colour scale, the legend's: a colour means one value.
    const parsed = own.map((m) => ({...m, values: numeric(m.values)}));
    const shared = sharedScale(parsed);
    // Each run keeps its colour (its place among all runs) in titles and curves.
    const maps = parsed.map((m) => ({...m, scale: shared,
      colourIndex: Math.max(0, state.runs.findIndex((r) => r.run === m.run))}));
    state.maps = maps;
    const depth = Math.max(0, ...maps.map((m) => m.layers.length));
    // Per depth, the selected runs' own layer names there (one where the runs agree).
    const labelNames = [];
    for (let r = 0; r < depth; r++) labelNames.push(namesAt(maps, r));
    // The selected row follows its layer across metrics and runs (rows are depths:
    // another metric logs other layers), and is cleared where no run logs it.
    if (state.row !== null) {
      const row = labelNames.findIndex((names) => names.some((n) => state.rowNames.includes(n)));
      state.row = row < 0 ? null : row;
    }
    const differ = labelNames.some((names) => names.length > 1);
    const labelTexts = labelNames.map((names, r) => (differ ? `${r}: ` : '') + names.join(' / '));
    // As wide as the longest label (within limits: a longer one ends in "…", its title
    // holds it whole).
    const measure = document.createElement('canvas').getContext('2d');
    measure.font = `bold 11px ${getComputedStyle(root).fontFamily}`;  // a selected one is bold
    const longest = Math.max(0, ...labelTexts.map((t) => measure.measureText(t).width));
    const labelWidth = Math.min(320, Math.max(60, Math.ceil(longest) + 12));
    const available = Math.max(200, (root.clientWidth || 1200) - labelWidth - 40 -
      12 * maps.length);
    const maxCols = Math.max(1, ...maps.map((m) => m.steps.length));
    const cell = {
      w: Math.max(1, Math.min(maxCols <= 4 ? 48 : 24,
        Math.floor(available / maps.length / maxCols))),
      h: Math.max(2, Math.min(16, Math.floor(Math.max(360, window.innerHeight * 0.6) /
        Math.max(1, depth)))),
    };
    const font = labelFont(cell.h, measure);
    const labels = el('div', {class: 'ik-labels', style: `width:${labelWidth}px`},
      ...labelTexts.map((text, r) => el('div', {
        class: 'ik-rowlabel' + (r === state.row ? ' ik-sel' : ''),
        'data-row': r, title: text,
        // Rows lower than the text: every `every`-th label, running down into its
        // unlabelled neighbours (never sideways past the column: "…"). The text takes
        // no clicks: a click or hover belongs to the row under the pointer, as on the
        // heatmap, not to the label whose text runs over it.
        style: `height:${cell.h}px;line-height:${Math.max(cell.h, font.line)}px;font-size:${
          font.size}px;overflow:visible`,
        onclick: () => select(r),
      }, el('span', {class: 'ik-labeltext', text: r % font.every === 0 ? text : ''}))));
    grid.replaceChildren(labels, ...maps.map((m) =>
      heatmapPanel(m, cell, tip, select, m.colourIndex)));
    const diverged = maps.some((m) => m.values.some((row) => row.some(nonFinite)));
    const zeros = shared && shared.kind === 'log' &&
      maps.some((m) => m.values.some((row) => row.some((v) => v !== null && v <= 0)));
    legendBox.replaceChildren(
      maps.length ? legend(maps[0], maps.some(hasUnjudged), diverged, zeros) : '');
    const missing = others.filter((r) => !runs.includes(r)).map((r) => r.run);
    const hidden = state.runs.length - others.length;
    note.textContent = (differ ? 'Rows are aligned by depth (forward order): layer names ' +
      'differ between runs; hover a cell for its own name. ' : 'Rows: layers in forward ' +
      'order; columns: logged steps. ') + 'Click a row for its curve.' +
      (missing.length ? ` Not logged in ${missing.map(short).join(', ')}.` : '') +
      (hidden ? ` ${hidden} more run(s) not shown: tick them above.` : '');
    findingsBox.replaceChildren(...others.map((r, i) => findingsTable(r.run,
      findings[i].findings, findings[i].source || 'recorded')));
    drawCurve();
    status.textContent = `${depth} layers × ${maxCols} steps · drawn in ` +
      `${Math.round(performance.now() - started)} ms`;
  }

  function drawCurve() {
    if (state.row === null || !state.maps.length) { curveBox.replaceChildren(); return; }
    const name = namesAt(state.maps, state.row).join(' / ');
    curveBox.replaceChildren(el('h2', {text: `${state.metric} of ${name} (depth ${state.row})`}),
      curve(state.maps, state.row, curveBox.clientWidth || 846));
  }

  function select(row) {
    state.row = row;
    state.rowNames = namesAt(state.maps, row);
    for (const label of grid.querySelectorAll('.ik-rowlabel')) {
      label.classList.toggle('ik-sel', Number(label.dataset.row) === row);
    }
    drawCurve();
  }

  async function reload() {
    try {
      const listing = await source.runs();
      state.runs = listing.runs;
      renderControls();
      await draw();
    } catch (error) {
      status.textContent = `error: ${error.message || error}`;
    }
  }

  metricSelect.addEventListener('change', () => {
    state.metric = metricSelect.value;
    draw();
  });
  reloadButton.addEventListener('click', reload);
  if (source.live) {
    state.timer = setInterval(() => { if (follow.checked) reload(); }, 30000);
  }
  let width = root.clientWidth;
  window.addEventListener('resize', () => {
    if (Math.abs(root.clientWidth - width) > 40) { width = root.clientWidth; draw(); }
  });
  const ready = reload();
  return {reload, ready};
}

/** A source reading the TensorBoard plugin's routes (relative to the plugin's base URL). */
export function httpSource(base = '.') {
  const get = async (path) => {
    const response = await fetch(`${base}/${path}`);
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  };
  const q = encodeURIComponent;
  return {
    live: true,
    runs: () => get('runs'),
    heatmap: (run, metric) => get(`heatmap?run=${q(run)}&metric=${q(metric)}`),
    findings: (run) => get(`findings?run=${q(run)}`),
  };
}

/** A source over data inlined in the page (the HTML report). */
export function inlineSource(data) {
  return {
    live: false,
    title: data.title,
    runs: async () => ({runs: data.runs}),
    heatmap: async (run, metric) => data.heatmaps[run][metric],
    findings: async (run) => ({findings: data.findings[run] || [],
      source: (data.findings_source || {})[run]}),
  };
}
