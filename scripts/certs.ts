/**
 * `deno task certs [--dir DIR] [--names n1,n2,n3] [--hosts h1,h2] [--extras]`: makes a test CA
 * and certificates for a local TLS cluster with the `openssl` command (Debian: apt-get install
 * openssl). For testing and trying out only: the CA key lies next to the certificates.
 *
 * Writes into DIR (default ./certs):
 * - `ca.crt`, `ca.key`: the test CA (give `ca.crt` to --trusted-ca-file, --peer-trusted-ca-file,
 *   etcdctl --cacert, curl --cacert);
 * - `NAME.crt`, `NAME.key` for each node name: usable as server and client certificate (client
 *   port, gRPC port, peer port), for 127.0.0.1, ::1, localhost and the --hosts;
 * - `client.crt`, `client.key`: a client certificate, for --client-cert-auth;
 * - with --extras (for tests): `other-ca.crt`, `other-client.crt`/`.key` and
 *   `other-server.crt`/`.key` (signed by another CA), `expired-client.crt`/`.key` (signed by the
 *   test CA, valid only on 2020-01-01).
 *
 * Keys are ECDSA P-256; certificates are valid for 365 days.
 *
 * @module
 */

import { parseArgs } from "node:util";

/** What {@linkcode makeCerts} makes. */
export interface CertOptions {
  /** Node certificate names (files NAME.crt, NAME.key). Default n1, n2, n3. */
  readonly names?: readonly string[];
  /** More host names or IP addresses for the node certificates. */
  readonly hosts?: readonly string[];
  /** Also the other CA's client certificate and the expired certificates. */
  readonly extras?: boolean;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("openssl", { args, cwd, stdout: "piped", stderr: "piped" })
      .output();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(
        "The openssl command is not installed; on Debian: apt-get install openssl",
      );
    }
    throw e;
  }
  if (!out.success) {
    throw new Error(
      `openssl ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr).trim()}`,
    );
  }
}

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];

function sanOf(hosts: readonly string[]): string {
  return hosts.map((h) => /^[\d.]+$|:/.test(h) ? `IP:${h}` : `DNS:${h}`).join(",");
}

async function makeCa(dir: string, name: string, cn: string): Promise<void> {
  await openssl([
    "req",
    "-x509",
    ...EC,
    "-keyout",
    `${name}.key`,
    "-out",
    `${name}.crt`,
    "-days",
    "365",
    "-subj",
    `/CN=${cn}`,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ], dir);
}

/** Makes a key and a certificate signed by `ca`; `dates` gives a past validity instead. */
async function makeLeaf(
  dir: string,
  ca: string,
  name: string,
  ext: string,
  dates?: { start: string; end: string },
): Promise<void> {
  await openssl(
    ["req", ...EC, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`],
    dir,
  );
  await Deno.writeTextFile(`${dir}/${name}.ext`, ext);
  if (dates === undefined) {
    await openssl([
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      `${ca}.crt`,
      "-CAkey",
      `${ca}.key`,
      "-CAcreateserial",
      "-out",
      `${name}.crt`,
      "-days",
      "365",
      "-extfile",
      `${name}.ext`,
    ], dir);
  } else {
    // `openssl x509` (3.0) cannot set a start date; `openssl ca` can, with a throwaway database.
    const db = `${dir}/.ca-${name}`;
    await Deno.mkdir(db, { recursive: true });
    await Deno.writeTextFile(`${db}/index.txt`, "");
    await Deno.writeTextFile(`${db}/serial`, "1000\n");
    await Deno.writeTextFile(
      `${db}/ca.cnf`,
      [
        "[ca]",
        "default_ca = test",
        "[test]",
        `database = ${db}/index.txt`,
        `new_certs_dir = ${db}`,
        `serial = ${db}/serial`,
        "default_md = sha256",
        "policy = any",
        "[any]",
        "commonName = supplied",
        "",
      ].join("\n"),
    );
    await openssl([
      "ca",
      "-batch",
      "-notext",
      "-config",
      `${db}/ca.cnf`,
      "-cert",
      `${ca}.crt`,
      "-keyfile",
      `${ca}.key`,
      "-in",
      `${name}.csr`,
      "-out",
      `${name}.crt`,
      "-startdate",
      dates.start,
      "-enddate",
      dates.end,
      "-extfile",
      `${name}.ext`,
    ], dir);
    await Deno.remove(db, { recursive: true });
  }
  await Deno.remove(`${dir}/${name}.csr`);
  await Deno.remove(`${dir}/${name}.ext`);
  await Deno.chmod(`${dir}/${name}.key`, 0o600);
}

/** The extensions of a node certificate: server and client use, for 127.0.0.1, ::1, localhost. */
function serverExtOf(moreHosts: readonly string[]): string {
  const hosts = ["127.0.0.1", "::1", "localhost", ...moreHosts];
  return [
    `subjectAltName=${sanOf(hosts)}`,
    "keyUsage=critical,digitalSignature",
    "extendedKeyUsage=serverAuth,clientAuth",
    "",
  ].join("\n");
}

/**
 * Makes one more node certificate (`NAME.crt`, `NAME.key`) signed by the test CA that
 * {@linkcode makeCerts} left in `dir` (`ca.crt`, `ca.key`), e.g. for a member added later.
 */
export async function makeNodeCert(
  dir: string,
  name: string,
  options: { hosts?: readonly string[] } = {},
): Promise<void> {
  for (const file of ["ca.crt", "ca.key"]) {
    try {
      Deno.statSync(`${dir}/${file}`);
    } catch {
      throw new Error(`No test CA in "${dir}": ${file} is missing (make one with makeCerts)`);
    }
  }
  await makeLeaf(dir, "ca", name, serverExtOf(options.hosts ?? []));
  await Deno.remove(`${dir}/ca.srl`).catch(() => {});
}

/** Makes the test CA and certificates into `dir` (created if missing). */
export async function makeCerts(dir: string, options: CertOptions = {}): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const names = options.names ?? ["n1", "n2", "n3"];
  const serverExt = serverExtOf(options.hosts ?? []);
  const clientExt = "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n";
  await makeCa(dir, "ca", "raftmeta test CA");
  await Deno.chmod(`${dir}/ca.key`, 0o600);
  for (const name of names) await makeLeaf(dir, "ca", name, serverExt);
  await makeLeaf(dir, "ca", "client", clientExt);
  if (options.extras) {
    await makeCa(dir, "other-ca", "raftmeta other test CA");
    await makeLeaf(dir, "other-ca", "other-client", clientExt);
    await makeLeaf(dir, "other-ca", "other-server", serverExt);
    const past = { start: "20200101000000Z", end: "20200102000000Z" };
    await makeLeaf(dir, "ca", "expired-client", clientExt, past);
  }
  for (const serial of ["ca.srl", "other-ca.srl"]) {
    await Deno.remove(`${dir}/${serial}`).catch(() => {});
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      dir: { type: "string", default: "certs" },
      names: { type: "string", default: "n1,n2,n3" },
      hosts: { type: "string", default: "" },
      extras: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    console.log(
      "Usage: deno task certs [--dir DIR] [--names n1,n2,n3] [--hosts HOST,...] [--extras]\n" +
        "Makes a test CA, node certificates (127.0.0.1, ::1, localhost and --hosts) and a\n" +
        "client certificate into DIR (default ./certs) with openssl. For tests and trials only.",
    );
    Deno.exit(0);
  }
  const split = (v: string) => v.split(",").map((s) => s.trim()).filter((s) => s !== "");
  try {
    await makeCerts(values.dir!, {
      names: split(values.names!),
      hosts: split(values.hosts!),
      extras: values.extras,
    });
  } catch (e) {
    console.error(`certs: ${(e as Error).message}`);
    Deno.exit(1);
  }
  console.log(`Test CA and certificates written to ${values.dir}/ (ca.crt, ca.key, ...)`);
}
