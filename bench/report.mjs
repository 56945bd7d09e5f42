// Turns the JSON lines of one bench/run.sh invocation into
// docs/benchmarks.md (the comparison with the Node peer in one table at the
// top, every workload's figures, the targets of issues #4, #12 and #16
// checked against this run's numbers), docs/ramp.svg and docs/scale.svg.
// Lines from more than one commit or machine are refused: a report compares
// runs of one build on one machine, or nothing.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chart, linePanel } from './svg.mjs';

const [input, outDir = 'docs'] = process.argv.slice(2);
const rows = readFileSync(input, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
if (!rows.length) {
  console.error(`${input} holds no runs`);
  process.exit(1);
}
// A workload recorded as `{error}` has no figures: it shows as "–" in the
// tables and is listed under "Failed runs".
const get = (server, workload) => rows.find((r) => r.server === server && r.workload === workload && !r.error);
// Every run of a server's workload (bench/run.sh's ROUNDS repeats some).
const runs = (server, workload) => rows.filter((r) => r.server === server && r.workload === workload && !r.error);
const median = (xs) => {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
};
const SERVERS = ['tally', 'node-throttled', 'node'];
const NAMES = { tally: 'tally', 'node-throttled': 'Node, throttled', node: 'Node, per click' };
// Where and how the lines were measured, which must be one answer each.
const distinct = (field) => [...new Set(rows.map((r) => r[field] ?? 'unrecorded'))];
for (const field of ['commit', 'machine', 'versions', 'server_cpus', 'tool_cpus']) {
  const seen = distinct(field);
  if (seen.length > 1) {
    console.error(`the lines of ${input} come from more than one ${field} (${seen.join('; ')}): a report is made from one run`);
    process.exit(1);
  }
}
const one = (field) => distinct(field)[0];
const times = rows.map((r) => r.measured_at).filter(Boolean).sort();

// A \`ramp\` line is either the capacity ladder's (rates, each run several
// times) or, in raw lines from before it, the single-run ramp's (steps).
const sustained = (r) => r.capacity_per_s ?? r.highest_sustained_rate_per_s;
const rungs = (r) => (r?.rates ? r.rates.map((g) => ({ rate: g.rate_per_s, p99: g.median_p99_ms, g })) : (r?.steps ?? []).map((st) => ({ rate: st.target_rate_per_s, p99: st.visible.p99_ms, st })));
// A share as a percentage; a missing one (JSON null) stays missing.
const pct = (x) => (x === null || x === undefined ? NaN : x * 100);
const fmt = (v, digits = 1) => (v === undefined || v === null || Number.isNaN(v) ? '–' : Number(v).toFixed(digits));
const cpuPerK = (r) => (r?.clicks ? (r.server_cpu_s * 1e6) / r.clicks : NaN);
const kib = (r) => (r?.rss_per_connection_bytes ?? NaN) / 1024;
const rungAt = (r, rate) => r?.rates?.find((g) => g.rate_per_s === rate);
const metrics = [
  ['Idle: server RSS per connection (KiB)', 'idle', kib, 'lower'],
  ['Idle: handshake p99 (ms)', 'idle', (r) => r.handshake.p99_ms, 'lower'],
  ['Fanout: click → every listener p50 (ms)', 'fanout', (r) => r.delivery.p50_ms, 'lower'],
  ['Fanout: click → every listener p99 (ms)', 'fanout', (r) => r.delivery.p99_ms, 'lower'],
  ['Fanout: missed updates (click, listener) pairs', 'fanout', (r) => r.missed_updates, 'lower'],
  ['Fanout: server CPU seconds', 'fanout', (r) => r.server_cpu_s, 'lower'],
  ['Flood: achieved clicks/s', 'flood', (r) => r.achieved_rate_per_s, 'higher'],
  ['Flood: ack p99 (ms)', 'flood', (r) => r.ack.p99_ms, 'lower'],
  ['Flood: click → visible p99 (ms)', 'flood', (r) => r.visible.p99_ms, 'lower'],
  ['Flood: every client converged on the exact total', 'flood', (r) => r.converged, 'bool'],
  ['Flood: messages received by clients', 'flood', (r) => r.messages_received, 'lower'],
  ['Flood: server CPU ms per 1,000 acked clicks', 'flood', cpuPerK, 'lower'],
  ['Flood: the load tool\'s CPU share of its core (%; above 90 it is the limit)', 'flood', (r) => (r.cpu?.tool ?? NaN) * 100, 'info'],
  ['Big flood: achieved clicks/s', 'big', (r) => r.achieved_rate_per_s, 'higher'],
  ['Big flood: click → visible p99 (ms)', 'big', (r) => r.visible.p99_ms, 'lower'],
  ['Big flood: every client converged on the exact total', 'big', (r) => r.converged, 'bool'],
  ['Big flood: the load tool\'s CPU share of its core (%)', 'big', (r) => (r.cpu?.tool ?? NaN) * 100, 'info'],
  ['Chat: message → every member p50 (ms)', 'chat', (r) => r.delivery.p50_ms, 'lower'],
  ['Chat: message → every member p99 (ms)', 'chat', (r) => r.delivery.p99_ms, 'lower'],
  ['Chat: message → ack p99 (ms; tally acks once stored)', 'chat', (r) => r.ack.p99_ms, 'lower'],
  ['Chat: (message, member) pairs lost', 'chat', (r) => r.lost, 'lower'],
  ['Chat: server CPU seconds', 'chat', (r) => r.server_cpu_s, 'lower'],
];

const params = (w) => {
  const r = get('tally', w) ?? {};
  return { idle: `${r.connections} connections`, fanout: `${r.listeners} listeners, ${r.target_rate_per_s} clicks/s`, flood: `${r.clients} clients, ${r.target_rate_per_s} clicks/s`, big: `${r.clients} clients, ${r.target_rate_per_s} clicks/s`, ramp: `${r.clients} clients, rates ${rungs(r).map((g) => g.rate).join(', ')} clicks/s, ${r.runs_per_rate} runs per rate`, chat: `${get('tally', 'chat')?.members} members of one conversation, ${get('tally', 'chat')?.target_rate_per_s} messages/s` }[w];
};

// A ratio says how many times better tally does than the other server
// (lower latency or memory, higher throughput); its spread runs from the
// least to the most favourable pairing of the two servers' runs.
const ratioOf = (t, o, better) => (better === 'lower' ? o / t : t / o);
const ratioCell = (ts, os, better) => {
  const t = ts.filter(Number.isFinite), o = os.filter(Number.isFinite);
  if (!t.length || !o.length) return '–';
  const point = ratioOf(median(t), median(o), better);
  const pairs = t.flatMap((x) => o.map((y) => ratioOf(x, y, better))).filter((r) => Number.isFinite(r) && r > 0);
  if (!Number.isFinite(point) || point <= 0) return '–';
  return pairs.length > 1 ? `${fmt(point, 2)}× (${fmt(Math.min(...pairs), 2)}–${fmt(Math.max(...pairs), 2)})` : `${fmt(point, 2)}×`;
};
const rangeCell = (xs, digits = 1) => {
  const v = xs.filter(Number.isFinite);
  return v.length > 1 ? `${fmt(median(v), digits)} (${fmt(Math.min(...v), digits)}–${fmt(Math.max(...v), digits)})` : fmt(median(v), digits);
};

// The capacity is bracketed by the ladder: it lies between the highest rate
// that passed and the next rate of the ladder, which failed (or was not
// reached). The ratio's spread pairs one server's bracket with the other's.
const bracket = (server) => {
  const r = get(server, 'ramp');
  if (!r?.rates) return null;
  const cap = r.capacity_per_s;
  const above = r.rates.find((g) => g.rate_per_s > cap);
  const best = r.rates.find((g) => g.rate_per_s === cap);
  // The capacity is at least `cap` and below `high` (NaN: not bounded by
  // this ladder); `next` is the rate that failed above it, if any. A server
  // that passed no rate is below the lowest; one that passed every rate, at
  // least the highest. A rate that failed with the tool saturated bounds
  // nothing: the tool, not the server, failed there, so a floor's upper
  // side is open, as is that of a ladder passed to a tool-bound top.
  const floor = !!r.floor || (!above && !!best?.tool_saturated);
  return { cap, next: above?.rate_per_s ?? NaN, high: floor ? NaN : (above?.rate_per_s ?? NaN), failedBy: above?.failed_by, floor };
};
const capacityCell = (server) => {
  const b = bracket(server);
  if (!b) return '–';
  if (!(b.cap > 0)) return b.floor ? `unknown (the tool was the limit at the lowest rate, ${fmt(b.next, 0)})` : `below ${fmt(b.next, 0)} (the lowest rate failed: ${b.failedBy})`;
  if (!Number.isFinite(b.next)) return `≥ ${fmt(b.cap, 0)} (passed every rate of the ladder${b.floor ? '; the tool was saturated at the top one, so this is a floor' : ''})`;
  return `≥ ${fmt(b.cap, 0)}${b.floor ? '' : `, < ${fmt(b.next, 0)}`} (${fmt(b.next, 0)} failed: ${b.failedBy}${b.floor ? '; a floor, the tool was the limit' : ''})`;
};
// The ratio of capacities: the point (tally's capacity over the peer's),
// the least it can be (tally's at its lowest over the peer's at its
// highest) and the most (the other way round); NaN where the ladder leaves
// that side open, as a floor or a rate never failed does.
const capacityRange = (other) => {
  const t = bracket('tally'), o = bracket(other);
  if (!t || !o) return null;
  const oLow = o.cap > 0 ? o.cap : NaN;
  const least = Number.isFinite(o.high) ? t.cap / o.high : NaN;
  const most = Number.isFinite(t.high) ? (oLow > 0 ? t.high / oLow : Infinity) : NaN;
  const point = oLow > 0 ? t.cap / oLow : NaN;
  return { least, point, most };
};
const capacityRatio = (other) => {
  const r = capacityRange(other);
  if (!r) return '–';
  const side = (v) => (Number.isFinite(v) ? `${fmt(v, 2)}` : 'open');
  if (!Number.isFinite(r.point)) return r.least > 0 ? `> ${fmt(r.least, 0)}× (the peer sustained none of the ladder's rates)` : '–';
  return `${fmt(r.point, 2)}× (${side(r.least)}–${side(r.most)})`;
};
// A rung's p99 figures (one per run), and a mark when the rate failed by
// something other than its latency, or was beyond where the ladder stopped.
const rungValues = (server, rate) => rungAt(get(server, 'ramp'), rate)?.p99_ms ?? [];
const rungCell = (server, rate) => {
  const r = get(server, 'ramp');
  const g = rungAt(r, rate);
  if (!g) return r?.rates ? `not run (the ladder stopped at ${fmt(r.rates.at(-1)?.rate_per_s, 0)})` : '–';
  const mark = g.passed ? '' : g.failed_by === 'latency' ? ' over the bound' : ` failed: ${g.failed_by}`;
  return `${rangeCell(g.p99_ms)}${mark}${g.tool_saturated ? ' (tool-bound)' : ''}`;
};
const comparison = [
  ['Capacity: highest clicks/s whose median p99 click → visible ≤ 100 ms', capacityCell, capacityRatio],
  ...[3000, 10000].map((rate) => [`p99 click → visible at ${rate.toLocaleString('en')} clicks/s (ms; median of the ladder's runs)`, (s) => rungCell(s, rate), (o) => ratioCell(rungValues('tally', rate), rungValues(o, rate), 'lower')]),
  ['Idle memory per connection (KiB of server RSS)', (s) => rangeCell(runs(s, 'idle').map(kib)), (o) => ratioCell(runs('tally', 'idle').map(kib), runs(o, 'idle').map(kib), 'lower')],
  ['Chat: message → every member p99 (ms)', (s) => rangeCell(runs(s, 'chat').map((r) => r.delivery.p99_ms)), (o) => ratioCell(runs('tally', 'chat').map((r) => r.delivery.p99_ms), runs(o, 'chat').map((r) => r.delivery.p99_ms), 'lower')],
];
const count = (w) => Math.max(0, ...SERVERS.map((s) => runs(s, w).length));

let md = `# Benchmarks: tally vs Node's socket.io

Generated by \`bench/run.sh\` from the raw lines of one invocation (do not
edit by hand; the lines are in \`bench/results.jsonl\`).

- tally ${one('commit')} (a \`+changes\` suffix would mark uncommitted changes), measured ${times.length ? `${times[0]} to ${times.at(-1)}` : 'at unrecorded times'}
- Machine: ${one('machine')}
- Versions: ${one('versions')}
- CPU pinning (taskset): server on CPUs ${one('server_cpus')}, load tool \`tally-bench\` on CPUs ${one('tool_cpus')}; one server at a time, over loopback
- tally runs with its limits off (\`--max-connections-per-ip 0 --click-limit 0\` and the other rate limits at 0), since the load opens thousands of connections from one address and clicks far faster than people; the Node servers have no limits at all

**Node, throttled** (\`bench/node/server.js\` with \`THROTTLE_MS=10\`) is the
fair peer, the best simple design: increment, ack, and broadcast the first
change of a 10 ms window at once and the rest in one trailing broadcast
when the window ends (tally's default \`--broadcast-interval\`). **Node, per
click** is the design's own code and the baseline: a broadcast after every
click. Both keep conversations in memory; tally stores each chat message
in SQLite (group commit, \`synchronous=FULL\`) before it sends and acks it.

## The comparison

A ratio says how many times better tally does than that server (above 1×
tally is ahead); in brackets, its spread over the runs: the least and the
most favourable pairing of one server's runs with the other's. Capacity is
bracketed by the ladder: it lies between the highest rate that passed and
the next rate, which failed, so its ratio's spread pairs the brackets.
Idle memory ran ${count('idle')} times per server and chat ${count('chat')} times; the
ladder ran each rate ${get('tally', 'ramp')?.runs_per_rate ?? '–'} times.

| | tally | Node, throttled | Node, per click | tally vs Node, throttled | tally vs Node, per click |
|---|---:|---:|---:|---:|---:|
${comparison.map(([label, cellOf, ratio]) => `| ${label} | ${SERVERS.map(cellOf).join(' | ')} | ${ratio('node-throttled')} | ${ratio('node')} |`).join('\n')}

## Every workload

- Workloads: idle — ${params('idle')}; fanout — ${params('fanout')}; flood — ${params('flood')}; big flood (tally only) — ${params('big')}; capacity — ${params('ramp')}; chat — ${params('chat')}

A cell is the median of the runs, with their range when there were
several; the last two columns compare medians.

| metric | tally | Node, throttled | Node, per click | tally vs Node, throttled | tally vs Node, per click |
|---|---:|---:|---:|---:|---:|
`;
// A cell is the median of the runs, with their range when there were
// several; ratios compare medians.
const values = (server, workload, value) => runs(server, workload).map(value);
const cell = (xs) => (xs.length > 1 ? `${fmt(median(xs))} (${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))})` : fmt(median(xs)));
for (const [label, workload, value, better] of metrics) {
  const all = SERVERS.map((s) => values(s, workload, value));
  if (better === 'bool') {
    const yn = (v) => (!v.length ? '–' : v.length === 1 ? (v[0] ? 'yes' : 'no') : `${v.filter(Boolean).length} of ${v.length} runs`);
    md += `| ${label} | ${all.map(yn).join(' | ')} | | |\n`;
    continue;
  }
  if (better === 'info') {
    md += `| ${label} | ${all.map(cell).join(' | ')} | | |\n`;
    continue;
  }
  const [t, nt, n] = all.map(median);
  const ratio = (other) => {
    const r = better === 'lower' ? other / t : t / other;
    return Number.isFinite(r) && r > 0 ? fmt(r, 2) + '×' : '–';
  };
  md += `| ${label} | ${all.map(cell).join(' | ')} | ${ratio(nt)} | ${ratio(n)} |\n`;
}

// A target whose figures this run did not measure says so, rather than
// counting as missed; everything else is judged on the medians of this
// run's lines.
const check = (ok, text, measured = true) => `- ${!measured ? '➖ not measured in this run' : ok ? '✅ met' : '❌ missed'}: ${text}\n`;
const med = (server, workload, value) => median(values(server, workload, value));
const has = (...xs) => xs.every(Number.isFinite);
const idleT = med('tally', 'idle', kib);
const idleN = med('node', 'idle', kib);
const fanT = med('tally', 'fanout', (r) => r.delivery.p99_ms);
const fanN = med('node', 'fanout', (r) => r.delivery.p99_ms);
// A capacity target is met when even the least favourable reading of the
// two brackets clears it, missed when even the most favourable does not,
// and otherwise undecided by this run (say, tally passed every rate the
// tool could offer, so its ratio is only known to be at least so much).
const capCheck = (other, times, name) => {
  const r = capacityRange(other);
  const text = `capacity ≥ ${times}× ${name}'s — tally ${capacityCell('tally')} vs ${capacityCell(other)} clicks/s, a ratio of ${capacityRatio(other)}`;
  if (!r) return check(false, text, false);
  if (r.least >= times) return check(true, text);
  if (Number.isFinite(r.most) && r.most < times) return check(false, text);
  const bounds = Number.isFinite(r.least) && Number.isFinite(r.most) ? `between ${fmt(r.least, 2)}× and ${fmt(r.most, 2)}×, either side of the target` : Number.isFinite(r.least) ? `only from below, at ${fmt(r.least, 2)}×` : Number.isFinite(r.most) ? `only from above, at ${fmt(r.most, 2)}×` : 'on neither side';
  return `- ➖ undecided by this run (the ladder bounds the ratio ${bounds}): ${text}\n`;
};
const big = get('tally', 'big');
md += `\n## Targets, checked on this run\n\n### Issue #4 (against Node, per click)\n\n`;
md += check(idleT <= idleN / 2, `idle memory per connection ≤ ½ of Node's — ${fmt(idleT)} KiB vs ${fmt(idleN)} KiB`, has(idleT, idleN));
md += check(idleT <= 10, `idle memory ≤ 10 KiB per WebSocket connection — ${fmt(idleT)} KiB`, has(idleT));
md += check(fanT <= fanN / 2 && fanT < 20, `fanout p99 ≤ ½ of Node's and < 20 ms — ${fmt(fanT)} ms vs ${fmt(fanN)} ms`, has(fanT, fanN));
md += capCheck('node', 10, 'Node per click');
md += check(big?.converged && big?.visible.p99_ms < 100 && big?.achieved_rate_per_s >= 0.9 * big?.target_rate_per_s,
  `${big?.clients} clients at ${big?.target_rate_per_s} clicks/s: exact convergence and p99 visible < 100 ms — converged ${big?.converged}, p99 ${fmt(big?.visible.p99_ms)} ms, ${fmt(big?.achieved_rate_per_s, 0)} clicks/s`, !!big);

const floodP99 = (r) => r.visible.p99_ms;
const floodT = med('tally', 'flood', floodP99);
const floodNT = med('node-throttled', 'flood', floodP99);
md += `\n### Issue #16 (against Node, throttled)\n\n`;
md += capCheck('node-throttled', 5, 'the throttled Node');
md += check(floodT <= floodNT, `flood p99 click → visible no worse than the throttled Node's — ${fmt(floodT)} ms vs ${fmt(floodNT)} ms`, has(floodT, floodNT));

const chatP99 = (r) => r.delivery.p99_ms;
const chatT = med('tally', 'chat', chatP99);
const chatN = med('node', 'chat', chatP99);
const chatLost = Math.max(...values('tally', 'chat', (r) => r.lost));
const chat = get('tally', 'chat');
md += `\n### Issue #12 (chat)\n\n`;
md += check(chatLost === 0 && chatT < 100,
  `chat: ${chat?.members} members, ${chat?.target_rate_per_s} messages/s: every message reaches every member, p99 < 100 ms — lost ${chatLost} in the worst run, p99 ${fmt(chatT)} ms`, !!chat);
md += check(chatT <= chatN / 2, `chat p99 ≤ ½ of Node's (in memory, not stored) — ${fmt(chatT)} ms vs ${fmt(chatN)} ms`, has(chatT, chatN));

// The ramp chart: p99 visible latency per step, log-log.
const W = 640, H = 360, L = 60, R = 20, T = 20, B = 50;
// A rate with no figure (every run erred) has no point: null is not 0 ms.
const steps = SERVERS.map((s) => ({ s, pts: rungs(get(s, 'ramp')).filter(({ p99 }) => Number.isFinite(p99)).map(({ rate, p99 }) => [rate, Math.max(p99, 0.1)]).sort((a, b) => a[0] - b[0]) }));
const all = steps.flatMap((x) => x.pts);
const xmin = Math.min(...all.map((p) => p[0]), 250), xmax = Math.max(...all.map((p) => p[0]), 1000);
const ymin = 0.5, ymax = Math.max(1000, ...all.map((p) => p[1]));
const lx = (x) => L + ((Math.log10(x) - Math.log10(xmin)) / (Math.log10(xmax) - Math.log10(xmin) || 1)) * (W - L - R);
const ly = (y) => H - B - ((Math.log10(y) - Math.log10(ymin)) / (Math.log10(ymax) - Math.log10(ymin))) * (H - T - B);
const colors = { tally: '#2f5bea', 'node-throttled': '#b26b00', node: '#b42318' };
let svg = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">\n`;
svg += `<rect width="${W}" height="${H}" fill="white"/>\n`;
for (let y = 1; y <= ymax; y *= 10) svg += `<line x1="${L}" x2="${W - R}" y1="${ly(y)}" y2="${ly(y)}" stroke="#eee"/><text x="${L - 6}" y="${ly(y) + 4}" text-anchor="end">${y} ms</text>\n`;
for (let x = 100; x <= xmax; x *= 10) if (x >= xmin) svg += `<line x1="${lx(x)}" x2="${lx(x)}" y1="${T}" y2="${H - B}" stroke="#eee"/><text x="${lx(x)}" y="${H - B + 16}" text-anchor="middle">${x}</text>\n`;
svg += `<line x1="${L}" x2="${W - R}" y1="${ly(100)}" y2="${ly(100)}" stroke="#999" stroke-dasharray="4 4"/><text x="${W - R}" y="${ly(100) - 4}" text-anchor="end" fill="#666">100 ms bound</text>\n`;
svg += `<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">offered clicks/s (log)</text>\n`;
svg += `<text x="14" y="${(T + H - B) / 2}" transform="rotate(-90 14 ${(T + H - B) / 2})" text-anchor="middle">p99 click → visible (log)</text>\n`;
steps.forEach(({ s, pts }, i) => {
  if (!pts.length) return;
  svg += `<polyline fill="none" stroke="${colors[s]}" stroke-width="2" points="${pts.map(([x, y]) => `${lx(x).toFixed(1)},${ly(y).toFixed(1)}`).join(' ')}"/>\n`;
  for (const [x, y] of pts) svg += `<circle cx="${lx(x).toFixed(1)}" cy="${ly(y).toFixed(1)}" r="3" fill="${colors[s]}"/>\n`;
  svg += `<text x="${W - R - 10}" y="${H - B - 12 - (SERVERS.length - 1 - i) * 16}" text-anchor="end" fill="${colors[s]}">${s}</text>\n`;
});
svg += '</svg>\n';

md += `\n## Capacity\n\n![p99 click-to-visible latency per offered rate](ramp.svg)\n\n`;
md += `The capacity ladder (\`tally-bench capacity\`, ${params('ramp')}): at each rate, floods of the step length (clients reconnected each time), judged by the median of their p99 click → visible; a rate passes when that median is within 100 ms and more than half of its runs lost nothing (\`lost\`), kept acks within 90% of the clicks sent (\`throughput\`), sent 90% of the offered rate (\`load generator\`) and ran to the end (\`error\`: a refused connection or a server that stopped answering fails that run, not the ladder; a run the tool could not finish for want of descriptors or local ports counts as \`load generator\`). The ladder goes on past one failed rate and stops after two in a row; the capacity is the highest rate that passed. Each run also records the tool's CPU share of its core: where the median run's was above 90%, the rate is marked *tool-bound* and a capacity stopped by it is a floor, not the server's limit.\n\n`;
md += `| server | capacity clicks/s | stopped by | rates (clicks/s: p99 visible of each run in ms → verdict; tool CPU, server cores) |\n|---|---:|---|---|\n`;
for (const s of SERVERS) {
  for (const r of runs(s, 'ramp')) {
    const detail = r.rates
      ? r.rates.map((g) => `${fmt(g.rate_per_s, 0)}: ${g.p99_ms.map((x) => fmt(x)).join(', ')} → ${g.passed ? 'pass' : g.failed_by}${g.errors?.length ? ` (${g.errors.length} run${g.errors.length > 1 ? 's' : ''} erred: ${g.errors[0]?.error ?? g.errors[0]})` : ''}; ${fmt(pct(g.median_tool_cpu), 0)}%${g.tool_saturated ? ' tool-bound' : ''}, ${fmt(g.median_server_cores, 2)}`).join('<br>')
      : (r.steps ?? []).map((st) => `${fmt(st.target_rate_per_s, 0)} → ${fmt(st.achieved_rate_per_s, 0)}, ${fmt(st.visible.p99_ms)}`).join('; ');
    md += `| ${s} | ${r.rates ? capacityCell(s) : fmt(sustained(r), 0)} | ${r.limited_by ?? '–'} | ${detail} |\n`;
  }
}

// Many connections: the scale workload's steps, and a chart of memory and
// latency against the connections held.
const scales = SERVERS.map((s) => ({ s, r: get(s, 'scale') })).filter(({ r }) => r);
let scaleSvg = null;
if (scales.length) {
  md += `\n## Many connections (issue #16)\n\n`;
  md += `\`tally-bench scale\` holds connections in rising steps, spread over four loopback source addresses. At each step: the server's RSS after connecting; clicks, one at a time, that must each reach every connection (click → all, one sample per click and connection; each click is sent once every connection has seen the one before); a flood from ${get(scales[0].s, 'scale')?.steps?.[0]?.flood?.clients} of the held connections at ${fmt(get(scales[0].s, 'scale')?.steps?.[0]?.flood?.target_rate_per_s, 0)} clicks/s while every other connection listens (visible to all: one sample per click and listener), with every connection required to end on the exact total; and \`GET /healthz\` every 100 ms through the whole step, from a thread of its own, on a new connection each time as a load balancer's check does; then the server's RSS again, after that traffic (engine.io's per-socket queue grows a second block of 32 slots on a connection's 32nd packet and keeps it, as bench/profiling.md shows, so the second figure is what a long-lived connection holds; older lines without it show –). The largest step is what the open-file limit of both processes allows.\n\n`;
  md += `| server | connections | RSS (MiB) after connecting / after traffic | RSS per connection (KiB) after connecting / after traffic | handshake p99 (ms) | click → all p50 / p99 / max (ms), missed, tool CPU (cores) | flood: achieved clicks/s, ack p99 (ms), visible to all p50 / p99 (ms), exact | /healthz p99 (ms) while connecting / clicking / flooding, max, failures |\n|---|---:|---:|---:|---:|---|---|---|\n`;
  for (const { s, r } of scales) {
    for (const st of r.steps) {
      const f = st.flood;
      md += `| ${s} | ${st.connections} | ${fmt(st.server_rss_kib / 1024, 0)} / ${fmt(st.server_rss_after_traffic_kib / 1024, 0)} | ${fmt(st.rss_per_connection_bytes / 1024)} / ${fmt(st.rss_per_connection_after_traffic_bytes / 1024)} | ${fmt(st.handshake.p99_ms)} | ${fmt(st.click_to_all.p50_ms)} / ${fmt(st.click_to_all.p99_ms)} / ${fmt(st.click_to_all.max_ms)}, ${st.click_missed}, ${fmt(st.click_tool_cpu_cores, 2)} | ${fmt(f.achieved_rate_per_s, 0)}, ${fmt(f.ack.p99_ms)}, ${fmt(f.visible_to_all.p50_ms)} / ${fmt(f.visible_to_all.p99_ms)}, ${f.converged && st.click_short === 0 ? 'yes' : 'no'} | ${fmt(st.health.connecting.p99_ms)} / ${fmt(st.health.clicking.p99_ms)} / ${fmt(st.health.flooding.p99_ms)}, ${fmt(st.health.all.max_ms)}, ${st.health.failures} |\n`;
    }
    if (r.stopped) md += `| ${s} | stopped | ${r.stopped} | | | | | |\n`;
  }
  md += `\n![RSS and p99 latencies against connections held](scale.svg)\n`;
  const top = get('tally', 'scale')?.steps?.at(-1);
  if (top) {
    md += `\n### Targets (issue #16, many connections), checked on this run\n\n`;
    if (top.connections < 100000) md += `- The largest step here is ${top.connections} connections, what one process's open-file limit allows on this machine; the checks below are at that step. 100,000 connections across 6 nodes are measured by \`bench/crowd.sh\`, in [benchmarks-crowd.md](benchmarks-crowd.md).\n`;
    // The projection uses the RSS after traffic where the line has it: a
    // server holds connections for hours, and each has grown its queue by
    // then. Lines from before that figure existed project from connecting.
    const held = top.server_rss_after_traffic_kib ?? top.server_rss_kib;
    const when = top.server_rss_after_traffic_kib ? 'after its traffic' : 'after connecting';
    md += check(held && (held * 1024 * 100000) / top.connections < 2 ** 31, `RSS under 2 GB, projected to 100,000 connections from the largest step ${when} (${fmt(held / 1024, 0)} MiB at ${top.connections}: ${fmt((held * 100000) / top.connections / 1024 / 1024, 2)} GiB${top.server_rss_after_traffic_kib ? `; ${fmt((top.server_rss_kib * 100000) / top.connections / 1024 / 1024, 2)} GiB from the RSS just after connecting` : ''})`);
    md += check(top.click_missed === 0 && top.click_short === 0 && top.flood.converged, `every connection sees each total (exact convergence) at ${top.connections}: click missed ${top.click_missed}, flood converged ${top.flood.converged}`);
    md += check(top.click_to_all.p99_ms < 1000, `a click reaches all ${top.connections} with p99 under 1 s — ${fmt(top.click_to_all.p99_ms)} ms`);
    md += check(top.health.failures === 0 && top.health.all.p99_ms < 50, `/healthz answers under 50 ms throughout (p99) at ${top.connections} — p99 ${fmt(top.health.all.p99_ms)} ms (connecting ${fmt(top.health.connecting.p99_ms)}, clicking ${fmt(top.health.clicking.p99_ms)}, flooding ${fmt(top.health.flooding.p99_ms)}), max ${fmt(top.health.all.max_ms)} ms, ${top.health.failures} failures`);
  }
  // Two panels side by side: RSS (MiB) and p99 latencies (ms), against connections.
  const SW = 720, SH = 320, PW = SW / 2;
  const xTicks = scales[0].r.steps.map((st) => st.connections);
  const xMax = Math.max(...scales.flatMap(({ r }) => r.steps.map((st) => st.connections)));
  const rssSeries = scales.map(({ s, r }) => ({ label: s, color: colors[s], pts: r.steps.map((st) => [st.connections, (st.server_rss_after_traffic_kib ?? st.server_rss_kib ?? 0) / 1024]) }));
  const latSeries = scales.flatMap(({ s, r }) => [
    { label: `${s}: click → all`, color: colors[s], pts: r.steps.map((st) => [st.connections, st.click_to_all.p99_ms]) },
    { label: `${s}: /healthz`, color: colors[s], dash: true, pts: r.steps.map((st) => [st.connections, st.health.all.p99_ms]) },
  ]);
  scaleSvg = chart(SW, SH, [
    linePanel({ x0: 0, width: PW, height: SH, left: 55, right: 10, title: 'server RSS (MiB), after traffic', series: rssSeries, xTicks, xMax, xLabel: 'connections held (RSS)' }),
    linePanel({ x0: PW, width: PW, height: SH, left: 55, right: 10, title: 'p99 latency (ms)', series: latSeries, xTicks, xMax, xLabel: 'connections held (click → all solid, /healthz dashed)' }),
  ]);
}
// Measured elsewhere, each in a run of its own, and linked rather than
// inlined: a figure on this page comes from this page's run.
md += `\n## Measured separately\n\nThese come from runs of their own, each file headed with its date, commit and command:\n\n`;
md += `- [The cluster](benchmarks-cluster.md): several nodes behind one Redis (\`bench/cluster.sh\`).\n`;
md += `- [100,000 connections across 6 nodes](benchmarks-crowd.md) (\`bench/crowd.sh\`).\n`;
md += `- Hand-measured notes: ${[['chat.md', 'chat history and presence'], ['durable.md', 'durable mode'], ['soak.md', 'soak'], ['stalled.md', 'stalled clients'], ['attack.md', 'attacks on the limits'], ['hardening.md', 'the hardening round'], ['peer.md', 'the fair peer'], ['users.md', 'users and the leaderboard'], ['profiling.md', 'profiling']].map(([f, what]) => `[${what}](../bench/${f})`).join(', ')}.\n`;
md += `\n## Runs\n\n| server | workload | round | measured at | commit | server CPUs | load average before | server CPU s |\n|---|---|---:|---|---|---|---:|---:|\n`;
for (const r of rows) {
  md += `| ${r.server} | ${r.workload} | ${r.round ?? 1} | ${r.measured_at ?? 'unrecorded'} | ${r.commit ?? 'unrecorded'} | ${r.server_cpus ?? 'unrecorded'} | ${fmt(r.loadavg_before, 2)} | ${fmt(r.server_cpu_s, 2)} |\n`;
}
const failed = rows.filter((r) => r.error);
if (failed.length) {
  md += `\n## Failed runs\n\n${failed.map((r) => `- ${r.server} / ${r.workload}: ${r.error}`).join('\n')}\n`;
}
md += `\nRaw results, one JSON line per workload:\n\n\`\`\`json\n${rows.map((r) => JSON.stringify({ ...r, steps: undefined, warmup: undefined, rates: undefined })).join('\n')}\n\`\`\`\n`;

writeFileSync(join(outDir, 'benchmarks.md'), md);
writeFileSync(join(outDir, 'ramp.svg'), svg);
// Without a scale run the previous chart, if any, is left alone.
if (scaleSvg) writeFileSync(join(outDir, 'scale.svg'), scaleSvg);
console.log(`wrote ${join(outDir, 'benchmarks.md')}, ${join(outDir, 'ramp.svg')}${scaleSvg ? ` and ${join(outDir, 'scale.svg')}` : ''}`);
