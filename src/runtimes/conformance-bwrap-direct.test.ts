import { conformanceMatrix, TESTED_IMAGES } from "./conformance-matrix.js";

// Part of the conformance matrix (conformance-matrix.ts says what the parts are and why).
// Cold runs on bubblewrap and the OCI runtimes called directly (runc, crun, runsc), every image.
await conformanceMatrix({ images: TESTED_IMAGES, modes: ["off"], families: ["bwrap", "direct"] });
