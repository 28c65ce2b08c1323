// Imports point one way, down. The floors are the `src/` lines of the README's Layout section, in
// the order written there (lowest first); a file may import from its own floor and the floors
// below it, type-only imports included, with no per-file exceptions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';

const root = process.cwd();

/** The floors in the README's Layout code block, lowest first (paths relative to src/). */
function floorsFromReadme(): string[] {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const section = readme.split(/^## Layout\s*$/m)[1];
  assert.ok(section, 'README.md has no "## Layout" section');
  const block = section.split('```')[1];
  assert.ok(block, 'the Layout section has no code block');
  const floors: string[] = [];
  for (const line of block.split('\n')) {
    const m = /^src\/(\S*)/.exec(line);
    if (m) floors.push(m[1].replace(/\/$/, ''));
  }
  return floors;
}

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...sourceFiles(p));
    else if (name.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** Every relative module a file imports or re-exports, statically or dynamically. */
function importsOf(source: string): string[] {
  const specs: string[] = [];
  const patterns = [
    /\b(?:import|export)\s+(?:type\s+)?[^'";]*?\bfrom\s+['"]([^'"]+)['"]/g,
    /\bimport\s+['"]([^'"]+)['"]/g,
    /\bimport\(\s*['"]([^'"]+)['"]\s*\)/g,
  ];
  for (const re of patterns) for (const m of source.matchAll(re)) if (m[1].startsWith('.')) specs.push(m[1]);
  return specs;
}

test('layering: every import in src/ points to its own floor or one below (README Layout order)', () => {
  const floors = floorsFromReadme();
  assert.ok(floors.length >= 5, `expected the README to list the src/ floors, found ${floors.join(', ')}`);
  const srcDir = join(root, 'src');
  // A file belongs to the floor with the longest matching path.
  const floorOf = (file: string): number => {
    const rel = relative(srcDir, file).split(sep).join('/');
    let best = -1;
    let bestLen = -1;
    floors.forEach((f, i) => {
      const hit = rel === f || rel.startsWith(f + '/') || rel === f.replace(/\.js$/, '.ts');
      if (hit && f.length > bestLen) { best = i; bestLen = f.length; }
    });
    return best;
  };
  const unplaced: string[] = [];
  const upward: string[] = [];
  for (const file of sourceFiles(srcDir)) {
    const from = floorOf(file);
    const relFile = relative(root, file);
    if (from < 0) { unplaced.push(relFile); continue; }
    for (const spec of importsOf(readFileSync(file, 'utf8'))) {
      const target = resolve(dirname(file), spec).replace(/\.js$/, '.ts');
      const to = floorOf(target);
      if (to < 0) unplaced.push(`${relFile} imports ${spec}, which is on no floor`);
      else if (to > from) upward.push(`${relFile} (${floors[from]}) imports ${spec} (${floors[to]})`);
    }
  }
  assert.deepEqual(unplaced, [], `files on no floor of the README's Layout:\n${unplaced.join('\n')}`);
  assert.deepEqual(upward, [], `imports that point up:\n${upward.join('\n')}`);
});
