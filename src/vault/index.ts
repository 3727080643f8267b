/** TenantVault's public surface, for the server and the run path. */
export { SecretStore, rotateMasterKeyFile, SECRET_NAME_RE } from "./store.js";
export type { SecretMeta, SecretKind, SecretInput, SecretStoreOptions, ResolvedSecret, PostgresConfig, HttpConfig } from "./store.js";
export { loadOrCreateMasterKey, readMasterKeyRing, writeMasterKeyFile, generateMasterKey, parseMasterKey } from "./crypto.js";
export { vaultRoutes } from "./routes.js";
export { openBrokerSession, BROKER_MOUNT_TARGET, PROXY_PORT } from "./session.js";
export type { BrokerSession, BrokerSessionOptions } from "./session.js";
export type { BrokerEvent } from "./events.js";
export { Redactor, StreamRedactor } from "./redact.js";
export { checkTenantHosts, parseEgressPolicy, DEFAULT_EGRESS_POLICY, isPublicAddress } from "./egress.js";
export type { EgressPolicy } from "./egress.js";
