/**
 * Error kinds the CLI maps to exit codes. Library code throws these for bad input (a file,
 * a spec, weights, options), naming the offending thing; anything else is an internal failure.
 */
export class InputError extends Error {
  override name = 'InputError';
}

/** A verification that ran and failed (e.g. a permuted model is not the same function). */
export class CheckFailedError extends Error {
  override name = 'CheckFailedError';
}

/** Exit codes of the `rebasin` CLI (documented in the README). */
export const EXIT = {
  ok: 0,
  internal: 1,
  usage: 2,
  badInput: 3,
  checkFailed: 4,
} as const;
