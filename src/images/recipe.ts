import { createHash } from "node:crypto";

/**
 * What the default runtime image holds. The image tag is derived from this list, so changing
 * it makes `petri images build` produce a new image instead of silently reusing an old one.
 */
export const IMAGE_PACKAGES = [
  "python3", "python3-psycopg2",
  "nodejs", "node-pg",
  "golang-go",
  "bash", "coreutils", "ca-certificates", "socat", "procps",
] as const;

export const RECIPE_VERSION = 1;

export const DEFAULT_IMAGE_TAG = createHash("sha256")
  .update(JSON.stringify({ v: RECIPE_VERSION, p: IMAGE_PACKAGES }))
  .digest("hex")
  .slice(0, 12);

export const DEFAULT_IMAGE = `petri/runtime:${DEFAULT_IMAGE_TAG}`;
