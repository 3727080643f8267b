import fs from "node:fs";
import { PetriError } from "../errors.js";
import { allPackages, recipeRef, type ImageRecipe } from "./catalog.js";
import { manifestFileFor, rootfsDirFor } from "./build.js";
import { readManifest, type ImageManifest } from "./manifest.js";

/** What `GET /v1/images` says about one image. */
export interface ImageInfo {
  name: string;
  ref: string;
  description: string;
  /** Built on this server (root filesystem and Docker image); sandboxes can only use built images. */
  built: boolean;
  custom: boolean;
  /** An image the operator named by Docker reference: Petri did not build it and cannot say what it holds. */
  external: boolean;
  /** Languages this server uses it for when a sandbox names no image. */
  default_for: string[];
  suite: string | null;
  debian_packages_requested: string[];
  size_bytes: number | null;
  build_seconds: number | null;
  built_at: string | null;
  languages: Record<string, string>;
  tools: Record<string, string>;
  node_build: ImageManifest["node_build"];
  python_packages: Record<string, string>;
  node_packages: Record<string, string>;
}

/**
 * The images a server offers: the built-in and operator-declared recipes, plus any Docker
 * reference the operator configured as a language default (external). What an image contains
 * comes from the manifest written when it was built; an image built while the server runs is
 * picked up on the next lookup.
 */
export class ImageCatalog {
  private readonly cache = new Map<string, { mtimeMs: number; manifest: ImageManifest | null }>();

  constructor(
    private readonly recipes: Readonly<Record<string, ImageRecipe>>,
    private readonly imageDir: string,
    /** Language → image name (a recipe name or an external Docker reference). */
    private readonly defaults: Readonly<Record<string, string>>,
  ) {}

  /** Names a sandbox may ask for. */
  names(): string[] {
    return [...new Set([...Object.keys(this.recipes), ...Object.values(this.defaults)])];
  }

  recipe(name: string): ImageRecipe | undefined {
    return Object.hasOwn(this.recipes, name) ? this.recipes[name] : undefined;
  }

  has(name: string): boolean {
    return this.recipe(name) !== undefined || Object.values(this.defaults).includes(name);
  }

  /** Docker reference of an image name (an external one is its own reference). */
  ref(name: string): string {
    const r = this.recipe(name);
    return r ? recipeRef(r) : name;
  }

  /** References of the images Petri builds (all have python3, which the pre-start launcher needs). */
  builtRefs(): string[] {
    return Object.values(this.recipes).map(recipeRef);
  }

  defaultFor(language: string): string {
    return this.defaults[language] ?? this.defaults.python ?? Object.keys(this.recipes)[0];
  }

  manifest(name: string): ImageManifest | null {
    const r = this.recipe(name);
    if (!r) return null;
    const file = manifestFileFor(this.imageDir, recipeRef(r));
    let mtimeMs: number;
    try {
      mtimeMs = fs.statSync(file).mtimeMs;
    } catch {
      return null;
    }
    const hit = this.cache.get(name);
    if (hit && hit.mtimeMs === mtimeMs) return hit.manifest;
    const manifest = readManifest(file);
    if (manifest && !fs.existsSync(rootfsDirFor(this.imageDir, manifest.ref))) return null;
    this.cache.set(name, { mtimeMs, manifest });
    return manifest;
  }

  /**
   * The image a new sandbox gets: the one it asks for, else its language's default. Refuses an
   * unknown name (400) and an image whose manifest says it lacks the sandbox's language (400).
   */
  forSandbox(language: string, requested?: string): string {
    const name = requested ?? this.defaultFor(language);
    if (!this.has(name)) {
      throw new PetriError("UNKNOWN_IMAGE", `unknown image "${name}"; this server offers: ${this.names().join(", ")} (GET /v1/images)`);
    }
    if (!this.recipe(name)) return name;
    const m = this.manifest(name);
    // No manifest here: a server that only reaches the engine (e.g. in Compose, without the image
    // directory) cannot tell; the run itself says IMAGE_MISSING if the engine lacks the image.
    if (!m) return name;
    if (!Object.hasOwn(m.languages, language)) {
      throw new PetriError("IMAGE_LACKS_LANGUAGE", `image "${name}" has no ${language} (it has ${Object.keys(m.languages).join(", ")})`);
    }
    return name;
  }

  info(name: string): ImageInfo {
    const r = this.recipe(name);
    const m = this.manifest(name);
    return {
      name,
      ref: this.ref(name),
      description: r?.description ?? "external image named by the operator; Petri did not build it",
      built: r ? m !== null : true,
      custom: r?.custom ?? false,
      external: !r,
      default_for: Object.entries(this.defaults).filter(([, v]) => v === name).map(([k]) => k),
      suite: r?.suite ?? null,
      debian_packages_requested: r ? allPackages(r) : [],
      size_bytes: m?.size_bytes ?? null,
      build_seconds: m?.build_seconds ?? null,
      built_at: m?.built_at ?? null,
      languages: m?.languages ?? {},
      tools: m?.tools ?? {},
      node_build: m?.node_build ?? null,
      python_packages: m?.python_packages ?? {},
      node_packages: m?.node_packages ?? {},
    };
  }

  list(): ImageInfo[] {
    return this.names().map((n) => this.info(n));
  }
}
