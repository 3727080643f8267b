import type { FastifyReply } from "fastify";

/**
 * Resolves once a reply has been handed to the socket, or its connection is gone. Work that
 * follows a run's result (unmounting its view, deleting a one-request sandbox) waits for this, so
 * it never runs ahead of the answer (the reply itself waits for its audit record's group commit,
 * and whatever runs on the event loop meanwhile would delay it).
 */
export function answered(reply: FastifyReply): Promise<void> {
  const res = reply.raw;
  if (res.writableFinished || res.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    res.once("finish", () => resolve());
    res.once("close", () => resolve());
  });
}
