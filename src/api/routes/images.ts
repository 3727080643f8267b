import type { FastifyInstance } from "fastify";
import { Type, type Static } from "@sinclair/typebox";
import { PetriError } from "../../errors.js";
import type { ImageCatalog } from "../../images/images.js";
import { errorResponses } from "../schemas.js";

const Versions = Type.Record(Type.String(), Type.String());
export const ImageSchema = Type.Object({
  name: Type.String({ description: "what a sandbox asks for (`image` on create)" }),
  ref: Type.String({ description: "Docker reference; the tag is a hash of the recipe" }),
  description: Type.String(),
  built: Type.Boolean({ description: "usable on this server; otherwise `petri images build NAME`" }),
  custom: Type.Boolean({ description: "declared by the operator (PETRI_IMAGES_FILE)" }),
  external: Type.Boolean({ description: "a Docker reference Petri did not build: contents unknown" }),
  default_for: Type.Array(Type.String(), { description: "languages that get this image when a sandbox names none" }),
  suite: Type.Union([Type.String(), Type.Null()], { description: "Debian suite" }),
  debian_packages_requested: Type.Array(Type.String()),
  size_bytes: Type.Union([Type.Number(), Type.Null()]),
  build_seconds: Type.Union([Type.Number(), Type.Null()]),
  built_at: Type.Union([Type.String(), Type.Null()]),
  languages: Type.Record(Type.String(), Type.String(), { description: "language → toolchain version, read from the built image" }),
  tools: Versions,
  node_build: Type.Union([Type.Object({ package: Type.String(), version: Type.String(), integrity: Type.String() }), Type.Null()]),
  python_packages: Type.Record(Type.String(), Type.String(), { description: "importable without installing: distribution → version" }),
  node_packages: Type.Record(Type.String(), Type.String(), { description: "resolvable without installing: module → version" }),
});

const FullImageSchema = Type.Intersect([ImageSchema, Type.Object({
  python_modules: Type.Array(Type.String()),
  python_stdlib: Type.Array(Type.String()),
  node_builtins: Type.Array(Type.String()),
  debian_packages: Versions,
})]);

const NameParams = Type.Object({ name: Type.String({ maxLength: 256 }) });

/** What each image holds, so a client (or the agent it drives) knows what it can import. */
export function imageRoutes(catalog: ImageCatalog) {
  return async (app: FastifyInstance): Promise<void> => {
    app.get("/v1/images", {
      schema: {
        summary: "Images this server offers and what each contains (languages, versions, packages)",
        response: { 200: Type.Object({ images: Type.Array(ImageSchema) }), ...errorResponses(401) },
      },
    }, async () => ({ images: catalog.list() }));

    app.get<{ Params: Static<typeof NameParams> }>("/v1/images/:name", {
      schema: {
        summary: "One image, with its full contents (module lists, Debian packages)",
        params: NameParams,
        response: { 200: FullImageSchema, ...errorResponses(401, 404) },
      },
    }, async (req) => {
      const name = req.params.name;
      if (!catalog.has(name)) throw new PetriError("IMAGE_NOT_FOUND", `no image "${name}"; this server offers: ${catalog.names().join(", ")}`);
      const m = catalog.manifest(name);
      return {
        ...catalog.info(name),
        python_modules: m?.python_modules ?? [], python_stdlib: m?.python_stdlib ?? [],
        node_builtins: m?.node_builtins ?? [], debian_packages: m?.debian_packages ?? {},
      };
    });
  };
}
