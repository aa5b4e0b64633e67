// Builds a JavaScript or TypeScript module into a dohost component. Run through `dohost-js`,
// which installs the tools first:
//   dohost-js build SRC --class NAME -o OUT.wasm   a Durable Object class (world durable-object)
//   dohost-js build SRC --worker -o OUT.wasm       the default export as a worker (world worker)
// 1. esbuild bundles the SDK and the module into one ES module and strips TypeScript types;
//    `cloudflare:workers` and `@dohost/sdk` resolve to the SDK, the WIT imports stay external.
// 2. componentize-js turns the bundle into a component; the result is cached by the bundle's
//    hash, so an unchanged source is not componentized again.
import { build } from 'esbuild';
import { componentize } from '@bytecodealliance/componentize-js';
import { createHash } from 'node:crypto';
import { copyFile, mkdir, readFile, readdir, rename, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const sdk = dirname(fileURLToPath(import.meta.url));
const usage = 'usage: dohost-js build SRC (--class NAME | --worker) -o OUT.wasm [--wit DIR] [--cache DIR]';

function fail(message) {
  console.error(`dohost-js: ${message}`);
  process.exit(2);
}

let args;
try {
  args = parseArgs({
    allowPositionals: true,
    options: {
      class: { type: 'string' },
      worker: { type: 'boolean', default: false },
      out: { type: 'string', short: 'o' },
      wit: { type: 'string', default: resolve(sdk, '../../wit/v0.3.0') },
      cache: { type: 'string', default: resolve(sdk, '.cache') },
    },
  });
} catch (e) {
  fail(`${e.message}\n${usage}`);
}
const { values: opts, positionals } = args;
if (positionals[0] !== 'build' || positionals.length !== 2 || !opts.out) fail(usage);
if (!!opts.class === opts.worker) fail(`give exactly one of --class NAME and --worker\n${usage}`);
if (opts.class && !/^[A-Za-z_$][\w$]*$/.test(opts.class)) fail(`--class ${opts.class}: not a JavaScript class name`);

const source = resolve(positionals[1]);
try {
  await stat(source);
} catch {
  fail(`${positionals[1]}: no such file`);
}
const world = opts.worker ? 'worker' : 'durable-object';
const flavour = resolve(sdk, 'src', opts.worker ? 'cloudflare-worker.ts' : 'cloudflare-object.ts');

// The SDK's own modules come first, so its globals exist when the user's module runs.
const entry = opts.worker
  ? `import ${JSON.stringify(flavour)};
import { exportsForWorker } from ${JSON.stringify(resolve(sdk, 'src/worker.ts'))};
import * as user from ${JSON.stringify(source)};
if (!('default' in user)) throw new Error(${JSON.stringify(`${positionals[1]} has no default export to serve as the worker`)});
export const httpHandler = exportsForWorker(user.default).httpHandler;
`
  : `import ${JSON.stringify(flavour)};
import { exportsForObject } from ${JSON.stringify(resolve(sdk, 'src/object.ts'))};
import * as user from ${JSON.stringify(source)};
if (typeof user[${JSON.stringify(opts.class)}] !== 'function') throw new Error(${JSON.stringify(`${positionals[1]} does not export a class named ${opts.class}`)});
const e = exportsForObject(user[${JSON.stringify(opts.class)}]);
export const httpHandler = e.httpHandler;
export const websocketHandler = e.websocketHandler;
export const streamHandler = e.streamHandler;
export const alarmHandler = e.alarmHandler;
`;

// Node's and Cloudflare's other built-in modules do not exist here: say so at build time.
const builtins = {
  name: 'dohost-builtins',
  setup(b) {
    b.onResolve({ filter: /^(cloudflare:workers|@dohost\/sdk)$/ }, () => ({ path: flavour }));
    b.onResolve({ filter: /^(cloudflare|node):/ }, (a) => ({
      errors: [{ text: `"${a.path}" is not available on dohost (only cloudflare:workers is)` }],
    }));
  },
};

const t0 = performance.now();
let bundle;
try {
  const result = await build({
    stdin: { contents: entry, resolveDir: sdk, sourcefile: 'dohost-entry.js', loader: 'js' },
    bundle: true,
    write: false,
    format: 'esm',
    platform: 'neutral',
    target: 'es2022',
    external: ['dohost:*', 'wasi:*'],
    plugins: [builtins],
    logLevel: 'silent',
  });
  bundle = result.outputFiles[0].text;
} catch (e) {
  fail(`bundling ${positionals[1]} failed:\n${(e.errors ?? [e]).map((x) => `  ${x.text ?? x.message}${x.location ? ` (${x.location.file}:${x.location.line})` : ''}`).join('\n')}`);
}

// The cache key: everything the component depends on.
const hash = createHash('sha256');
hash.update(`${world}\n${bundle}\n`);
hash.update(await readFile(resolve(sdk, 'package-lock.json')));
for (const f of (await readdir(opts.wit, { recursive: true })).sort()) {
  if (f.endsWith('.wit')) hash.update(f).update(await readFile(join(opts.wit, f)));
}
const key = hash.digest('hex').slice(0, 32);
const cached = join(opts.cache, `${key}.wasm`);
const out = resolve(opts.out);
await mkdir(dirname(out), { recursive: true });

try {
  await copyFile(cached, out);
  console.log(`dohost-js: ${positionals[1]} → ${opts.out} (unchanged, from the cache)`);
  process.exit(0);
} catch {}

const t1 = performance.now();
await mkdir(opts.cache, { recursive: true });
const bundlePath = join(opts.cache, `${key}.js`);
await writeFile(bundlePath, bundle);
let component;
try {
  ({ component } = await componentize({ sourcePath: bundlePath, witPath: opts.wit, worldName: world }));
} catch (e) {
  fail(`componentizing ${positionals[1]} failed: ${e.message ?? e}`);
}
// Written then renamed, so a build cut short leaves no truncated component in the cache.
await writeFile(`${cached}.tmp`, component);
await rename(`${cached}.tmp`, cached);
await copyFile(cached, out);
const t2 = performance.now();
console.log(
  `dohost-js: ${positionals[1]} → ${opts.out}: ${(component.length / 1e6).toFixed(1)} MB (bundle ${(t1 - t0).toFixed(0)} ms, componentize ${((t2 - t1) / 1000).toFixed(1)} s)`,
);
