/**
 * raftmeta: a Raft-backed metadata and coordination service, and a runtime that teaches Raft by
 * running it. This module exports the consensus core, the metadata store, the simulated cluster
 * and the node tables.
 *
 * @example
 * ```ts
 * import { Cluster, nodeTable } from "./mod.ts";
 * const cluster = new Cluster({ nodes: 3, seed: 42 });
 * const leader = cluster.waitForLeader();
 * cluster.complete(cluster.put("/services/db/primary", "10.0.0.7:5432"));
 * console.log(nodeTable(cluster).toString());
 * ```
 *
 * @module
 */

export * from "./src/raft/types.ts";
export { type LogStart, RaftLog } from "./src/raft/log.ts";
export { type NodeStatus, RaftNode, type RaftNodeOptions } from "./src/raft/node.ts";
export { SeededRng } from "./src/raft/rng.ts";
export {
  applyConfChange,
  type ConfChange,
  decodeConfChange,
  encodeConfChange,
  type Membership,
  membership,
} from "./src/raft/membership.ts";
export {
  JointConfig,
  MajorityConfig,
  type QuorumConfig,
  quorumsCanBeDisjoint,
  type VoteResult,
} from "./src/raft/quorum.ts";
export { LogApplier, type StateMachine } from "./src/raft/applier.ts";
export {
  MemoryStorage,
  type MemoryStorageOptions,
  type PersistedState,
  type SaveRecord,
  type Snapshot,
  type SnapshotMeta,
  type Storage,
} from "./src/raft/storage.ts";
export {
  type AutoSnapshotOptions,
  drainReady,
  type HostHooks,
  maybeSnapshot,
  SNAPSHOT_ENTRIES_DEFAULT,
  type SnapshotHost,
} from "./src/raft/host.ts";
export { decodeStoreSnapshot, encodeStoreSnapshot } from "./src/storage/store_snapshot.ts";
export * from "./src/storage/mod.ts";
export {
  type ApplyLatency,
  Cluster,
  type ClusterOptions,
  DEFAULT_NETWORK,
  type DiskLatency,
  type DurableWrite,
  type NetworkOptions,
  type NetworkStats,
  type NodeClock,
  type NodeState,
  type Operation,
  type OperationStatus,
  type SimEvent,
  SimNode,
} from "./src/sim/cluster.ts";
export * from "./src/kv/store.ts";
export * from "./src/kv/types.ts";
export {
  type AuthLimits,
  type AuthOp,
  type AuthRole,
  type AuthSnapshot,
  AuthState,
  type AuthUser,
  type Needs,
  type PasswordHash,
  type Permission,
  type PermType,
} from "./src/kv/auth.ts";
export {
  CommandError,
  decodeCommand,
  type DecodeOptions,
  encodeCommand,
  encodeDelete,
  encodePut,
} from "./src/kv/command.ts";
export {
  describeEntry,
  JUPYTER_DISPLAY,
  type LogCell,
  type LogGrid,
  NODE_TABLE_COLUMNS,
  NODE_TABLE_LEGEND,
  type NodeRow,
  NodeTable,
  nodeTable,
  type NodeTableOptions,
  type ProgressRow,
  TEXT_COLUMNS_MAX,
} from "./src/observe/table.ts";
export { describeCommand, storeStrings } from "./src/observe/describe.ts";
export {
  type CheckedNode,
  type DurableView,
  SafetyChecker,
  SafetyViolation,
} from "./src/sim/invariants.ts";
export {
  claim,
  runScenario,
  runStep,
  type ScenarioContext,
  type Step,
  StepFailure,
} from "./src/scenario/scenario.ts";
export {
  type Arrow,
  type ArrowFate,
  type Mark,
  messageLabel,
  recorderFor,
  recordTimeline,
  type Rounds,
  Timeline,
  TIMELINE_LEGEND,
  type TimelineLine,
  type TimelineOptions,
  TimelineRecorder,
} from "./src/observe/timeline.ts";
export {
  CdfChart,
  cdfChart,
  type CdfChartOptions,
  type CdfSeries,
  type CdfSummary,
  summarize,
} from "./src/observe/svg_chart.ts";
export {
  type ClientKeyValue,
  type ClientRangeResult,
  type ClientTxnResult,
  type ClientWatchEvent,
  type ClientWatchOptions,
  type ClientWatchResponse,
  type ClusterPath,
  connect,
  type ConnectOptions,
  HttpCoordClient,
  RaftmetaClient,
  RaftmetaError,
  type ReadOptions,
  WatchCompactedError,
} from "./src/net/client.ts";
export * from "./src/coord/mod.ts";
