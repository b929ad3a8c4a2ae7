/**
 * Builds the live demo as a static site: `index.html`, `style.css` and `app.js` (the browser entry
 * with src/raft, src/sim and src/kv bundled in by `deno bundle` as one classic script, so the page
 * also opens from disk). No CDN, no network at run time.
 *
 * ```sh
 * deno run -A src/web/build.ts [--out dist/web] [--minify]
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";

/** Where the page's sources live. */
export const WEB_DIR: URL = new URL("../../web/", import.meta.url);
/** The browser entry. */
export const ENTRY: URL = new URL("./app.ts", import.meta.url);
/** The default output folder, relative to the working directory. */
export const OUT_DIR_DEFAULT = "dist/web";
/** The files of a built site. */
export const SITE_FILES: readonly string[] = ["index.html", "style.css", "app.js"];

/** Options for {@linkcode buildSite}. */
export interface BuildOptions {
  /** Minify app.js. Default false (a reader can follow the bundled code). */
  readonly minify?: boolean;
}

/** Bundles the browser entry into one script; returns its text. */
export async function bundleApp(options: BuildOptions = {}): Promise<string> {
  const tmp = await Deno.makeTempDir({ prefix: "raftmeta-web-" });
  try {
    const out = `${tmp}/app.js`;
    const args = ["bundle", "--platform", "browser", "--format", "iife", "-o", out];
    if (options.minify) args.push("--minify");
    args.push(ENTRY.pathname);
    const { code, stderr } = await new Deno.Command(Deno.execPath(), {
      args,
      stdout: "null",
      stderr: "piped",
    }).output();
    if (code !== 0) {
      throw new Error(`deno bundle failed (exit ${code}): ${new TextDecoder().decode(stderr)}`);
    }
    return await Deno.readTextFile(out);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
}

/** The site's files in memory: name → content. */
export async function siteFiles(options: BuildOptions = {}): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  files.set("index.html", await Deno.readTextFile(new URL("index.html", WEB_DIR)));
  files.set("style.css", await Deno.readTextFile(new URL("style.css", WEB_DIR)));
  files.set("app.js", await bundleApp(options));
  return files;
}

/** Writes the static site to `outDir` (created if missing); returns the paths written. */
export async function buildSite(outDir: string, options: BuildOptions = {}): Promise<string[]> {
  const files = await siteFiles(options);
  await Deno.mkdir(outDir, { recursive: true });
  const written: string[] = [];
  for (const [name, text] of files) {
    const path = `${outDir.replace(/\/$/, "")}/${name}`;
    await Deno.writeTextFile(path, text);
    written.push(path);
  }
  return written;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      out: { type: "string", default: OUT_DIR_DEFAULT },
      minify: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log("Usage: deno task web:build [--out DIR (default dist/web)] [--minify]");
    Deno.exit(0);
  }
  const written = await buildSite(values.out, { minify: values.minify });
  for (const p of written) console.log(`wrote ${p} (${(await Deno.stat(p)).size} bytes)`);
  const index = await Deno.realPath(`${values.out}/index.html`);
  console.log(`Open file://${index} or serve ${values.out} from any static host.`);
}
