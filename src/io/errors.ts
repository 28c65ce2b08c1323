import { InputError } from '../errors.js';

/**
 * The one error type every checkpoint parser throws on malformed input, so callers can tell
 * "this file is bad" (FormatError) apart from I/O failures (ENOENT, EACCES: plain Node errors)
 * and programming mistakes (TypeError/RangeError). A malformed file is the user's input, so it
 * is an InputError (exit 3 at the CLI).
 */
export class FormatError extends InputError {
  override readonly name = 'FormatError';
  /** Path of the offending file, or '<buffer>' when parsing bytes held in memory. */
  readonly file: string;
  /** What is at fault: a tensor name, a header key ('header', 'shape', 'data_offsets'...), a zip member. */
  readonly field: string;
  /** The message without the "file: field:" prefix. */
  readonly detail: string;

  /**
   * `label` is how the field is shown in the message (e.g. `tensor "fc1.weight"`); it defaults to
   * the field itself. The message reads `file: label: detail`.
   */
  constructor(file: string, field: string, detail: string, options: { label?: string; cause?: unknown } = {}) {
    super(`${file}: ${options.label ?? field}: ${detail}`, options.cause === undefined ? undefined : { cause: options.cause });
    this.file = file;
    this.field = field;
    this.detail = detail;
  }
}

/** Short description of an unknown thrown value, for wrapping third-party errors (zlib, JSON). */
export function describeError(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}
