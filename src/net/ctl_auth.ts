/**
 * The ctl's `user`, `role` and `auth` commands (etcdctl's), over the `/v3/auth/*` JSON routes,
 * and how the ctl gets passwords without putting them in argv: `$RAFTMETA_PASSWORD` (the user
 * of `--user`) and `$RAFTMETA_NEW_PASSWORD` (for `user add` and `user passwd`), else a line of
 * stdin (not echoed on a terminal).
 *
 * @module
 */

/** Usage lines of the auth commands, for the ctl's help. */
export const AUTH_HELP =
  `  user add NAME [--no-password]   add a user; its password from $RAFTMETA_NEW_PASSWORD or stdin
  user delete NAME | get NAME | list
  user passwd NAME                change a password ($RAFTMETA_NEW_PASSWORD or stdin)
  user grant-role NAME ROLE       give NAME the permissions of ROLE (root: everything)
  user revoke-role NAME ROLE
  role add NAME | delete NAME | get NAME | list
  role grant-permission ROLE read|write|readwrite KEY [RANGE_END] [--prefix | --from-key]
  role revoke-permission ROLE KEY [RANGE_END] [--prefix | --from-key]
  auth enable | disable | status  enable needs user root with role root; then every request
                                  needs --user (see docs/security.md)`;

/** A command the auth commands cannot run (exit code 2). */
export class AuthUsageError extends Error {}

/** What the auth commands need from the ctl. */
export interface AuthCommandContext {
  /** Client URLs, tried in order. */
  readonly endpoints: readonly string[];
  /** The fetch to use (authenticated with `--user`, or plain). */
  readonly fetch: typeof fetch;
  /** Output. */
  readonly out: (line: string) => void;
  /** Print JSON answers. */
  readonly json: boolean;
  /** Give up after this long. */
  readonly timeoutMs: number;
  /** Flags. */
  readonly prefix: boolean;
  readonly fromKey: boolean;
  readonly noPassword: boolean;
  /** Reads a new password (for user add and passwd). */
  readonly newPassword: (user: string) => Promise<string>;
}

function b64(text: string): string {
  return btoa(String.fromCharCode(...new TextEncoder().encode(text)));
}

function unb64(text: string): string {
  return new TextDecoder().decode(Uint8Array.from(atob(text), (c) => c.charCodeAt(0)));
}

/** The key after every key starting with `prefix`, as etcd's base64 range end. */
function prefixEndB64(prefix: string): string {
  const bytes = new TextEncoder().encode(prefix);
  let i = bytes.length - 1;
  while (i >= 0 && bytes[i] === 0xff) i--;
  if (i < 0) return btoa("\u0000");
  const end = bytes.slice(0, i + 1);
  end[i]++;
  return btoa(String.fromCharCode(...end));
}

/** Posts to the first endpoint that answers; throws etcd's message on a refusal. */
async function post(
  ctx: AuthCommandContext,
  path: string,
  body: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  let last = "no endpoint";
  for (const endpoint of ctx.endpoints) {
    let res: Response;
    try {
      res = await ctx.fetch(`${endpoint.replace(/\/$/, "")}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(ctx.timeoutMs),
      });
    } catch (e) {
      last = `${endpoint}: ${(e as Error).message}`;
      continue;
    }
    const json = await res.json().catch(() => ({}));
    if (res.ok) return json;
    if (res.status >= 500) {
      last = `${endpoint}: ${json.message ?? `HTTP ${res.status}`}`;
      continue;
    }
    throw new Error(String(json.message ?? `HTTP ${res.status}`));
  }
  throw new Error(`No endpoint could serve ${path}: ${last}`);
}

function keyRange(ctx: AuthCommandContext, args: string[], usage: string) {
  if (args.length < 1 || args.length > 2) throw new AuthUsageError(`usage: ${usage}`);
  const [key, end] = args;
  if (end !== undefined && (ctx.prefix || ctx.fromKey)) {
    throw new AuthUsageError(`RANGE_END cannot go with --prefix or --from-key`);
  }
  const out: Record<string, string> = { key: b64(key) };
  if (ctx.prefix) out.range_end = prefixEndB64(key);
  else if (ctx.fromKey) out.range_end = b64("\u0000");
  else if (end !== undefined) out.range_end = b64(end);
  return out;
}

/** Runs `user|role|auth SUB ARGS...`; returns the exit code. */
export async function runAuthCommand(
  command: string,
  args: string[],
  ctx: AuthCommandContext,
): Promise<number> {
  const [sub, ...rest] = args;
  const need = (n: number, usage: string) => {
    if (rest.length !== n) throw new AuthUsageError(`usage: ${command} ${usage}`);
  };
  const done = (text: string, json: Record<string, unknown>) => {
    ctx.out(ctx.json ? JSON.stringify(json) : text);
    return 0;
  };
  const key = `${command} ${sub ?? ""}`;
  switch (key) {
    case "user add": {
      need(1, "add NAME [--no-password]");
      const body: Record<string, unknown> = { name: rest[0] };
      if (ctx.noPassword) body.options = { no_password: true };
      else body.password = await ctx.newPassword(rest[0]);
      return done(`User ${rest[0]} created`, await post(ctx, "/v3/auth/user/add", body));
    }
    case "user delete":
      need(1, "delete NAME");
      return done(
        `User ${rest[0]} deleted`,
        await post(ctx, "/v3/auth/user/delete", { name: rest[0] }),
      );
    case "user get": {
      need(1, "get NAME");
      const r = await post(ctx, "/v3/auth/user/get", { name: rest[0] });
      const roles = (r.roles as string[] | undefined) ?? [];
      return done(`User: ${rest[0]}\nRoles: ${roles.join(" ")}`, r);
    }
    case "user list": {
      need(0, "list");
      const r = await post(ctx, "/v3/auth/user/list", {});
      return done(((r.users as string[] | undefined) ?? []).join("\n"), r);
    }
    case "user passwd": {
      need(1, "passwd NAME");
      const password = await ctx.newPassword(rest[0]);
      return done(
        "Password updated",
        await post(ctx, "/v3/auth/user/changepw", { name: rest[0], password }),
      );
    }
    case "user grant-role":
      need(2, "grant-role NAME ROLE");
      return done(
        `Role ${rest[1]} is granted to user ${rest[0]}`,
        await post(ctx, "/v3/auth/user/grant", { user: rest[0], role: rest[1] }),
      );
    case "user revoke-role":
      need(2, "revoke-role NAME ROLE");
      return done(
        `Role ${rest[1]} is revoked from user ${rest[0]}`,
        await post(ctx, "/v3/auth/user/revoke", { name: rest[0], role: rest[1] }),
      );
    case "role add":
      need(1, "add NAME");
      return done(
        `Role ${rest[0]} created`,
        await post(ctx, "/v3/auth/role/add", { name: rest[0] }),
      );
    case "role delete":
      need(1, "delete NAME");
      return done(
        `Role ${rest[0]} deleted`,
        await post(ctx, "/v3/auth/role/delete", { role: rest[0] }),
      );
    case "role get": {
      need(1, "get NAME");
      const r = await post(ctx, "/v3/auth/role/get", { role: rest[0] });
      const lines = [`Role ${rest[0]}`];
      for (const p of (r.perm as Record<string, string>[] | undefined) ?? []) {
        const end = p.range_end === undefined ? "" : ` to ${unb64(p.range_end)}`;
        lines.push(`  ${p.permType ?? "READ"} ${unb64(p.key)}${end}`);
      }
      return done(lines.join("\n"), r);
    }
    case "role list": {
      need(0, "list");
      const r = await post(ctx, "/v3/auth/role/list", {});
      return done(((r.roles as string[] | undefined) ?? []).join("\n"), r);
    }
    case "role grant-permission": {
      const usage = "grant-permission ROLE read|write|readwrite KEY [RANGE_END] [--prefix]";
      if (rest.length < 3) throw new AuthUsageError(`usage: role ${usage}`);
      const permType = rest[1].toUpperCase();
      if (!["READ", "WRITE", "READWRITE"].includes(permType)) {
        throw new AuthUsageError(`Permission type must be read, write or readwrite: ${rest[1]}`);
      }
      const range = keyRange(ctx, rest.slice(2), `role ${usage}`);
      return done(
        `Role ${rest[0]} updated`,
        await post(ctx, "/v3/auth/role/grant", { name: rest[0], perm: { permType, ...range } }),
      );
    }
    case "role revoke-permission": {
      const usage = "revoke-permission ROLE KEY [RANGE_END] [--prefix]";
      if (rest.length < 2) throw new AuthUsageError(`usage: role ${usage}`);
      const range = keyRange(ctx, rest.slice(1), `role ${usage}`);
      return done(
        `Permission of role ${rest[0]} is revoked`,
        await post(ctx, "/v3/auth/role/revoke", { role: rest[0], ...range }),
      );
    }
    case "auth enable":
      need(0, "enable");
      return done("Authentication Enabled", await post(ctx, "/v3/auth/enable", {}));
    case "auth disable":
      need(0, "disable");
      return done("Authentication Disabled", await post(ctx, "/v3/auth/disable", {}));
    case "auth status": {
      need(0, "status");
      const r = await post(ctx, "/v3/auth/status", {});
      return done(
        `Authentication Status: ${r.enabled ? "true" : "false"}\nAuthRevision: ${r.authRevision}`,
        r,
      );
    }
    default:
      throw new AuthUsageError(`unknown command ${JSON.stringify(key.trim())} (see --help)`);
  }
}

/**
 * A line of stdin, not echoed when stdin is a terminal (for passwords). Reads byte by byte so
 * that a second call gets the next line.
 */
export async function readSecretLine(prompt: string): Promise<string> {
  const tty = Deno.stdin.isTerminal();
  if (tty) {
    await Deno.stderr.write(new TextEncoder().encode(prompt));
    Deno.stdin.setRaw(true);
  }
  const bytes: number[] = [];
  const one = new Uint8Array(1);
  try {
    while (true) {
      const n = await Deno.stdin.read(one);
      if (n === null) break;
      if (one[0] === 0x0a || one[0] === 0x0d) break;
      if (tty && one[0] === 0x03) throw new Error("Interrupted");
      bytes.push(one[0]);
      if (bytes.length > 4096) throw new Error("A password line is longer than 4096 bytes");
    }
  } finally {
    if (tty) {
      Deno.stdin.setRaw(false);
      await Deno.stderr.write(new TextEncoder().encode("\n"));
    }
  }
  return new TextDecoder().decode(new Uint8Array(bytes));
}
