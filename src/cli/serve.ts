/**
 * `rebasin serve`: serves the browser page (dist/web, built by scripts/build-web.mjs from web/)
 * over http on localhost, so its Worker and wasm kernels load (they do not from file://). Runs
 * until interrupted. The page does all the work in the browser; this server only sends files.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { dirname, extname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InputError } from '../errors.js';
import { UsageError, type CommandSpec, type Parsed } from './args.js';

export const serveSpec: CommandSpec = {
  name: 'serve',
  summary: 'Serve the browser page (align checkpoints in the browser, wasm kernels) on http://127.0.0.1:PORT/.',
  usage: 'rebasin serve [--port N] [--host 127.0.0.1]',
  options: {
    port: { type: 'int', help: 'port to listen on (0: any free port)', default: 8080 },
    host: { type: 'string', help: 'address to listen on (0.0.0.0 exposes the page to the network)', default: '127.0.0.1' },
  },
};

const MIME: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.map': 'application/json',
  '.wasm': 'application/wasm', '.json': 'application/json', '.bin': 'application/octet-stream', '.png': 'image/png', '.svg': 'image/svg+xml',
};

/** The built page: dist/web next to dist/src (this file runs as dist/src/cli/serve.js). */
export function webRoot(): string {
  return join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'web');
}

export async function serve(args: Parsed): Promise<number> {
  const port = args.options.port as number;
  if (!(port >= 0 && port <= 65535)) throw new UsageError(`serve: --port must be in [0, 65535], got ${port}`);
  const root = webRoot();
  if (!existsSync(join(root, 'index.html'))) throw new InputError(`serve: the page is not built (${root} has no index.html); run npm run build`);
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const file = normalize(join(root, path === '/' ? 'index.html' : path));
    if (!file.startsWith(root + sep) || !existsSync(file) || !statSync(file).isFile() || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found\n');
      return;
    }
    const body = readFileSync(file);
    res.writeHead(200, { 'content-type': MIME[extname(file)] ?? 'application/octet-stream', 'content-length': body.length, 'cache-control': 'no-cache' });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(e.code === 'EADDRINUSE' ? new InputError(`serve: port ${port} is in use; pick another with --port`) : e));
    server.listen(port, args.options.host as string, resolve);
  });
  const addr = server.address();
  const bound = typeof addr === 'object' && addr ? addr.port : port;
  process.stdout.write(`rebasin serve: http://${args.options.host as string}:${bound}/ (Ctrl-C to stop)\n`);
  await new Promise<void>((resolve) => {
    const stop = () => server.close(() => resolve());
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  return 0;
}
