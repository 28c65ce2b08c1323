/**
 * Atomic file output: write everything to a temp file in the destination's directory, fsync it,
 * then rename over the destination. Readers see the old file or the complete new one, never a
 * prefix, and a failure at any point (serialisation error, full disk) removes the temp file so
 * no partial output remains. The temp file is in the same directory because rename is only
 * atomic within one filesystem. (A SIGKILL mid-write can still leave a `.tmp-*` file behind;
 * nothing in-process can prevent that.)
 */
import { mkdirSync, openSync, writeSync, fsyncSync, fchmodSync, closeSync, renameSync, rmSync, lstatSync, realpathSync, statSync, promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { InputError } from '../errors.js';

/** Creates a directory and its parents if missing. */
export async function ensureDir(dir: string): Promise<void> {
  await fsp.mkdir(dir, { recursive: true });
}

export function ensureDirSync(dir: string): void {
  mkdirSync(dir, { recursive: true });
}

/** Temp names start with `.tmp` (git-ignored) and carry pid + random bits so concurrent writers never collide. */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.tmp-${basename(path)}-${process.pid}-${randomBytes(6).toString('hex')}`);
}

/** fs write calls take an int32 length; larger buffers go in pieces. */
const MAX_WRITE = 1 << 30;
/** Small writes are coalesced so a file of many small tensors is not thousands of syscalls. */
const BUFFER_SIZE = 1 << 20;

/** What `withAtomicFile` hands its callback. */
export interface AtomicWriter {
  /** The temp file's handle, for callers that need positioned writes. Do not close it. */
  readonly handle: FileHandle;
  readonly tempPath: string;
  /** Bytes accepted so far via write(). */
  readonly bytesWritten: number;
  /** Appends bytes (strings are UTF-8). Resolves once the bytes are buffered or written. */
  write(chunk: Uint8Array | string): Promise<void>;
}

class BufferedWriter implements AtomicWriter {
  bytesWritten = 0;
  closed = false;
  private buf = new Uint8Array(BUFFER_SIZE);
  private used = 0;
  private position = 0;

  constructor(readonly handle: FileHandle, readonly tempPath: string, private readonly destination: string) {}

  async write(chunk: Uint8Array | string): Promise<void> {
    if (this.closed) throw new Error(`write after the atomic file ${this.tempPath} was finished`);
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    this.bytesWritten += bytes.length;
    if (bytes.length >= BUFFER_SIZE / 2) {
      await this.flush();
      await this.writeFully(bytes);
      return;
    }
    if (this.used + bytes.length > BUFFER_SIZE) await this.flush();
    this.buf.set(bytes, this.used);
    this.used += bytes.length;
  }

  async flush(): Promise<void> {
    if (this.used === 0) return;
    const n = this.used;
    this.used = 0;
    await this.writeFully(this.buf.subarray(0, n));
  }

  private async writeFully(bytes: Uint8Array): Promise<void> {
    let off = 0;
    while (off < bytes.length) {
      const len = Math.min(MAX_WRITE, bytes.length - off);
      let bytesWritten: number;
      try {
        ({ bytesWritten } = await this.handle.write(bytes, off, len, this.position));
      } catch (e) {
        throw cannotWrite(this.destination, e);
      }
      off += bytesWritten;
      this.position += bytesWritten;
    }
  }
}

/** Best effort: make the rename itself durable. Not possible everywhere (e.g. Windows), hence the catch. */
async function syncDir(dir: string): Promise<void> {
  let h: FileHandle | undefined;
  try {
    h = await fsp.open(dir, 'r');
    await h.sync();
  } catch {
    // ignore: durability of the directory entry is an optimisation, the data file is already synced
  } finally {
    await h?.close().catch(() => undefined);
  }
}

// ---------------------------------------------------------------------------------------------
// Temp files alive in this process. The set is process-wide by nature (signals are): while it is
// non-empty, SIGINT/SIGTERM/SIGHUP remove every temp file and then end the process by the same
// signal. The handlers are installed only while a temp file exists, so a long computation before
// any output keeps the default (immediate) Ctrl-C.

const live = new Set<string>();
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

function onSignal(signal: NodeJS.Signals): void {
  removeTempFiles();
  // Default action now: the process ends by the signal, as it would have without us.
  process.kill(process.pid, signal);
}

function track(tmp: string): void {
  if (live.size === 0) for (const s of SIGNALS) process.on(s, onSignal);
  live.add(tmp);
}

function untrack(tmp: string): void {
  if (!live.delete(tmp)) return;
  if (live.size === 0) for (const s of SIGNALS) process.off(s, onSignal);
}

/** Removes every temp file this process has open (for exits that skip the usual cleanup, e.g. EPIPE). */
export function removeTempFiles(): void {
  for (const p of [...live]) {
    try {
      rmSync(p, { force: true });
    } catch {
      // best effort: the process is ending
    }
    untrack(p);
  }
}

/** Temp files of this process not yet renamed or removed (for tests). */
export function liveTempFiles(): string[] {
  return [...live];
}

// ---------------------------------------------------------------------------------------------
// The destination

interface Target {
  /** Where the data goes: the path, or the file a symbolic link points to (the link is kept). */
  path: string;
  /** The existing file's permission bits, kept by the new content. */
  mode?: number;
}

function cannotWrite(path: string, e: unknown): InputError {
  const code = (e as NodeJS.ErrnoException).code;
  const why = code === 'ENOENT' ? 'ENOENT: the folder does not exist' : code === 'EACCES' || code === 'EPERM' ? `${code}: permission denied` : code === 'EROFS' ? 'EROFS: read-only file system' : code === 'ENOSPC' ? 'ENOSPC: no space left on the device' : code ?? (e as Error).message;
  return new InputError(`${path}: cannot write (${why})`);
}

/**
 * The output policy for one destination: an existing directory, device, FIFO or socket (or a link
 * to one) is refused; a link to a regular file is written through (the new file replaces its
 * target); an existing file's mode is kept.
 */
function targetOf(path: string): Target {
  let lst;
  try {
    lst = lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { path };
    throw cannotWrite(path, e);
  }
  let real = path;
  let st = lst;
  if (lst.isSymbolicLink()) {
    try {
      real = realpathSync(path);
      st = statSync(real);
    } catch {
      throw new InputError(`${path}: is a symbolic link to nothing; refusing to write through it`);
    }
  }
  if (st.isDirectory()) throw new InputError(`${path}: is an existing directory; give a file name`);
  if (!st.isFile()) throw new InputError(`${path}: is not a regular file (a device, FIFO or socket); outputs are only written as regular files`);
  // Permission bits only: set-id bits are not carried over to new content.
  return { path: real, mode: st.mode & 0o777 };
}

/**
 * Several outputs committed together: each is written to its own temp file first (staged), and
 * only when every one is complete are they renamed into place, so a failure leaves none of them.
 * Use through `withOutputBatch`.
 */
export class OutputBatch {
  private staged: { tmp: string; path: string }[] = [];
  private done = false;

  /** Called by withAtomicFile with a complete, synced temp file. */
  add(tmp: string, path: string): void {
    if (this.done) throw new Error('OutputBatch: add after commit or abort');
    this.staged.push({ tmp, path });
  }

  async commit(): Promise<void> {
    if (this.done) throw new Error('OutputBatch: committed twice');
    this.done = true;
    const dirs = new Set<string>();
    try {
      for (const s of this.staged) {
        await fsp.rename(s.tmp, s.path);
        untrack(s.tmp);
        dirs.add(dirname(s.path));
      }
    } finally {
      await this.removeStaged();
    }
    for (const d of dirs) await syncDir(d);
  }

  /** Removes every staged temp file (no-op after a commit). */
  async abort(): Promise<void> {
    this.done = true;
    await this.removeStaged();
  }

  private async removeStaged(): Promise<void> {
    for (const s of this.staged) {
      if (!live.has(s.tmp)) continue;
      await fsp.rm(s.tmp, { force: true }).catch(() => undefined);
      untrack(s.tmp);
    }
  }
}

/** Runs `fn` with a batch and commits it when `fn` resolves; on any error nothing is written. */
export async function withOutputBatch<T>(fn: (batch: OutputBatch) => Promise<T>): Promise<T> {
  const batch = new OutputBatch();
  try {
    const r = await fn(batch);
    await batch.commit();
    return r;
  } finally {
    await batch.abort();
  }
}

/**
 * Streams output to `path` atomically: `fn` writes piece by piece through the writer; when it
 * resolves, the data is flushed, fsynced and renamed into place (or, with `batch`, staged for the
 * batch's commit). If `fn` (or anything after it) throws, or the process gets SIGINT/SIGTERM/
 * SIGHUP, the temp file is removed and the destination is left untouched (an existing file keeps
 * its old content). See `targetOf` for what may be replaced.
 */
export async function withAtomicFile<T>(
  path: string,
  fn: (out: AtomicWriter) => Promise<T>,
  options: { mode?: number; batch?: OutputBatch } = {},
): Promise<T> {
  const target = targetOf(path);
  const tmp = tempPathFor(target.path);
  let handle: FileHandle;
  try {
    handle = await fsp.open(tmp, 'wx', options.mode ?? 0o666);
  } catch (e) {
    throw cannotWrite(path, e);
  }
  track(tmp);
  const writer = new BufferedWriter(handle, tmp, path);
  let closed = false;
  let handedOver = false;
  try {
    if (target.mode !== undefined && options.mode === undefined) await handle.chmod(target.mode);
    const result = await fn(writer);
    await writer.flush();
    writer.closed = true;
    await handle.sync();
    closed = true;
    await handle.close();
    if (options.batch) {
      options.batch.add(tmp, target.path);
    } else {
      await fsp.rename(tmp, target.path);
      untrack(tmp);
      await syncDir(dirname(target.path));
    }
    handedOver = true;
    return result;
  } finally {
    writer.closed = true;
    if (!handedOver) {
      if (!closed) await handle.close().catch(() => undefined);
      await fsp.rm(tmp, { force: true }).catch(() => undefined);
      untrack(tmp);
    }
  }
}

function isErrnoError(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | null)?.code;
  return typeof code === 'string' && /^E[A-Z]+$/.test(code);
}

/** Writes a whole buffer or string (UTF-8) to `path` atomically. */
export async function writeFileAtomic(path: string, data: Uint8Array | string, options: { mode?: number; batch?: OutputBatch } = {}): Promise<void> {
  await withAtomicFile(path, (out) => out.write(data), options);
}

/** Synchronous variant of writeFileAtomic, for CLI exit paths where awaiting is awkward. */
export function writeFileAtomicSync(path: string, data: Uint8Array | string, options: { mode?: number } = {}): void {
  const target = targetOf(path);
  const tmp = tempPathFor(target.path);
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  let fd: number;
  try {
    fd = openSync(tmp, 'wx', options.mode ?? 0o666);
  } catch (e) {
    throw cannotWrite(path, e);
  }
  let closed = false;
  let renamed = false;
  try {
    if (target.mode !== undefined && options.mode === undefined) fchmodSync(fd, target.mode);
    let off = 0;
    while (off < bytes.length) off += writeSync(fd, bytes, off, Math.min(MAX_WRITE, bytes.length - off));
    fsyncSync(fd);
    closed = true;
    closeSync(fd);
    renameSync(tmp, target.path);
    renamed = true;
  } catch (e) {
    throw isErrnoError(e) ? cannotWrite(path, e) : e;
  } finally {
    if (!renamed) {
      if (!closed) {
        try {
          closeSync(fd);
        } catch {
          // already failing; the original error is what matters
        }
      }
      rmSync(tmp, { force: true });
    }
  }
}
