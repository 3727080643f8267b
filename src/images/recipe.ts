import { BUILTIN_IMAGES, DEFAULT_IMAGE_NAME, allPackages, recipeRef } from "./catalog.js";

/**
 * The default image's Docker reference, for code that needs "the" image without a catalog
 * (runtime probes, tests, the benchmark). Images themselves are declared in catalog.ts.
 */
export const DEFAULT_IMAGE = recipeRef(BUILTIN_IMAGES[DEFAULT_IMAGE_NAME]);

export const IMAGE_PACKAGES: readonly string[] = allPackages(BUILTIN_IMAGES[DEFAULT_IMAGE_NAME]);
