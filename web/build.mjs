// Bundles the pages into five files (index.html, conversation.html, app.js,
// chat.js, app.css) and assembles the Socket.IO Admin UI in admin/, in the
// directory named by TALLY_WEB_OUT (default: web/dist). build.rs runs this and
// embeds the result in the server binary.
import { build } from 'esbuild';
import { copyFile, cp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
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

// The official Socket.IO Admin UI, served at /admin/: its built files from
// the npm package, with the fonts and icons its index.html would fetch from
// public CDNs taken from their npm packages instead, and a small script
// that points the UI at the server it came from.
const adminOut = join(out, 'admin');
const adminUi = join(here, 'node_modules/@socket.io/admin-ui/ui/dist');
await rm(adminOut, { recursive: true, force: true });
await cp(adminUi, adminOut, {
  recursive: true,
  // Source maps are 3 MB and only for the UI's own developers.
  filter: (path) => !path.endsWith('.map'),
});
const cdnFonts = '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto:100,300,400,500,700,900">';
const cdnIcons = '<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/@mdi/font@latest/css/materialdesignicons.min.css">';
let html = await readFile(join(adminUi, 'index.html'), 'utf8');
for (const link of [cdnFonts, cdnIcons]) {
  if (!html.includes(link)) {
    throw new Error(`the Admin UI's index.html no longer has ${link}; update web/build.mjs`);
  }
}
html = html
  .replace(cdnFonts, '<link rel="stylesheet" href="fonts/roboto.css">')
  .replace(cdnIcons, '<link rel="stylesheet" href="mdi/css/materialdesignicons.min.css">')
  // Before the UI's own scripts, which read localStorage when they start.
  .replace('<script ', '<script src="preset.js"></script><script ');
await writeFile(join(adminOut, 'index.html'), html);
await copyFile(join(here, 'src/admin-preset.js'), join(adminOut, 'preset.js'));

// Roboto in the weights the UI asks for, Latin only (woff2, which every
// browser that runs the UI reads).
const roboto = join(here, 'node_modules/@fontsource/roboto/files');
await mkdir(join(adminOut, 'fonts'), { recursive: true });
let robotoCss = '';
for (const weight of [100, 300, 400, 500, 700, 900]) {
  const file = `roboto-latin-${weight}-normal.woff2`;
  await copyFile(join(roboto, file), join(adminOut, 'fonts', file));
  robotoCss += `@font-face{font-family:Roboto;font-style:normal;font-display:swap;font-weight:${weight};src:url(${file}) format("woff2")}\n`;
}
await writeFile(join(adminOut, 'fonts/roboto.css'), robotoCss);

const mdi = join(here, 'node_modules/@mdi/font');
await mkdir(join(adminOut, 'mdi/css'), { recursive: true });
await mkdir(join(adminOut, 'mdi/fonts'), { recursive: true });
await copyFile(join(mdi, 'css/materialdesignicons.min.css'), join(adminOut, 'mdi/css/materialdesignicons.min.css'));
for (const font of ['materialdesignicons-webfont.woff2']) {
  await copyFile(join(mdi, 'fonts', font), join(adminOut, 'mdi/fonts', font));
}
