import { conformanceMatrix } from "./conformance-matrix.js";

// Part of the conformance matrix (conformance-matrix.ts says what the parts are and why).
// Pre-start on, every runtime, the datascience image (warm interpreters with the data stack).
await conformanceMatrix({ images: ["datascience"], modes: ["on"], families: ["docker", "bwrap", "direct"] });
