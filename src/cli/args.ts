/**
 * A small declarative argument parser: each command lists its options with type, default and
 * help, so every bad input gets a message naming the option, and `--help` is generated.
 */
export type OptionType = 'string' | 'number' | 'int' | 'boolean' | 'list';

export interface OptionSpec {
  type: OptionType;
  help: string;
  default?: string | number | boolean | string[];
  alias?: string;
  /** Allowed values (strings, or items of a list). */
  choices?: readonly string[];
}

export interface CommandSpec {
  name: string;
  summary: string;
  usage: string;
  options: Record<string, OptionSpec>;
  /** Names of positional arguments, for help; `...` suffix = variadic. */
  positionals?: string[];
}

export type ParsedValue = string | number | boolean | string[] | undefined;

export class UsageError extends Error {}

export interface Parsed {
  positionals: string[];
  options: Record<string, ParsedValue>;
}

export function parseArgs(spec: CommandSpec, argv: string[]): Parsed {
  const options: Record<string, ParsedValue> = {};
  const positionals: string[] = [];
  const aliases = new Map<string, string>();
  for (const [name, o] of Object.entries(spec.options)) if (o.alias) aliases.set(o.alias, name);
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('-') || arg === '-') {
      positionals.push(arg);
      continue;
    }
    let key: string;
    let value: string | undefined;
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      key = eq >= 0 ? arg.slice(2, eq) : arg.slice(2);
      value = eq >= 0 ? arg.slice(eq + 1) : undefined;
    } else {
      key = aliases.get(arg.slice(1)) ?? arg.slice(1);
    }
    if (key.startsWith('no-') && spec.options[key.slice(3)]?.type === 'boolean' && value === undefined) {
      options[key.slice(3)] = false;
      continue;
    }
    const o = spec.options[key];
    if (!o) {
      const shown = arg.startsWith('--') ? `--${key}` : arg;
      const near = arg.startsWith('--') ? suggestOption(key, Object.keys(spec.options)) : undefined;
      throw new UsageError(`${spec.name}: unknown option ${shown}${near ? ` (did you mean --${near}?)` : ''} (see --help)`);
    }
    if (o.type === 'boolean') {
      if (value === undefined) options[key] = true;
      else if (value === 'true' || value === 'false') options[key] = value === 'true';
      else throw new UsageError(`${spec.name}: --${key} is a flag; got value "${value}"`);
      continue;
    }
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new UsageError(`${spec.name}: --${key} needs a value`);
      value = argv[++i];
    }
    options[key] = convert(spec.name, key, o, value);
  }
  for (const [name, o] of Object.entries(spec.options)) {
    if (options[name] === undefined && o.default !== undefined) options[name] = o.default;
  }
  return { positionals, options };
}

/**
 * The declared option closest to an unknown one, for "did you mean": one name a prefix of the
 * other (`--output` → `--out`), or at most ⌊len/3⌋ (≥ 1) edits away (`--epoch` → `--epochs`).
 */
export function suggestOption(key: string, names: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestScore = Infinity;
  for (const name of names) {
    let score = editDistance(key, name);
    const prefix = Math.min(key.length, name.length) >= 3 && (key.startsWith(name) || name.startsWith(key));
    if (!prefix && score > Math.max(1, Math.floor(Math.max(key.length, name.length) / 3))) continue;
    if (prefix) score = Math.min(score, 1);
    if (score < bestScore) {
      bestScore = score;
      best = name;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length];
}

const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
const INTEGER = /^[+-]?\d+$/;

/** A finite decimal number, or NaN for anything else ("0x1", "", "1e999"): for list items that are numbers. */
export function parseDecimal(value: string): number {
  const v = Number(value);
  return DECIMAL.test(value.trim()) && Number.isFinite(v) ? v : NaN;
}

function convert(cmd: string, key: string, o: OptionSpec, value: string): ParsedValue {
  switch (o.type) {
    case 'string':
      if (o.choices && !o.choices.includes(value)) throw new UsageError(`${cmd}: --${key} must be one of ${o.choices.join(', ')}; got "${value}"`);
      return value;
    case 'number': {
      // Decimal notation only: Number() would also take "0x1", "0b1", "" and " ".
      const v = Number(value);
      if (!DECIMAL.test(value) || !Number.isFinite(v)) throw new UsageError(`${cmd}: --${key} expects a finite decimal number, got "${value}"`);
      return v;
    }
    case 'int': {
      const v = Number(value);
      if (!INTEGER.test(value) || !Number.isSafeInteger(v)) throw new UsageError(`${cmd}: --${key} expects an integer, got "${value}"`);
      return v;
    }
    case 'list': {
      const items = value.split(',').map((s) => s.trim());
      if (items.some((s) => s.length === 0)) throw new UsageError(`${cmd}: --${key} expects a comma-separated list with no empty items, got "${value}"`);
      if (o.choices) {
        for (const it of items) if (!o.choices.includes(it)) throw new UsageError(`${cmd}: --${key}: "${it}" is not one of ${o.choices.join(', ')}`);
      }
      return items;
    }
    default:
      return value;
  }
}

export function formatHelp(spec: CommandSpec): string {
  const lines = [`${spec.summary}`, '', `usage: ${spec.usage}`, '', 'options:'];
  for (const [name, o] of Object.entries(spec.options)) {
    const flag = `--${name}${o.alias ? `, -${o.alias}` : ''}${o.type === 'boolean' ? '' : ` <${o.type}>`}`;
    const def = o.default !== undefined && o.default !== false ? ` (default: ${Array.isArray(o.default) ? o.default.join(',') : o.default})` : '';
    const ch = o.choices ? ` [${o.choices.join('|')}]` : '';
    lines.push(`  ${flag.padEnd(28)} ${o.help}${ch}${def}`);
  }
  return lines.join('\n');
}
