import { conformanceMatrix } from "./conformance-matrix.js";

// Part of the conformance matrix (conformance-matrix.ts says what the parts are and why).
// Each runtime's warm path against its cold path, the datascience image (docs/warm.md).
await conformanceMatrix({ images: ["datascience"], modes: ["warm"], families: ["docker", "bwrap", "direct"] });
