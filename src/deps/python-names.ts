import { PYTHON_STDLIB } from "./python-stdlib.js";

/**
 * Import names whose distribution on the package index has another name. Only well-known,
 * unambiguous cases: a wrong guess would install a different (possibly hostile) project, so an
 * import not listed here is installed under its own name and nothing cleverer.
 */
export const IMPORT_TO_DISTRIBUTION: Readonly<Record<string, string>> = Object.freeze({
  sklearn: "scikit-learn",
  skimage: "scikit-image",
  cv2: "opencv-python",
  PIL: "pillow",
  yaml: "pyyaml",
  bs4: "beautifulsoup4",
  dateutil: "python-dateutil",
  dotenv: "python-dotenv",
  jwt: "pyjwt",
  attr: "attrs",
  OpenSSL: "pyopenssl",
  Crypto: "pycryptodome",
  Cryptodome: "pycryptodomex",
  nacl: "pynacl",
  serial: "pyserial",
  usb: "pyusb",
  docx: "python-docx",
  pptx: "python-pptx",
  fitz: "pymupdf",
  MySQLdb: "mysqlclient",
  psycopg2: "psycopg2-binary",
  Bio: "biopython",
  git: "gitpython",
  github: "pygithub",
  socks: "pysocks",
  dns: "dnspython",
  websocket: "websocket-client",
  zmq: "pyzmq",
  magic: "python-magic",
  slugify: "python-slugify",
  multipart: "python-multipart",
  jose: "python-jose",
  telegram: "python-telegram-bot",
  kafka: "kafka-python",
  ldap: "python-ldap",
  faiss: "faiss-cpu",
  umap: "umap-learn",
  mpl_toolkits: "matplotlib",
  pylab: "matplotlib",
  pkg_resources: "setuptools",
  Levenshtein: "levenshtein",
  Xlib: "python-xlib",
  OpenGL: "pyopengl",
  cairo: "pycairo",
  gi: "pygobject",
  wx: "wxpython",
  Cython: "cython",
  pyximport: "cython",
  google: "protobuf",
  sentencepiece: "sentencepiece",
  tree_sitter: "tree-sitter",
  lxml: "lxml",
});

/** PEP 503 normalized project name: lower case, runs of `-`, `_`, `.` as one `-`. */
export function normalizeDistribution(name: string): string {
  return name.toLowerCase().replace(/[-_.]+/g, "-");
}

export function isPythonStdlib(top: string): boolean {
  return PYTHON_STDLIB.has(top);
}

/** The distribution that provides a top-level import name. */
export function distributionFor(top: string): string {
  return normalizeDistribution(IMPORT_TO_DISTRIBUTION[top] ?? top);
}
