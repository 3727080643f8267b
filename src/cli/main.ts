import Docker from "dockerode";
import { loadConfig } from "../config.js";
import { buildDefaultImage } from "../images/build.js";

const USAGE = `usage: petri <command>

  serve                         start the HTTP server
  images build [--force]        build the runtime image from Debian packages
  keys create [--name N] [--tenant T] [--admin]
                                create an API key (printed once)
  keys list                     list API keys (never their secrets)
`;

export async function main(argv: string[]): Promise<number> {
  const [cmd, sub, ...rest] = argv;
  if (cmd === "images" && sub === "build") {
    const cfg = loadConfig();
    await buildDefaultImage({ imageDir: cfg.imageDir, docker: new Docker({ socketPath: cfg.dockerSocket }), force: rest.includes("--force") });
    return 0;
  }
  process.stderr.write(USAGE);
  return cmd === undefined || cmd === "help" || cmd === "--help" ? 0 : 2;
}
