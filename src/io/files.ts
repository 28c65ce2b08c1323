/**
 * The file-access policy: every file rebasin reads goes through `openForRead`/`readWhole`, and
 * every output path is checked by `checkOutputs` before a command starts its work. The parsers
 * (safetensors.ts, npy.ts, onnx.ts, tfjs.ts) work on bytes and handles and know nothing of this.
 *
 * Inputs:
 * - must be regular files after resolving symbolic links: a FIFO, socket or device (or a link to
 *   one, e.g. to /dev/zero) is refused before a byte is read. The file is opened non-blocking and
 *   checked with fstat on the open handle, so a FIFO can neither hang the open nor the read;
 * - a whole-file read (JSON, ONNX protobuf, TF.js shards) is bounded: `maxBytes` (JSON files:
 *   `LIMITS.json`) and never more than `LIMITS.wholeFile` (one Node Buffer); larger files are
 *   read by the streaming readers (safetensors, .npy, .npz) or refused with one line;
 * - a file referenced by another file (a TF.js shard listed in model.json) must resolve, after
 *   links, inside the referencing file's folder (`within`);
 * - an archive's declared total uncompressed size is bounded (`LIMITS.inflated`) before any
 *   member is inflated (npy.ts).
 *
 * Outputs (`checkOutputs`, and io/atomic.ts for the write itself): not an existing directory, not
 * a device/FIFO/socket or a link to one, in a folder that exists (or can be created) and is
 * writable, and not the same file (device and inode, after links) as any input or another output.
 */
import { closeSync, constants as fsc, fstatSync, openSync, promises as fsp, readSync, statSync, type Stats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { dirname, relative, resolve, isAbsolute, sep } from 'node:path';
import { InputError } from '../errors.js';

const GiB = 1024 ** 3;

/** The policy's size limits, in bytes. */
export const LIMITS = {
  /** Largest file read whole into one Buffer (Node's limit is 2 GiB − 1). */
  wholeFile: 2 * GiB - 1,
  /** Largest JSON file (spec, model config, TF.js model.json). */
  json: 256 * 1024 ** 2,
  /** Largest total declared uncompressed size of an archive's members (.npz). */
  inflated: 8 * GiB,
} as const;

export interface OpenedFile {
  /** The path as given. */
  path: string;
  handle: FileHandle;
  size: number;
}

export interface ReadPolicy {
  /** Refuse files larger than this many bytes. */
  maxBytes?: number;
  /** The file must resolve (after links) inside this folder; `referencedBy` names who listed it. */
  within?: { dir: string; referencedBy: string };
  /** What the file is, for messages ("shard", "spec", …); defaults to nothing. */
  what?: string;
}

function errnoWhy(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EISDIR') return 'is a directory';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'ELOOP') return 'too many levels of symbolic links';
  if (code === 'ENOTDIR') return 'a path component is not a directory';
  return code ?? (e as Error).message;
}

/** True for Node file-system errors (ENOENT, EACCES, …), which are the user's to fix. */
export function isErrno(e: unknown): e is NodeJS.ErrnoException {
  const code = (e as NodeJS.ErrnoException | null)?.code;
  return typeof code === 'string' && /^E[A-Z]+$/.test(code);
}

/** A refused or failed read: one line `path: cannot read (reason)`; `reason` alone for callers that reword it. */
export class UnreadableFile extends InputError {
  constructor(readonly path: string, readonly reason: string, message = `${path}: cannot read (${reason})`) {
    super(message);
  }
}

/** An InputError naming the file and why it cannot be read (missing, a directory, no permission). */
export function unreadable(path: string, e: unknown): UnreadableFile {
  return new UnreadableFile(path, errnoWhy(e));
}

function kind(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  return 'not a regular file';
}

function label(path: string, policy: ReadPolicy): string {
  return policy.what ? `${policy.what} ${path}` : path;
}

/** Is `path` (already real) inside the real folder `dir`? */
function inside(dir: string, path: string): boolean {
  const rel = relative(dir, path);
  return rel !== '' && rel !== '..' && !rel.startsWith('..' + sep) && !isAbsolute(rel);
}

/** Checks the `within` rule for a path: resolved lexically and through links. */
async function checkWithin(path: string, policy: ReadPolicy): Promise<void> {
  if (!policy.within) return;
  const { dir, referencedBy } = policy.within;
  const refused = () => new UnreadableFile(path, `outside the folder ${dir} of ${referencedBy}; referenced files must stay inside it`, `${referencedBy}: ${label(path, policy)} is outside its folder ${dir}; referenced files must stay inside it`);
  if (!inside(resolve(dir), resolve(path))) throw refused();
  let realDir: string;
  let realPath: string;
  try {
    realDir = await fsp.realpath(dir);
    realPath = await fsp.realpath(path);
  } catch (e) {
    throw unreadable(label(path, policy), e);
  }
  if (!inside(realDir, realPath)) throw refused();
}

/**
 * Opens `path` for reading under the policy: a regular file (after links), within `maxBytes` and
 * `within`. Every refusal is an InputError naming the file. Close the handle.
 */
export async function openForRead(path: string, policy: ReadPolicy = {}): Promise<OpenedFile> {
  await checkWithin(path, policy);
  let st: Stats;
  try {
    st = await fsp.stat(path);
  } catch (e) {
    throw unreadable(label(path, policy), e);
  }
  if (!st.isFile()) throw new UnreadableFile(label(path, policy), `${kind(st)}; only regular files are read`);
  let handle: FileHandle;
  try {
    // Non-blocking: if the path was swapped for a FIFO since the stat, the open still returns.
    handle = await fsp.open(path, fsc.O_RDONLY | fsc.O_NONBLOCK | (fsc.O_NOCTTY ?? 0));
  } catch (e) {
    throw unreadable(label(path, policy), e);
  }
  try {
    const fst = await handle.stat();
    if (!fst.isFile()) throw new UnreadableFile(label(path, policy), `${kind(fst)}; only regular files are read`);
    if (policy.maxBytes !== undefined && fst.size > policy.maxBytes) {
      throw new UnreadableFile(label(path, policy), `${fst.size} bytes, more than the ${policy.maxBytes}-byte limit for this kind of file`);
    }
    return { path, handle, size: fst.size };
  } catch (e) {
    await handle.close().catch(() => undefined);
    throw e;
  }
}

/** Runs `fn` on the opened file and closes it. */
export async function withOpenFile<T>(path: string, policy: ReadPolicy, fn: (f: OpenedFile) => Promise<T>): Promise<T> {
  const f = await openForRead(path, policy);
  try {
    return await fn(f);
  } finally {
    await f.handle.close().catch(() => undefined);
  }
}

/**
 * Reads a whole file (at most `policy.maxBytes`, and never over `LIMITS.wholeFile`), checking the
 * size before allocating; `tooLarge` words the refusal for formats that have a streaming path.
 */
export async function readWhole(path: string, policy: ReadPolicy & { tooLarge?: string } = {}): Promise<Buffer> {
  return withOpenFile(path, policy, async ({ handle, size }) => {
    if (size > LIMITS.wholeFile) {
      throw new UnreadableFile(label(path, policy), `${size} bytes; ${policy.tooLarge ?? `files of this kind are read whole, and the limit is ${LIMITS.wholeFile} bytes`}`);
    }
    const buf = Buffer.allocUnsafe(size);
    let off = 0;
    while (off < size) {
      const { bytesRead } = await handle.read(buf, off, size - off, off);
      if (bytesRead === 0) break;
      off += bytesRead;
    }
    if (off !== size) throw new UnreadableFile(label(path, policy), `the file shrank while it was read (${off} of ${size} bytes)`);
    return buf;
  });
}

/** Reads a UTF-8 text file under the policy (JSON files: maxBytes defaults to `LIMITS.json`). */
export async function readText(path: string, policy: ReadPolicy = {}): Promise<string> {
  return (await readWhole(path, { maxBytes: LIMITS.json, ...policy })).toString('utf8');
}

/** `readText` for synchronous callers (option parsing): the same checks, the same messages. */
export function readTextSync(path: string, policy: ReadPolicy = {}): string {
  if (policy.within) throw new Error('readTextSync: `within` is only checked by the async readers');
  const maxBytes = Math.min(policy.maxBytes ?? LIMITS.json, LIMITS.wholeFile);
  let st: Stats;
  try {
    st = statSync(path);
  } catch (e) {
    throw unreadable(label(path, policy), e);
  }
  if (!st.isFile()) throw new UnreadableFile(label(path, policy), `${kind(st)}; only regular files are read`);
  let fd: number;
  try {
    fd = openSync(path, fsc.O_RDONLY | fsc.O_NONBLOCK | (fsc.O_NOCTTY ?? 0));
  } catch (e) {
    throw unreadable(label(path, policy), e);
  }
  try {
    const fst = fstatSync(fd);
    if (!fst.isFile()) throw new UnreadableFile(label(path, policy), `${kind(fst)}; only regular files are read`);
    if (fst.size > maxBytes) throw new UnreadableFile(label(path, policy), `${fst.size} bytes, more than the ${maxBytes}-byte limit for this kind of file`);
    const buf = Buffer.allocUnsafe(fst.size);
    let off = 0;
    while (off < fst.size) {
      const n = readSync(fd, buf, off, fst.size - off, off);
      if (n === 0) break;
      off += n;
    }
    return buf.subarray(0, off).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

// ============================================================================ outputs

export interface OutputPath {
  path: string;
  /** The option that named it (`-o`, `--perms-out`), for messages. */
  option: string;
}

async function statOrNull(path: string, follow = true): Promise<Stats | null> {
  try {
    return follow ? await fsp.stat(path) : await fsp.lstat(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

/** The nearest existing ancestor folder of `path` (outputs' missing folders are created). */
async function existingAncestor(path: string): Promise<{ dir: string; st: Stats | null }> {
  let dir = dirname(resolve(path));
  for (;;) {
    const st = await statOrNull(dir).catch(() => null);
    if (st) return { dir, st };
    const up = dirname(dir);
    if (up === dir) return { dir, st: null };
    dir = up;
  }
}

/**
 * Refuses, with an InputError naming the option and the file, any output that cannot be written
 * as the output policy says (see the module comment): call it before any work. `inputs` are the
 * files the command reads (missing ones are skipped: their readers report them).
 */
export async function checkOutputs(outputs: readonly OutputPath[], inputs: readonly string[]): Promise<void> {
  const inputStats: { path: string; st: Stats }[] = [];
  for (const p of inputs) {
    const st = await statOrNull(p).catch(() => null);
    if (st) inputStats.push({ path: p, st });
  }
  const seen: { o: OutputPath; real: string; st: Stats | null }[] = [];
  for (const o of outputs) {
    const name = `${o.option} ${o.path}`;
    let lst: Stats | null;
    let st: Stats | null;
    try {
      lst = await statOrNull(o.path, false);
      st = lst ? await statOrNull(o.path) : null;
    } catch (e) {
      throw new InputError(`${name}: cannot write (${errnoWhy(e)})`);
    }
    if (lst && !st) throw new InputError(`${name}: is a symbolic link to nothing; refusing to write through it`);
    if (st && st.isDirectory()) throw new InputError(`${name}: is an existing directory; give a file name`);
    if (st && !st.isFile()) throw new InputError(`${name}: is ${kind(st)}; outputs are only written as regular files`);
    if (st) {
      const same = inputStats.find((i) => i.st.dev === st!.dev && i.st.ino === st!.ino);
      if (same) throw new InputError(`${name}: is the same file as the input ${same.path}; refusing to overwrite an input`);
    }
    const real = st ? await fsp.realpath(o.path) : resolve(o.path);
    const twin = seen.find((s) => s.real === real || (st && s.st && s.st.dev === st.dev && s.st.ino === st.ino));
    if (twin) throw new InputError(`${name}: is the same file as ${twin.o.option} ${twin.o.path}; each output needs its own file`);
    seen.push({ o, real, st });
    const { dir, st: dst } = await existingAncestor(real);
    if (!dst || !dst.isDirectory()) throw new InputError(`${name}: cannot write (${dir} is not a directory)`);
    try {
      await fsp.access(dir, fsc.W_OK | fsc.X_OK);
    } catch {
      throw new InputError(`${name}: cannot write (the folder ${dir} is not writable)`);
    }
  }
}

/** `checkOutputs` for a command that writes into a folder: `dir` must be a folder (or creatable). */
export async function checkOutputDir(dir: string, option: string): Promise<void> {
  const st = await statOrNull(dir).catch(() => null);
  if (st && !st.isDirectory()) throw new InputError(`${option} ${dir}: is not a directory`);
  const target = st ? dir : (await existingAncestor(dir)).dir;
  const tst = await statOrNull(target).catch(() => null);
  if (!tst || !tst.isDirectory()) throw new InputError(`${option} ${dir}: cannot write (${target} is not a directory)`);
  try {
    await fsp.access(target, fsc.W_OK | fsc.X_OK);
  } catch {
    throw new InputError(`${option} ${dir}: cannot write (the folder ${target} is not writable)`);
  }
}
