import { conformanceMatrix, sayModes } from "./conformance-matrix.js";

// Part of the conformance matrix (conformance-matrix.ts says what the parts are and why).
// Pre-start on, every runtime, the standard image.
sayModes();
await conformanceMatrix({ images: ["standard"], modes: ["on"], families: ["docker", "bwrap", "direct"] });
