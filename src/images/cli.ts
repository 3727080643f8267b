import Docker from "dockerode";
import type { Config } from "../config.js";
import { buildImage } from "./build.js";
import { ImageCatalog } from "./images.js";

/**
 * `petri images build [NAME…] [--all] [--force]` and `petri images list`. Without names, build
 * the images the configuration uses as language defaults (what a fresh server needs); `--all`
 * builds every declared image. Builds run one after another: each is mostly download and dpkg.
 */
export async function imagesBuildCli(cfg: Readonly<Config>, sub: string, args: string[]): Promise<number> {
  const catalog = new ImageCatalog(cfg.imageRecipes, cfg.imageDir, cfg.images);
  if (sub === "list") {
    for (const i of catalog.list()) {
      const size = i.size_bytes ? `${Math.round(i.size_bytes / 1e6)} MB` : "-";
      const langs = Object.entries(i.languages).map(([k, v]) => `${k} ${v}`).join(", ") || "-";
      process.stdout.write(`${i.name}\t${i.built ? "built" : "not built"}\t${size}\t${i.ref}\t${langs}\n`);
    }
    return 0;
  }
  const names = args.filter((a) => !a.startsWith("--"));
  const unknown = names.filter((n) => !catalog.recipe(n));
  if (unknown.length) {
    process.stderr.write(`petri: no image ${unknown.map((n) => `"${n}"`).join(", ")} to build; declared: ${Object.keys(cfg.imageRecipes).join(", ")}\n`);
    return 2;
  }
  const wanted = names.length ? names
    : args.includes("--all") ? Object.keys(cfg.imageRecipes)
    : [...new Set(Object.values(cfg.images))].filter((n) => catalog.recipe(n));
  const docker = new Docker({ socketPath: cfg.dockerSocket });
  const summary: string[] = [];
  for (const name of wanted) {
    const r = await buildImage(catalog.recipe(name)!, {
      imageDir: cfg.imageDir, docker, force: args.includes("--force"),
      log: (l) => process.stdout.write(l + "\n"),
    });
    summary.push(`${name}: ${r.ref}, ${Math.round(r.manifest.size_bytes / 1e6)} MB, ${r.built ? `built in ${r.seconds}s` : "already built"}`);
  }
  process.stdout.write(summary.map((s) => `image ${s}\n`).join(""));
  return 0;
}
