#!/usr/bin/env node
// Type-checks the Grafana dashboards against @grafana/schema with tsc.
//
// For each dashboard JSON this writes .generated/<name>.ts, in which every
// panel is its own object literal, `const panel_N = {…} satisfies
// Panels["<type>"]` (types.ts: the schema's panel, with that panel type's
// Options and custom FieldConfig, loosened as Grafana reads JSON), and the
// dashboard without its panels is `{…} satisfies DashboardTop`. Object
// literals checked that way get tsc's excess-property check at every depth,
// so an unknown property is an error as well as a wrong value. One tsc run
// checks all the files; its errors are mapped back, line by line, to the
// dashboard file, the panel (id, title, type) and the property path.
//
// Usage: node check.mjs [--keep] [dashboard.json ...]
//   default: every stack/grafana/dashboards/*.json
//   --keep:  keep .generated/ (the files tsc checked) for a look
// Exit: 0 no problem, 1 problems found, 2 cannot run (npm ci not done, ...).

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../../..');
const generated = join(here, '.generated');

const fail = (message) => {
  console.error(`schema-check: ${message}`);
  process.exit(2);
};

// ---- arguments and set-up -------------------------------------------------

const args = process.argv.slice(2);
const keep = args.includes('--keep');
let files = args.filter((a) => a !== '--keep').map((a) => resolve(a));
if (files.length === 0) {
  const dir = join(root, 'stack/grafana/dashboards');
  files = readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => join(dir, f));
}
if (files.length === 0) fail('no dashboard to check');

const tscPath = join(here, 'node_modules/typescript/bin/tsc');
const schemaPackage = join(here, 'node_modules/@grafana/schema/package.json');
if (!existsSync(tscPath) || !existsSync(schemaPackage)) {
  fail(`dependencies missing: run  npm ci --prefix ${relative(process.cwd(), here) || '.'}`);
}
const schemaVersion = JSON.parse(readFileSync(schemaPackage, 'utf8')).version;
const tsVersion = JSON.parse(readFileSync(join(here, 'node_modules/typescript/package.json'), 'utf8')).version;

// The schema must be the pinned Grafana's minor: a bump of the image without
// one of package.json (or the reverse) is an error.
const compose = join(root, 'compose.yaml');
if (existsSync(compose)) {
  const pinned = readFileSync(compose, 'utf8').match(/image:\s*["']?grafana\/grafana:(\d+)\.(\d+)\.\d+/);
  if (!pinned) fail('compose.yaml: no grafana/grafana:X.Y.Z image found');
  const [major, minor] = schemaVersion.split('.');
  if (pinned[1] !== major || pinned[2] !== minor) {
    fail(
      `compose.yaml pins grafana/grafana:${pinned[1]}.${pinned[2]}.x but @grafana/schema is ${schemaVersion}: ` +
        `pin the newest ${pinned[1]}.${pinned[2]}.x in stack/grafana/schema-check/package.json (npm view @grafana/schema versions)`,
    );
  }
}

// What npm ci installs comes from the npm registry only.
const lock = JSON.parse(readFileSync(join(here, 'package-lock.json'), 'utf8'));
for (const [name, entry] of Object.entries(lock.packages ?? {})) {
  if (entry.resolved && !entry.resolved.startsWith('https://registry.npmjs.org/')) {
    fail(`package-lock.json: ${name} is resolved from ${entry.resolved}, not from https://registry.npmjs.org/`);
  }
}

// ---- JSON to TypeScript, one property a line, with each line's JSON path ----

/** An expression written as is (a reference to a panel constant). */
class Raw {
  constructor(text) {
    this.text = text;
  }
}

const pathOf = (base, key) =>
  typeof key === 'number' ? `${base}[${key}]` : /^[A-Za-z_$][\w$]*$/.test(key) ? (base ? `${base}.${key}` : key) : `${base}[${JSON.stringify(key)}]`;

/**
 * Writes the dashboard's TypeScript file; `lines[n]` (1-based) says which
 * dashboard, panel and property line n holds.
 */
class Writer {
  constructor() {
    this.out = [];
    this.lines = [null];
  }
  line(text, where) {
    this.out.push(text);
    this.lines.push(where);
  }
  /** Appends `value` after `prefix` (the rest of the current line). */
  value(value, prefix, suffix, indent, where) {
    if (value instanceof Raw || value === null || typeof value !== 'object') {
      const text = value instanceof Raw ? value.text : JSON.stringify(value);
      this.line(`${indent}${prefix}${text}${suffix}`, where);
      return;
    }
    const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
    const [open, close] = Array.isArray(value) ? ['[', ']'] : ['{', '}'];
    if (entries.length === 0) {
      this.line(`${indent}${prefix}${open}${close}${suffix}`, where);
      return;
    }
    this.line(`${indent}${prefix}${open}`, where);
    for (const [key, v] of entries) {
      const child = { ...where, path: pathOf(where.path, key), value: v };
      const keyText =
        typeof key === 'number' ? '' : /^[A-Za-z_$][\w$]*$/.test(key) ? `${key}: ` : `${JSON.stringify(key)}: `;
      child.start = this.lines.length;
      this.value(v, keyText, ',', `${indent}  `, child);
      child.end = this.lines.length - 1;
    }
    this.line(`${indent}${close}${suffix}`, where);
  }
}

const knownPanelTypes = (() => {
  const text = readFileSync(join(here, 'types.ts'), 'utf8');
  const body = text.slice(text.indexOf('export interface Panels {'));
  return new Set([...body.slice(0, body.indexOf('\n}')).matchAll(/^\s+'?([\w-]+)'?: /gm)].map((m) => m[1]));
})();

const problems = []; // { order, file, panel, panelPath, path, text, detail, internal }
const sources = new Map(); // generated file name -> { index, file, lines, out }

const describePanel = (p) => {
  if (!p) return 'the dashboard';
  const id = p.id === undefined ? 'without id' : `${p.id}`;
  return `panel ${id} ${JSON.stringify(p.title ?? '')} (${p.type ?? 'no type'})`;
};

files.forEach((file, fileIndex) => {
  const shown = relative(root, file).startsWith('..') ? file : relative(root, file);
  let dashboard;
  try {
    dashboard = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    problems.push({ file: shown, panel: null, path: '', text: `does not parse as JSON: ${e.message}` });
    return;
  }
  if (dashboard === null || typeof dashboard !== 'object' || Array.isArray(dashboard)) {
    problems.push({ file: shown, panel: null, path: '', text: 'is not a JSON object' });
    return;
  }

  const w = new Writer();
  w.line(`// Generated by check.mjs from ${shown}: what tsc checks. Do not edit.`, null);
  w.line(`import type { DashboardTop, Panels } from '../types';`, null);
  w.line('', null);

  let count = 0;
  /** Writes the panel (and a row's panels first); returns its constant. */
  const writePanel = (panel, path) => {
    if (panel === null || typeof panel !== 'object' || Array.isArray(panel)) {
      problems.push({ file: shown, panel: null, path, text: 'a panel that is not a JSON object' });
      return new Raw('null');
    }
    const info = { id: panel.id, title: panel.title, type: panel.type };
    let body = panel;
    if (panel.type === 'row' && Array.isArray(panel.panels)) {
      body = { ...panel, panels: panel.panels.map((p, i) => writePanel(p, `${path}.panels[${i}]`)) };
    }
    if (!knownPanelTypes.has(panel.type)) {
      problems.push({
        file: shown,
        panel: info,
        path: 'type',
        text:
          panel.type === undefined
            ? 'the panel has no type'
            : `unknown panel type ${JSON.stringify(panel.type)}: @grafana/schema ${schemaVersion} has no panel configuration for it ` +
              '(a typo? a plugin panel must be added to Panels in stack/grafana/schema-check/types.ts)',
      });
      return new Raw('null');
    }
    const name = `panel_${++count}`;
    const where = { panel: info, panelPath: path, path: '', value: panel };
    w.value(body, `const ${name} = `, ` satisfies Panels[${JSON.stringify(panel.type)}];`, '', where);
    w.line('', null);
    return new Raw(name);
  };

  const top = { ...dashboard };
  if (Array.isArray(dashboard.panels)) {
    top.panels = dashboard.panels.map((p, i) => writePanel(p, `panels[${i}]`));
  }
  w.value(top, 'export const dashboard = ', ' satisfies DashboardTop;', '', { panel: null, path: '', value: dashboard });

  const name = `${String(fileIndex).padStart(2, '0')}-${basename(file, '.json').replace(/[^\w-]/g, '_')}.ts`;
  sources.set(name, { index: fileIndex, file: shown, lines: w.lines, out: w.out });
});

// ---- tsc over every generated file ------------------------------------------
//
// tsc reports one unknown property an object literal, and does not report an
// unknown property of an object next to a property with a wrong value: each
// pass blanks the lines of the properties it reported (line numbers stay the
// same) and tsc runs again, until a pass reports nothing new.

const short = (v) => {
  const s = JSON.stringify(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
};
const unquote = (name) => name.replace(/^"(.*)"$/, '$1');
const expected = (t) => t.replace(/ \| undefined$/, '').replace(/^undefined \| /, '');
const excess = /known properties, (?:and|but) '(.+?)' does not exist in type '(.+?)'(?:\. Did you mean to write '(.+?)'\?)?/;

/** tsc's message, in plain words where it is one of the usual ones. */
const plain = (d, where) => {
  const first = d.message.split('\n')[0];
  let m;
  if ((m = first.match(excess))) {
    const hint = m[3] ? `; did you mean "${unquote(m[3])}"?` : '';
    let type = m[2].replace(/^Schema<(.*)>$/, '$1');
    if (type === 'NoCustomFieldOptions') {
      return `unknown property "${unquote(m[1])}": ${where?.panel?.type ?? 'this'} panels have no custom field options`;
    }
    if (where?.panel && (type === 'Options' || type === 'FieldConfig')) type = `${where.panel.type} panel ${type}`;
    return `unknown property "${unquote(m[1])}": the schema's ${type} has no such property${hint}`;
  }
  if ((m = first.match(/^Type '(.+)' is not assignable to type '(.+?)'\.(?: Did you mean '(.+)'\?)?$/))) {
    const got = where && where.value !== undefined ? short(where.value) : m[1];
    const hint = m[3] ? `; did you mean ${m[3]}?` : '';
    return `wrong value ${got}: the schema wants ${expected(m[2])}${hint}`;
  }
  return first;
};

const runTsc = () => {
  const run = spawnSync(process.execPath, [tscPath, '-p', join(here, 'tsconfig.json'), '--pretty', 'false'], {
    cwd: here,
    encoding: 'utf8',
    // A type check of five dashboards takes seconds; never wait forever.
    timeout: 120_000,
  });
  if (run.error) fail(`cannot run tsc: ${run.error.message}`);
  // `file(line,col): error TSnnnn: message` and, indented, the rest of the message.
  const found = [];
  for (const text of `${run.stdout}${run.stderr}`.split('\n')) {
    const m = text.match(/^(.*)\((\d+),(\d+)\): error (TS\d+): (.*)$/);
    if (m) found.push({ source: m[1], line: Number(m[2]), col: Number(m[3]), code: m[4], message: m[5] });
    else if (text.trim() && found.length) found.at(-1).message += `\n${text.trim()}`;
    else if (text.trim()) found.push({ source: null, code: '', message: text.trim() });
  }
  if (run.status !== 0 && found.length === 0) fail(`tsc failed (exit ${run.status}) without a diagnostic`);
  return found;
};

rmSync(generated, { recursive: true, force: true });
mkdirSync(generated);
const seen = new Set();
const maxPasses = 30;
let passes = 0;
let again = sources.size > 0;
while (again && passes < maxPasses) {
  passes += 1;
  again = false;
  for (const [name, { out }] of sources) writeFileSync(join(generated, name), `${out.join('\n')}\n`);
  for (const d of runTsc()) {
    const name = d.source ? basename(d.source) : null;
    const src = name && d.source.includes('.generated') ? sources.get(name) : null;
    const key = `${d.source}:${d.line}:${d.code}:${d.message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    if (!src) {
      problems.push({ file: d.source ?? 'tsc', panel: null, path: '', text: `${d.code} ${d.message}`, internal: true });
      continue;
    }
    const where = src.lines[d.line] ?? null;
    problems.push({
      order: [src.index, d.line],
      file: src.file,
      panel: where?.panel ?? null,
      path: where?.path ?? '',
      panelPath: where?.panelPath,
      text: plain(d, where),
      detail: `tsc ${d.code}: ${d.message.replace(/\n/g, ' ')}`,
    });
    // Reported: out of the next pass, which may then see what tsc did not
    // look at (the other unknown properties of an object, an unknown
    // property next to a wrong value).
    if (where?.start === d.line) {
      for (let n = where.start; n <= where.end; n++) src.out[n - 1] = '';
      again = true;
    }
  }
}

if (again) {
  problems.push({ file: 'tsc', internal: true, text: `stopped after ${maxPasses} passes: fix these and run again, there may be more` });
}
if (!keep) rmSync(generated, { recursive: true, force: true });

// ---- report ---------------------------------------------------------------

const panelCount = [...sources.values()].reduce((n, s) => n + new Set(s.lines.filter((l) => l?.panel).map((l) => l.panelPath)).size, 0);
const against = `@grafana/schema ${schemaVersion} (tsc ${tsVersion})`;

if (problems.length === 0) {
  console.log(`schema-check: ${files.length} dashboard(s), ${panelCount} panel(s) checked against ${against}: no problem`);
  process.exit(0);
}

// In the order of the files, then of the generated lines: panel by panel (a
// row's panels before the row), the dashboard's own properties last.
const rank = (p) => p.order ?? [files.findIndex((f) => p.file === f || p.file === relative(root, f)), -1];
problems.sort((a, b) => rank(a)[0] - rank(b)[0] || rank(a)[1] - rank(b)[1]);

let last = '';
for (const p of problems) {
  const head = p.internal ? `${p.file} (the check itself, not a dashboard)` : `${p.file}, ${describePanel(p.panel)}${p.panelPath ? ` at ${p.panelPath}` : ''}`;
  if (head !== last) console.error(`\n${head}:`);
  last = head;
  console.error(`  - ${p.path ? `${p.path}: ` : ''}${p.text}`);
  if (p.detail) console.error(`      (${p.detail})`);
}
console.error(`\nschema-check: ${problems.length} problem(s) in the dashboards, checked against ${against}`);
process.exit(1);
