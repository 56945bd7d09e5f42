// Bundles the pages into five files (index.html, conversation.html, app.js,
// chat.js, app.css) in the
// directory named by TALLY_WEB_OUT (default: web/dist). build.rs runs this and
// embeds the result in the server binary.
import { build } from 'esbuild';
import { copyFile, mkdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
// An empty TALLY_WEB_OUT counts as unset: resolved as a path it would be the
// current directory, and the bundle would land among the sources.
const out = resolve(process.env.TALLY_WEB_OUT || join(here, 'dist'));
await mkdir(out, { recursive: true });

const common = { bundle: true, minify: true, logLevel: 'warning', legalComments: 'none' };
await build({
  ...common,
  entryPoints: [join(here, 'src/main.js')],
  outfile: join(out, 'app.js'),
  format: 'iife',
  target: 'es2020',
});
await build({
  ...common,
  entryPoints: [join(here, 'src/chat.js')],
  outfile: join(out, 'chat.js'),
  format: 'iife',
  target: 'es2020',
});
await build({ ...common, entryPoints: [join(here, 'src/style.css')], outfile: join(out, 'app.css') });
await copyFile(join(here, 'index.html'), join(out, 'index.html'));
await copyFile(join(here, 'conversation.html'), join(out, 'conversation.html'));
