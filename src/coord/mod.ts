/**
 * Coordination (src/coord): watches, the leader's lease manager, sessions (ephemeral keys), and
 * lock and leader-election recipes with fencing tokens; plus their harness on the simulator.
 * docs/coordination.md explains the guarantees.
 *
 * @module
 */

export * from "./watch.ts";
export * from "./lease_manager.ts";
export * from "./client.ts";
export * from "./session.ts";
export * from "./lock.ts";
export * from "./sim.ts";
