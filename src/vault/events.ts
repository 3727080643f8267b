/** What a broker reports for the audit layer. Details never carry a secret's value. */
export interface BrokerEvent {
  kind: "network" | "datastore";
  action: string;
  outcome: "success" | "denied" | "failure";
  detail: Record<string, unknown>;
}
