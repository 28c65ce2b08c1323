/**
 * Atomic file output: write everything to a temp file in the destination's directory, fsync it,
 * then rename over the destination. Readers see the old file or the complete new one, never a
 * prefix, and a failure at any point (serialisation error, full disk) removes the temp file so
 * no partial output remains. The temp file is in the same directory because rename is only
 * atomic within one filesystem. (A SIGKILL mid-write can still leave a `.tmp-*` file behind;
 * nothing in-process can prevent that.)
 */
import { mkdirSync, openSync, writeSync, fsyncSync, closeSync, renameSync, rmSync, promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';

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

  constructor(readonly handle: FileHandle, readonly tempPath: string) {}

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
      const { bytesWritten } = await this.handle.write(bytes, off, len, this.position);
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

/**
 * Streams output to `path` atomically: `fn` writes piece by piece through the writer; when it
 * resolves, the data is flushed, fsynced and renamed into place. If `fn` (or anything after it)
 * throws, the temp file is removed and the destination is left untouched (an existing file
 * keeps its old content).
 */
export async function withAtomicFile<T>(
  path: string,
  fn: (out: AtomicWriter) => Promise<T>,
  options: { mode?: number } = {},
): Promise<T> {
  const tmp = tempPathFor(path);
  const handle = await fsp.open(tmp, 'wx', options.mode ?? 0o666);
  const writer = new BufferedWriter(handle, tmp);
  let closed = false;
  let renamed = false;
  try {
    const result = await fn(writer);
    await writer.flush();
    writer.closed = true;
    await handle.sync();
    closed = true;
    await handle.close();
    await fsp.rename(tmp, path);
    renamed = true;
    await syncDir(dirname(path));
    return result;
  } finally {
    writer.closed = true;
    if (!renamed) {
      if (!closed) await handle.close().catch(() => undefined);
      await fsp.rm(tmp, { force: true }).catch(() => undefined);
    }
  }
}

/** Writes a whole buffer or string (UTF-8) to `path` atomically. */
export async function writeFileAtomic(path: string, data: Uint8Array | string, options: { mode?: number } = {}): Promise<void> {
  await withAtomicFile(path, (out) => out.write(data), options);
}

/** Synchronous variant of writeFileAtomic, for CLI exit paths where awaiting is awkward. */
export function writeFileAtomicSync(path: string, data: Uint8Array | string, options: { mode?: number } = {}): void {
  const tmp = tempPathFor(path);
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const fd = openSync(tmp, 'wx', options.mode ?? 0o666);
  let closed = false;
  let renamed = false;
  try {
    let off = 0;
    while (off < bytes.length) off += writeSync(fd, bytes, off, Math.min(MAX_WRITE, bytes.length - off));
    fsyncSync(fd);
    closed = true;
    closeSync(fd);
    renameSync(tmp, path);
    renamed = true;
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
