/**
 * Runs a program on a pseudo-terminal, for programs that behave differently on one (colours,
 * progress bars, prompts, line buffering). util-linux's `script` (in every Debian image: it is
 * in the essential bsdutils package) allocates the pty inside the sandbox, so this works the
 * same on every runtime that gives the run a devpts (/dev/pts): Docker with runc, crun and runsc,
 * and bwrap (--dev). stdout and stderr both go to the terminal, so they arrive merged on stdout.
 */
export const TTY_SIZE = { cols: 120, rows: 40 };

function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export function ttyArgv(argv: string[]): string[] {
  // -onlcr: the terminal would turn every "\n" into "\r\n"; output should read like a file's.
  const setup = `stty -onlcr cols ${TTY_SIZE.cols} rows ${TTY_SIZE.rows} 2>/dev/null`;
  return ["script", "-q", "-e", "-f", "-E", "never", "-c", `${setup}; exec ${argv.map(shQuote).join(" ")}`, "/dev/null"];
}

/** Variables a terminal program expects; the run's own env wins. */
export const TTY_ENV = Object.freeze({ TERM: "xterm-256color", COLUMNS: String(TTY_SIZE.cols), LINES: String(TTY_SIZE.rows) });
