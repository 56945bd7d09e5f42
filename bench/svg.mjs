// The chart panel both reports draw (report.mjs's scale chart and
// crowd-report.mjs's crowd chart): lines of points against connections
// held, on linear axes from zero, with a title, gridlines, the x values as
// ticks and the series' labels stacked in the top left corner (not at the
// lines' ends, where lines that end close together would overlap them).

const fmt0 = (v) => (Number.isFinite(v) ? v.toFixed(0) : '–');

// One panel as SVG elements, its left edge at `x0`. `series` are
// `{ label, color, dash, pts: [[x, y], …] }`; `xTicks` the x values to
// label; the x axis runs to `xMax` (by default the largest tick).
export function linePanel({ x0, width, height, top = 30, bottom = 50, left = 60, right = 15, title, series, xTicks, xMax: xMaxGiven, xLabel }) {
  const xMax = Math.max(1, xMaxGiven ?? 0, ...xTicks);
  const yMax = Math.max(1, ...series.flatMap((s) => s.pts.map((p) => p[1])).filter(Number.isFinite)) * 1.1;
  const px = (x) => x0 + left + (x / xMax) * (width - left - right);
  const py = (y) => height - bottom - (y / yMax) * (height - top - bottom);
  let out = `<text x="${x0 + width / 2}" y="18" text-anchor="middle" font-weight="bold">${title}</text>\n`;
  for (let i = 0; i <= 4; i++) {
    const y = (yMax / 4) * i;
    out += `<line x1="${x0 + left}" x2="${x0 + width - right}" y1="${py(y)}" y2="${py(y)}" stroke="#eee"/><text x="${x0 + left - 4}" y="${py(y) + 4}" text-anchor="end">${fmt0(y)}</text>\n`;
  }
  for (const x of xTicks) out += `<text x="${px(x)}" y="${height - bottom + 16}" text-anchor="middle">${x}</text>\n`;
  out += `<text x="${x0 + (left + width) / 2}" y="${height - 14}" text-anchor="middle">${xLabel}</text>\n`;
  series.forEach(({ label, color, dash, pts }, i) => {
    const drawn = pts.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    if (!drawn.length) return;
    out += `<polyline fill="none" stroke="${color}" stroke-width="2" ${dash ? 'stroke-dasharray="5 4"' : ''} points="${drawn.map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(' ')}"/>\n`;
    for (const [x, y] of drawn) out += `<circle cx="${px(x).toFixed(1)}" cy="${py(y).toFixed(1)}" r="3" fill="${color}"/>\n`;
    out += `<text x="${x0 + left + 6}" y="${top + 10 + i * 13}" fill="${color}">${dash ? '- - ' : '— '}${label}</text>\n`;
  });
  return out;
}

// A whole chart: `panels` side by side, each `width` wide.
export function chart(width, height, panels) {
  return `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">\n<rect width="${width}" height="${height}" fill="white"/>\n${panels.join('')}</svg>\n`;
}
