/**
 * etcd's Cluster API and MoveLeader on a server: `/v3/cluster/member/add|remove|update|promote`
 * and `/v3/maintenance/transfer-leadership`, the JSON gateway's paths (gRPC's Cluster and
 * Maintenance services call the same). Requests are parsed where they arrive; the change runs on
 * the leader (src/net/http.ts forwards), through the log, one at a time.
 *
 * @module
 */

import type { NodeId } from "../raft/types.ts";
import { badRequest, HttpError } from "./etcd.ts";
import {
  encodeMemberContext,
  LEARNERS_MAX,
  MemberErrors,
  MEMBERS_MAX,
  newMemberId,
  parsePeerUrl,
} from "./members.ts";
import type { RaftServer } from "./server.ts";

type Json = Record<string, unknown>;

/** The member routes, gateway paths. */
export const MEMBER_ROUTES: readonly string[] = [
  "/v3/cluster/member/add",
  "/v3/cluster/member/remove",
  "/v3/cluster/member/update",
  "/v3/cluster/member/promote",
  "/v3/maintenance/transfer-leadership",
];

/** A parsed member request. */
export type MemberRequest =
  | {
    readonly kind: "add";
    readonly peerUrl: string;
    readonly isLearner: boolean;
    readonly name: string | undefined;
    readonly clientUrl: string | undefined;
    readonly grpcUrl: string | undefined;
  }
  | { readonly kind: "remove" | "promote"; readonly id: bigint }
  | { readonly kind: "update"; readonly id: bigint; readonly peerUrl: string }
  | { readonly kind: "transfer"; readonly targetId: bigint };

const WHAT: Record<string, string> = {
  "/v3/cluster/member/add": "MemberAddRequest",
  "/v3/cluster/member/remove": "MemberRemoveRequest",
  "/v3/cluster/member/promote": "MemberPromoteRequest",
  "/v3/cluster/member/update": "MemberUpdateRequest",
  "/v3/maintenance/transfer-leadership": "MoveLeaderRequest",
};

/** Parses the body of a member route; throws 400 naming the field that is wrong. */
export function parseMemberRequest(path: string, body: unknown): MemberRequest {
  const what = WHAT[path];
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw badRequest(`${what} must be a JSON object`);
  }
  // Unknown fields are ignored, as grpc-gateway ignores them (the other routes do the same).
  const o = body as Json;
  const get = (...names: string[]) => names.map((n) => o[n]).find((v) => v !== undefined);
  const uint64 = (field: string, ...names: string[]): bigint => {
    const v = get(...names);
    const text = typeof v === "number" && Number.isSafeInteger(v) ? String(v) : v;
    if (typeof text !== "string" || !/^\d{1,20}$/.test(text) || BigInt(text) >= 2n ** 64n) {
      throw badRequest(`Field "${field}" of ${what} must be a uint64: ${JSON.stringify(v)}`);
    }
    return BigInt(text);
  };
  const oneUrl = (field: string, ...names: string[]): string | undefined => {
    const v = get(...names);
    if (v === undefined) return undefined;
    if (!Array.isArray(v)) throw badRequest(`Field "${field}" of ${what} must be an array`);
    if (v.length === 0) return undefined;
    if (v.length > 1) {
      throw badRequest(
        `Field "${field}" of ${what} lists ${v.length} URLs; raftmeta takes one per member`,
      );
    }
    if (typeof v[0] !== "string") throw badRequest(`Field "${field}" of ${what} must hold strings`);
    return v[0];
  };
  switch (path) {
    case "/v3/cluster/member/add": {
      const peer = oneUrl("peerURLs", "peerURLs", "peer_urls");
      if (peer === undefined) throw MemberErrors.badUrls("no peer URL given");
      const learner = get("isLearner", "is_learner") ?? false;
      if (typeof learner !== "boolean") {
        throw badRequest(
          `Field "isLearner" of ${what} must be a boolean: ${JSON.stringify(learner)}`,
        );
      }
      const name = get("name");
      if (name !== undefined && (typeof name !== "string" || !isNodeName(name))) {
        throw badRequest(
          `Field "name" of ${what} must be 1 to 64 letters, digits, "-", "_" or ".": ` +
            JSON.stringify(name),
        );
      }
      const clientUrl = oneUrl("clientURLs", "clientURLs", "client_urls");
      const grpcUrl = oneUrl("grpcURLs", "grpcURLs", "grpc_urls");
      for (const [field, url] of [["clientURLs", clientUrl], ["grpcURLs", grpcUrl]]) {
        if (url !== undefined && !/^https?:\/\/[^/\s]+$/.test(url)) {
          throw badRequest(`Field "${field}" of ${what} must hold http(s)://HOST:PORT: ${url}`);
        }
      }
      return {
        kind: "add",
        peerUrl: parsePeerUrl(peer).url,
        isLearner: learner,
        name: name as string | undefined,
        clientUrl,
        grpcUrl,
      };
    }
    case "/v3/cluster/member/remove":
    case "/v3/cluster/member/promote":
      return {
        kind: path.endsWith("remove") ? "remove" : "promote",
        id: uint64("ID", "ID", "id"),
      };
    case "/v3/cluster/member/update": {
      const id = uint64("ID", "ID", "id");
      const peer = oneUrl("peerURLs", "peerURLs", "peer_urls");
      if (peer === undefined) throw MemberErrors.badUrls("no peer URL given");
      return { kind: "update", id, peerUrl: parsePeerUrl(peer).url };
    }
    case "/v3/maintenance/transfer-leadership":
      return { kind: "transfer", targetId: uint64("targetID", "targetID", "target_id") };
  }
  throw new HttpError(404, `Unknown path ${JSON.stringify(path)}`, 5);
}

/** A member's name: what becomes its Raft node id and its `--name`. */
export function isNodeName(name: string): boolean {
  return /^[A-Za-z0-9_.-]{1,64}$/.test(name);
}

/** A member in etcd's shape: ID, name, peerURLs, clientURLs, isLearner (only when true). */
export function memberJson(server: RaftServer, id: NodeId, clientUrls: string[]): Json {
  const m = server.members().find((x) => x.id === id);
  const peerUrl = m?.peerUrl ?? server.peerUrlOf(id);
  const out: Json = {
    ID: server.memberIdOf(id).toString(),
    name: id,
    peerURLs: peerUrl === undefined || peerUrl === null ? [] : [peerUrl],
    clientURLs: clientUrls,
  };
  if (m?.isLearner) out.isLearner = true;
  return out;
}

/** The member (voter or learner) with etcd id `id`, or etcd's "member not found". */
function memberById(server: RaftServer, id: bigint): NodeId {
  const m = server.members().find((x) => x.memberId === id);
  if (m === undefined) throw MemberErrors.notFound();
  return m.id;
}

/**
 * Runs a member request on this node, which must lead (else {@linkcode NotLeaderError} from the
 * server, and the caller forwards). `list` renders the members for the answer.
 */
export async function runMemberRequest(
  server: RaftServer,
  r: MemberRequest,
  render: { header: () => Json; members: () => Json[]; clientUrls: (id: NodeId) => string[] },
): Promise<Json> {
  switch (r.kind) {
    case "add": {
      const members = server.members();
      if (members.length >= MEMBERS_MAX) {
        throw new HttpError(412, `The cluster has ${members.length} members, the most allowed`, 9);
      }
      if (members.some((m) => m.peerUrl === r.peerUrl)) throw MemberErrors.peerUrlExists();
      if (r.isLearner && server.node.learners.length >= LEARNERS_MAX) {
        throw MemberErrors.tooManyLearners();
      }
      let id = newMemberId();
      while (
        members.some((m) => m.memberId === id) || server.memberTable.isRemovedId(id)
      ) id = newMemberId();
      const name = r.name ?? id.toString(16).padStart(16, "0");
      if (members.some((m) => m.id === name) || server.memberTable.isRemoved(name)) {
        throw new HttpError(
          412,
          `etcdserver: member ID already exist (name "${name}" is ${
            server.memberTable.isRemoved(name)
              ? "of a removed member; names are never reused"
              : "taken"
          })`,
          9,
        );
      }
      await server.changeMembership({
        type: r.isLearner ? "add-learner" : "add-voter",
        node: name,
        context: encodeMemberContext({
          id,
          peerUrl: r.peerUrl,
          clientUrl: r.clientUrl,
          grpcUrl: r.grpcUrl,
        }),
      });
      return {
        header: render.header(),
        member: memberJson(server, name, render.clientUrls(name)),
        members: render.members(),
      };
    }
    case "remove": {
      const node = memberById(server, r.id);
      await server.changeMembership({ type: "remove", node });
      return { header: render.header(), members: render.members() };
    }
    case "promote": {
      const node = memberById(server, r.id);
      if (server.node.voters.includes(node)) throw MemberErrors.notLearner();
      await server.changeMembership({ type: "promote", node });
      return { header: render.header(), members: render.members() };
    }
    case "update": {
      const node = memberById(server, r.id);
      if (server.members().some((m) => m.peerUrl === r.peerUrl && m.id !== node)) {
        throw MemberErrors.peerUrlExists();
      }
      await server.changeMembership({
        type: "update",
        node,
        context: encodeMemberContext({ id: r.id, peerUrl: r.peerUrl }),
      });
      return { header: render.header(), members: render.members() };
    }
    case "transfer": {
      const target = server.members().find((m) => m.memberId === r.targetId);
      if (target === undefined || target.isLearner) throw MemberErrors.badTransferee();
      // Shorter than the request timeout: a forwarding follower gets etcd's answer, not its own
      // timeout. A target that loses its campaign leaves this to time out; the client may retry.
      await server.moveLeader(target.id, Math.max(1000, server.requestTimeoutMs - 1000));
      return { header: render.header() };
    }
  }
}
