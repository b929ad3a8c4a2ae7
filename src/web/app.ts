/// <reference lib="dom" />
/**
 * The browser entry of the live demo: draws a {@linkcode SimController}'s scene as SVG and HTML,
 * wires the controls and keyboard shortcuts, keeps the URL hash in step with the scene, and runs
 * the live cluster view. Bundled by `build.ts` into one classic script (`app.js`).
 *
 * @module
 */

import {
  checkSettings,
  type MembershipActionKind,
  type MessageView,
  type NodeView,
  parseScene,
  type SceneSettings,
  type SceneView,
  SimController,
  SPEEDS,
} from "./controller.ts";
import { DEFAULT_NODE_URL, esc, LiveClient, liveTableHtml } from "./live.ts";

const SVG_NS = "http://www.w3.org/2000/svg";
/** Radius of the circle the nodes sit on, and of a node, in SVG units. */
const LAYOUT_RADIUS = 140;
const NODE_RADIUS = 30;
const RING_RADIUS = NODE_RADIUS + 6;
const RING_LENGTH = 2 * Math.PI * RING_RADIUS;
/** Live view: how often the status is polled. */
const LIVE_POLL_MS = 1_000;

const TERM_COLORS = ["#8ecae6", "#ffb703", "#90be6d", "#f28482", "#b8b8ff", "#f6bd60", "#84a59d"];

function $(id: string): HTMLElement {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`Page element #${id} is missing`);
  return el;
}

function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | number> = {},
): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

function setHtml(el: HTMLElement, html: string): void {
  if (el.dataset.html !== html) {
    el.innerHTML = html;
    el.dataset.html = html;
  }
}

function termColor(term: number): string {
  return TERM_COLORS[term % TERM_COLORS.length];
}

interface NodeShape {
  readonly g: SVGGElement;
  readonly ring: SVGCircleElement;
  readonly body: SVGCircleElement;
  readonly role: SVGTextElement;
  readonly term: SVGTextElement;
  readonly title: SVGTitleElement;
  readonly x: number;
  readonly y: number;
}

/** The simulated cluster view: one controller, its drawing and its controls. */
class SimPage {
  controller: SimController;
  readonly selected = new Set<string>();
  #shapes = new Map<string, NodeShape>();
  #messageShapes = new Map<number, SVGGElement>();
  #links = new Map<string, SVGLineElement>();
  #lastFrameMs: number | undefined;
  #lastHash = "";

  constructor() {
    const { settings, actions, problems } = parseScene(location.href);
    this.controller = new SimController(settings, { actions });
    if (problems.length > 0) this.#notice(problems.join("; "));
    this.#fillSelects();
    this.#wire();
    this.#buildStage();
    this.render();
    requestAnimationFrame((t) => this.#frame(t));
  }

  // ---- Controls ----------------------------------------------------------------------------------

  #fillSelects(): void {
    const speed = $("speed") as HTMLSelectElement;
    speed.innerHTML = SPEEDS.map((s) => `<option value="${s}">${s}×</option>`).join("");
    const nodes = $("nodes") as HTMLSelectElement;
    nodes.innerHTML = [3, 4, 5, 6, 7].map((n) => `<option value="${n}">${n}</option>`).join("");
    this.#showSettings();
  }

  #showSettings(): void {
    const s = this.controller.settings;
    ($("speed") as HTMLSelectElement).value = String(s.speed);
    ($("nodes") as HTMLSelectElement).value = String(s.nodes);
    ($("seed") as HTMLInputElement).value = String(s.seed);
  }

  #wire(): void {
    $("play").addEventListener("click", () => this.togglePlay());
    $("step").addEventListener("click", () => this.step());
    $("replay").addEventListener("click", () => this.replay());
    $("new-scene").addEventListener("click", () => this.newScene());
    $("speed").addEventListener("change", () => this.newSettings({ keepActions: true }));
    $("nodes").addEventListener("change", () => this.newScene());
    $("seed").addEventListener("change", () => this.newScene());
    $("crash").addEventListener("click", () => this.crashSelected());
    $("isolate").addEventListener("click", () => this.isolateSelected());
    $("partition").addEventListener("click", () => this.partitionSelected());
    $("heal").addEventListener("click", () => this.#try(() => this.controller.heal()));
    $("add-learner").addEventListener("click", () => this.addLearner());
    $("promote").addEventListener("click", () => this.membershipSelected("promote"));
    $("remove").addEventListener("click", () => this.membershipSelected("remove"));
    $("transfer").addEventListener("click", () => this.membershipSelected("transfer"));
    $("client").addEventListener("submit", (e) => {
      e.preventDefault();
      const submitter = (e as SubmitEvent).submitter as HTMLButtonElement | null;
      this.client(submitter?.value ?? "put");
    });
    globalThis.addEventListener("hashchange", () => {
      if (location.hash !== this.#lastHash) this.#loadFromUrl();
    });
    document.addEventListener("keydown", (e) => this.#key(e));
  }

  #key(e: KeyboardEvent): void {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target as HTMLElement;
    const typing = t.closest("input, select, textarea") !== null;
    if (typing || $("sim-view").hidden) return;
    const onButton = t.closest("button, [role=button], summary, a") !== null;
    const k = e.key;
    if (k === " " && !onButton) this.togglePlay();
    else if (k === "s") this.step();
    else if (k === "r") this.replay();
    else if (k === "c") this.crashSelected();
    else if (k === "x") this.isolateSelected();
    else if (k === "p") this.partitionSelected();
    else if (k === "h") this.#try(() => this.controller.heal());
    else if (k === "a") this.addLearner();
    else if (k === "m") this.membershipSelected("promote");
    else if (k === "d") this.membershipSelected("remove");
    else if (k === "t") this.membershipSelected("transfer");
    else if (k === "Escape") this.selected.clear();
    else if (k === "+" || k === "=" || k === "-") this.#changeSpeed(k === "-" ? -1 : 1);
    else if (/^[1-9]$/.test(k) && Number(k) <= this.controller.cluster.ids.length) {
      this.toggleSelect(`n${k}`);
    } else return;
    e.preventDefault();
    this.render();
  }

  #changeSpeed(delta: number): void {
    const i = SPEEDS.indexOf(this.controller.settings.speed) + delta;
    if (i < 0 || i >= SPEEDS.length) return;
    ($("speed") as HTMLSelectElement).value = String(SPEEDS[i]);
    this.newSettings({ keepActions: true });
  }

  togglePlay(): void {
    this.controller.playing = !this.controller.playing && this.controller.error === undefined;
    this.#lastFrameMs = undefined;
    this.render();
  }

  step(): void {
    this.controller.playing = false;
    this.controller.step();
    this.render();
  }

  replay(): void {
    this.controller.replay();
    this.#buildStage();
    this.render();
  }

  /** Reads the settings fields; a new cluster, keeping the actions when asked (speed changes). */
  newSettings(options: { keepActions: boolean }): void {
    let settings: SceneSettings;
    try {
      settings = checkSettings({
        seed: Number(($("seed") as HTMLInputElement).value),
        nodes: Number(($("nodes") as HTMLSelectElement).value),
        speed: Number(($("speed") as HTMLSelectElement).value),
      });
    } catch (e) {
      this.#notice((e as Error).message);
      this.#showSettings();
      return;
    }
    const old = this.controller;
    if (options.keepActions) {
      // Same scene at another speed: carry on at the same virtual time.
      const actions = [...old.applied, ...old.pending];
      const now = old.cluster.nowMs;
      this.controller = new SimController(settings, { actions });
      this.controller.advance(now);
      this.controller.playing = old.playing;
    } else {
      this.controller = new SimController(settings);
      this.selected.clear();
    }
    this.#buildStage();
    this.render();
  }

  newScene(): void {
    this.newSettings({ keepActions: false });
  }

  #loadFromUrl(): void {
    const { settings, actions, problems } = parseScene(location.href);
    this.controller = new SimController(settings, { actions });
    this.selected.clear();
    if (problems.length > 0) this.#notice(problems.join("; "));
    this.#showSettings();
    this.#buildStage();
    this.render();
  }

  toggleSelect(id: string): void {
    if (this.selected.has(id)) this.selected.delete(id);
    else this.selected.add(id);
    this.render();
  }

  #needSelection(what: string): string[] | undefined {
    if (this.selected.size === 0) {
      this.#notice(`Select a node first (click it or press its number) to ${what}.`);
      return undefined;
    }
    return [...this.selected].sort();
  }

  crashSelected(): void {
    const ids = this.#needSelection("crash or restart it");
    if (ids === undefined) return;
    this.#try(() => ids.forEach((id) => this.controller.toggleCrash(id)));
  }

  isolateSelected(): void {
    const ids = this.#needSelection("cut it off");
    if (ids === undefined) return;
    this.#try(() => ids.forEach((id) => this.controller.isolate(id)));
  }

  partitionSelected(): void {
    const ids = this.#needSelection("split it from the rest");
    if (ids === undefined) return;
    this.#try(() => this.controller.partition(ids));
  }

  addLearner(): void {
    this.#try(() => this.controller.addNode("learner"));
  }

  /** The one selected node, or undefined (no selection, or several: a membership change is one). */
  #one(): string | undefined {
    return this.selected.size === 1 ? [...this.selected][0] : undefined;
  }

  /** Promotes, removes or hands leadership to the one selected node. */
  membershipSelected(kind: Exclude<MembershipActionKind, "add">): void {
    const id = this.#one();
    if (id === undefined) {
      this.#notice(
        `Select exactly one node (click it or press its number) to ${ACTION_TEXT[kind]}.`,
      );
      this.render();
      return;
    }
    this.#try(() => {
      if (kind === "promote") this.controller.promote(id);
      else if (kind === "remove") this.controller.removeNode(id);
      else this.controller.transferLeader(id);
    });
  }

  client(kind: string): void {
    const key = ($("key") as HTMLInputElement).value;
    const value = ($("value") as HTMLInputElement).value;
    this.#try(() => {
      if (key === "") throw new Error("Key must not be empty");
      if (kind === "put") this.controller.put(key, value);
      else if (kind === "delete") this.controller.delete(key);
      else this.controller.get(key);
    });
  }

  #try(f: () => void): void {
    try {
      f();
      this.#notice("");
    } catch (e) {
      this.#notice((e as Error).message);
    }
    this.render();
  }

  #notice(text: string): void {
    $("notice").textContent = text;
  }

  // ---- Drawing -----------------------------------------------------------------------------------

  #frame(t: number): void {
    if (this.controller.playing && this.#lastFrameMs !== undefined) {
      this.controller.advanceReal(t - this.#lastFrameMs);
      this.render();
    }
    this.#lastFrameMs = t;
    requestAnimationFrame((t2) => this.#frame(t2));
  }

  /** Builds the SVG for the current cluster: links, then nodes; messages come and go per frame. */
  #buildStage(): void {
    const stage = $("cluster") as unknown as SVGSVGElement;
    stage.replaceChildren();
    this.#shapes.clear();
    this.#messageShapes.clear();
    this.#links.clear();
    const ids = this.controller.cluster.ids;
    const pos = (i: number) => {
      const a = -Math.PI / 2 + (2 * Math.PI * i) / ids.length;
      return {
        x: Math.round(LAYOUT_RADIUS * Math.cos(a)),
        y: Math.round(LAYOUT_RADIUS * Math.sin(a)),
      };
    };
    const links = svg("g", { class: "links" });
    for (let i = 0; i < ids.length; i++) {
      for (let j = i + 1; j < ids.length; j++) {
        const a = pos(i);
        const b = pos(j);
        const line = svg("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, class: "link" });
        links.append(line);
        this.#links.set(`${ids[i]}|${ids[j]}`, line);
      }
    }
    stage.append(links, svg("g", { id: "messages" }));
    ids.forEach((id, i) => {
      const { x, y } = pos(i);
      const g = svg("g", {
        class: "node",
        transform: `translate(${x} ${y})`,
        tabindex: 0,
        role: "button",
        "data-node": id,
      });
      const title = svg("title");
      const track = svg("circle", { r: RING_RADIUS, class: "ring-track" });
      const ring = svg("circle", {
        r: RING_RADIUS,
        class: "ring",
        transform: "rotate(-90)",
        "stroke-dasharray": `${RING_LENGTH} ${RING_LENGTH}`,
      });
      const body = svg("circle", { r: NODE_RADIUS, class: "body" });
      const name = svg("text", { class: "name", y: -8 });
      name.textContent = id;
      const role = svg("text", { class: "role", y: 7 });
      const term = svg("text", { class: "term", y: 20 });
      g.append(title, track, ring, body, name, role, term);
      g.addEventListener("click", () => this.toggleSelect(id));
      g.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") {
          e.preventDefault();
          e.stopPropagation();
          this.toggleSelect(id);
        }
      });
      stage.append(g);
      this.#shapes.set(id, { g, ring, body, role, term, title, x, y });
    });
  }

  render(): void {
    const c = this.controller;
    const v = c.view();
    $("play").textContent = c.playing ? "Pause" : "Play";
    $("play").setAttribute("aria-pressed", String(c.playing));
    $("clock").textContent = `t = ${v.nowMs} ms · leader ${
      v.leader ?? "none"
    } · ${v.messagesSent} messages`;
    $("selected").textContent = this.selected.size === 0
      ? "none"
      : [...this.selected].sort().join(", ");
    const err = $("error");
    err.hidden = v.error === undefined;
    err.textContent = v.error === undefined ? "" : `The scene stopped: ${v.error}`;
    if (c.notice !== undefined) {
      this.#notice(c.notice);
      c.notice = undefined;
    }
    if (this.#shapes.size !== v.nodes.length) this.#buildStage(); // a node was added (or replay)
    for (const n of v.nodes) this.#drawNode(n);
    this.#drawMembership(v);
    for (const [key, line] of this.#links) {
      const [a, b] = key.split("|");
      const cut = v.cuts.includes(`${a}>${b}`) || v.cuts.includes(`${b}>${a}`);
      line.classList.toggle("cut", cut);
    }
    this.#drawMessages(v.messages);
    this.#drawLogs(v.nodes);
    setHtml($("table"), c.tableHtml());
    setHtml(
      $("ops"),
      v.ops.map((o) =>
        `<li class="op ${o.status}"><span class="op-text">#${o.id} ${esc(o.text)}</span> ` +
        `<b>${o.status}</b> ${esc(o.detail)}</li>`
      ).join(""),
    );
    setHtml($("recent"), v.recent.map((r) => `<li>${esc(r)}</li>`).join(""));
    document.body.dataset.leader = v.leader ?? "";
    const hash = c.hash();
    if (hash !== this.#lastHash && hash !== location.hash) {
      this.#lastHash = hash;
      history.replaceState(null, "", hash);
    }
  }

  /** The membership line and buttons: a button the controller would refuse is disabled, saying why. */
  #drawMembership(v: SceneView): void {
    const line = `voters ${v.voters.join(",")} · learners ${
      v.learners.length === 0 ? "none" : v.learners.join(",")
    } · ${v.pendingChange === undefined ? "no pending change" : `pending: ${v.pendingChange}`}${
      v.transferee === undefined ? "" : ` · transferring leadership to ${v.transferee}`
    }`;
    $("membership").textContent = line;
    const one = this.#one();
    const why: string[] = [];
    for (const kind of ["add", "promote", "remove", "transfer"] as const) {
      const button = $(kind === "add" ? "add-learner" : kind) as HTMLButtonElement;
      const refused = kind !== "add" && one === undefined
        ? "Select exactly one node"
        : this.controller.membershipRefusal(kind, kind === "add" ? undefined : one);
      button.disabled = refused !== undefined;
      button.title = refused ?? BUTTON_TITLE[kind];
      if (refused !== undefined && !why.includes(refused)) why.push(refused);
    }
    $("member-why").textContent = why.length === 0 ? "" : `Not now: ${why.join(" · ")}`;
  }

  #drawNode(n: NodeView): void {
    const s = this.#shapes.get(n.id)!;
    const down = n.state !== "up";
    s.g.setAttribute("class", `node ${n.role.toLowerCase()} ${n.state} ${n.member}`);
    s.g.classList.toggle("cut-off", n.cutOff);
    s.g.classList.toggle("selected", this.selected.has(n.id));
    s.g.setAttribute("aria-pressed", String(this.selected.has(n.id)));
    const label = `${n.id}: ${down ? n.state : n.role}${
      n.member === "voter" ? "" : ` (${n.member === "none" ? "not a member" : n.member})`
    }, term ${n.term}${n.cutOff ? ", cut off" : ""}, commitIndex ${n.commitIndex}`;
    s.g.setAttribute("aria-label", label);
    s.g.dataset.role = n.role;
    s.g.dataset.term = String(n.term);
    s.g.dataset.state = n.state;
    s.g.dataset.member = n.member;
    s.title.textContent = label;
    s.role.textContent = down
      ? n.state
      : n.member === "removed"
      ? "removed"
      : n.member === "none"
      ? "not member"
      : n.member === "learner"
      ? "Learner"
      : n.role === "PreCandidate"
      ? "PreCand."
      : n.role;
    s.term.textContent = `term ${n.term}`;
    s.body.style.stroke = termColor(n.term);
    const remaining = n.timer?.remaining ?? 0;
    s.ring.setAttribute("stroke-dasharray", `${RING_LENGTH * remaining} ${RING_LENGTH}`);
    s.ring.setAttribute("class", `ring ${n.timer?.kind ?? ""}`);
  }

  #drawMessages(messages: readonly MessageView[]): void {
    const layer = document.getElementById("messages") as unknown as SVGGElement;
    const seen = new Set<number>();
    for (const m of messages) {
      seen.add(m.id);
      let g = this.#messageShapes.get(m.id);
      if (g === undefined) {
        g = svg("g", { class: `message ${messageClass(m.type)}` });
        const title = svg("title");
        title.textContent = `${m.from} → ${m.to}: ${m.label}`;
        g.append(title, svg("circle", { r: 7 }));
        layer.append(g);
        this.#messageShapes.set(m.id, g);
      }
      if (m.lost && !g.classList.contains("lost")) {
        g.classList.add("lost");
        const cross = svg("text", { class: "cross", y: 5 });
        cross.textContent = "×";
        g.append(cross);
      }
      const a = this.#shapes.get(m.from)!;
      const b = this.#shapes.get(m.to)!;
      // From the sender's edge to the receiver's edge.
      const dx = b.x - a.x;
      const dy = b.y - a.y;
      const len = Math.hypot(dx, dy) || 1;
      const start = RING_RADIUS / len;
      const f = start + (1 - 2 * start) * m.progress;
      g.setAttribute(
        "transform",
        `translate(${(a.x + dx * f).toFixed(1)} ${(a.y + dy * f).toFixed(1)})`,
      );
    }
    for (const [id, g] of this.#messageShapes) {
      if (!seen.has(id)) {
        g.remove();
        this.#messageShapes.delete(id);
      }
    }
  }

  #drawLogs(nodes: readonly NodeView[]): void {
    const html = nodes.map((n) => {
      const entries = n.log.map((e) =>
        `<li class="entry${e.committed ? " committed" : ""}" style="--term:${termColor(e.term)}" ` +
        `title="${esc(e.text)}${e.committed ? " (committed)" : " (not committed)"}">` +
        `<span class="ix">${e.index}</span><span class="tm">t${e.term}</span></li>`
      ).join("");
      const skipped = n.logSkipped > 0 ? `<li class="skipped">…${n.logSkipped}</li>` : "";
      const keys = n.keys.length === 0
        ? ""
        : `<span class="keys">${esc(n.keys.slice(0, 6).map(([k, v]) => `${k}=${v}`).join(", "))}${
          n.keys.length > 6 ? " …" : ""
        }</span>`;
      return `<div class="log-row ${n.state}" data-node="${n.id}"><span class="log-id">${n.id}</span>` +
        `<ol class="entries" aria-label="log of ${n.id}">${skipped}${entries}</ol>${keys}</div>`;
    }).join("");
    setHtml($("logs"), html);
  }
}

const ACTION_TEXT: Record<Exclude<MembershipActionKind, "add">, string> = {
  promote: "promote it from learner to voter",
  remove: "remove it from the cluster",
  transfer: "hand it leadership",
};

const BUTTON_TITLE: Record<MembershipActionKind, string> = {
  add: "Start a new node and add it as a learner through the leader (a)",
  promote: "Make the selected learner a voter, once it has caught up (m)",
  remove: "Remove the selected member, the leader too (d)",
  transfer: "Hand leadership to the selected voter (t)",
};

function messageClass(type: string): string {
  if (type.startsWith("PreVote") || type.startsWith("RequestVote")) return "vote";
  if (type.startsWith("AppendEntries")) return "append";
  if (type.startsWith("ReadIndex")) return "read";
  return "other";
}

// ---- Live cluster view -------------------------------------------------------------------------

/** Polls a real node's status and sends it keys. */
class LivePage {
  #client: LiveClient | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #proxy: string | undefined;

  constructor() {
    ($("live-url") as HTMLInputElement).value = DEFAULT_NODE_URL;
    $("live-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.connect();
    });
    $("live-stop").addEventListener("click", () => this.stop());
    $("live-kv").addEventListener("submit", (e) => {
      e.preventDefault();
      const submitter = (e as SubmitEvent).submitter as HTMLButtonElement | null;
      this.kv(submitter?.value ?? "get");
    });
    // Served by `deno task web`? Then its same-origin proxy spares the node CORS headers.
    if (location.protocol.startsWith("http")) {
      fetch("proxy/ping").then((r) => r.ok ? r.json() : undefined).then((b) => {
        if (b?.proxy === true) this.#proxy = new URL("proxy", location.href).href;
      }).catch(() => {});
    }
  }

  connect(): void {
    this.stop();
    try {
      this.#client = new LiveClient(($("live-url") as HTMLInputElement).value.trim(), {
        proxy: this.#proxy,
      });
    } catch (e) {
      this.#status((e as Error).message, true);
      return;
    }
    this.#status(`Connecting to ${this.#client.base}…`, false);
    void this.#poll();
  }

  stop(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#client = undefined;
  }

  async #poll(): Promise<void> {
    const client = this.#client;
    if (client === undefined) return;
    try {
      const status = await client.status();
      if (client !== this.#client) return;
      setHtml($("live-table"), liveTableHtml(status));
      this.#status(`${client.base}: refreshed at ${new Date().toLocaleTimeString()}`, false);
    } catch (e) {
      if (client !== this.#client) return;
      const how = this.#proxy === undefined
        ? ` (opened without \`deno task web\`: start the node with --cors ${
          // A page opened from disk sends "Origin: null".
          location.protocol === "file:" ? "null" : location.origin})`
        : "";
      this.#status(`${client.base}: ${(e as Error).message}${how}`, true);
    }
    this.#timer = setTimeout(() => void this.#poll(), LIVE_POLL_MS);
  }

  async kv(kind: string): Promise<void> {
    const client = this.#client;
    const out = $("live-result");
    if (client === undefined) {
      out.textContent = "Connect to a node first.";
      return;
    }
    const key = ($("live-key") as HTMLInputElement).value;
    const value = ($("live-value") as HTMLInputElement).value;
    try {
      out.textContent = kind === "put"
        ? await client.put(key, value)
        : kind === "delete"
        ? await client.delete(key)
        : await client.get(key);
    } catch (e) {
      out.textContent = (e as Error).message;
    }
  }

  #status(text: string, bad: boolean): void {
    const el = $("live-status");
    el.textContent = text;
    el.classList.toggle("bad", bad);
  }
}

// ---- Tabs ----------------------------------------------------------------------------------------

function showTab(name: "sim" | "live"): void {
  $("sim-view").hidden = name !== "sim";
  $("live-view").hidden = name !== "live";
  $("tab-sim").setAttribute("aria-selected", String(name === "sim"));
  $("tab-live").setAttribute("aria-selected", String(name === "live"));
}

function main(): void {
  const page = new SimPage();
  const live = new LivePage();
  $("tab-sim").addEventListener("click", () => showTab("sim"));
  $("tab-live").addEventListener("click", () => showTab("live"));
  // For the browser tests and the curious: the page's objects on `window.raftmeta`.
  (globalThis as unknown as { raftmeta: unknown }).raftmeta = { page, live };
}

main();
