/**
 * The live demo in a real browser: headless Chromium (Debian's `chromium` package) driven by
 * playwright-core with the system browser as its executable. The page is served by `serveWeb`
 * (as `deno task web` does), then: play until a leader appears, crash the leader, see a new leader
 * at a higher term, restart the old one, put a key and see it on every node. Screenshots go to
 * test-output/web/ (set RAFTMETA_UPDATE_SCREENSHOT=1 to copy the final one to
 * docs/web-screenshot.png). Also: the static build opened from disk (file://), a phone-sized
 * viewport, keyboard control, and the live view against a real 3-process cluster.
 *
 * Without Chromium these tests say so plainly and run the same scene through the page's controller
 * in Deno instead; they never claim a browser ran.
 */

import assert from "node:assert/strict";
// Full npm: specifiers, as DESIGN.md asks (no import map).
// deno-lint-ignore no-import-prefix
import { chromium } from "npm:playwright-core@1.64.1";
// deno-lint-ignore no-import-prefix
import type { Browser, Page } from "npm:playwright-core@1.64.1";
import { serveWeb } from "../src/web/serve.ts";
import { buildSite } from "../src/web/build.ts";
import { SimController } from "../src/web/controller.ts";
import { playMembershipScene, playScene } from "./web_helpers.ts";
import { ProcessCluster } from "./net_helpers.ts";
import { chapters } from "../scenarios/chapters.ts";
import { ChapterRun } from "../scenarios/_chapter.ts";

const CHROMIUM = Deno.env.get("RAFTMETA_CHROMIUM") ?? "/usr/bin/chromium";
const OUT = "test-output/web";
const WAIT_MS = 15_000;

function hasChromium(): boolean {
  try {
    return Deno.statSync(CHROMIUM).isFile;
  } catch {
    return false;
  }
}

/** Playwright gives the browser a fresh, empty profile directory of its own. */
async function launch(): Promise<Browser> {
  return await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** Collects page errors: a test fails if the page threw. */
function watchErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });
  return errors;
}

async function leaderOf(page: Page): Promise<{ id: string; term: number }> {
  const id = await page.evaluate<string>('document.body.dataset.leader ?? ""');
  const term = Number(await page.getAttribute(`g[data-node="${id}"]`, "data-term"));
  return { id, term };
}

async function browserTest(
  name: string,
  fn: (browser: Browser) => Promise<void>,
  fallback: () => void | Promise<void>,
): Promise<void> {
  // Without Chromium the browser test shows as ignored, and the nearest real thing runs as a test
  // of its own whose name says what it is.
  const chromium = hasChromium();
  await Deno.test(
    { name, ignore: !chromium, sanitizeResources: false, sanitizeOps: false },
    async () => {
      await Deno.mkdir(OUT, { recursive: true });
      const browser = await launch();
      try {
        await fn(browser);
      } finally {
        await browser.close();
      }
    },
  );
  if (!chromium) {
    await Deno.test({
      name: `${name.replace("web page in Chromium", "web page without a browser")} ` +
        `(Chromium is not installed at ${CHROMIUM}: apt-get install -y chromium)`,
      sanitizeResources: false,
      sanitizeOps: false,
      fn: fallback,
    });
  }
}

browserTest(
  "web page in Chromium: leader, crash it, new leader at a higher term, key on every node",
  async (browser) => {
    let url = "";
    const server = await serveWeb({ port: 0, onListen: (u) => url = u });
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      const errors = watchErrors(page);
      await page.goto(`${url}#seed=1&nodes=5&speed=1`);
      // Keyboard: Space plays.
      await page.locator("body").press(" ");
      assert.equal(await page.getAttribute("#play", "aria-pressed"), "true");
      await page.waitForFunction('document.body.dataset.leader !== ""', null, { timeout: WAIT_MS });
      const first = await leaderOf(page);
      assert.ok(first.term >= 1);

      // Crash the leader: click its node, then the button.
      await page.click(`g[data-node="${first.id}"]`);
      assert.equal(await page.textContent("#selected"), first.id);
      await page.click("#crash");
      assert.equal(await page.getAttribute(`g[data-node="${first.id}"]`, "data-state"), "crashed");
      await page.waitForFunction(
        `document.body.dataset.leader !== "" && document.body.dataset.leader !== "${first.id}"`,
        null,
        { timeout: WAIT_MS },
      );
      const second = await leaderOf(page);
      assert.notEqual(second.id, first.id);
      assert.ok(second.term > first.term, `new term ${second.term} > ${first.term}`);

      // Restart the old leader with the keyboard (c toggles crash/restart of the selection).
      await page.locator("body").press("c");
      assert.equal(await page.getAttribute(`g[data-node="${first.id}"]`, "data-state"), "up");

      // Put a key and see it on every node.
      await page.fill("#key", "/services/db");
      await page.fill("#value", "10.0.0.7");
      await page.click('#client button[value="put"]');
      await page.waitForFunction(
        `[...document.querySelectorAll(".log-row")].filter((r) =>
        r.querySelector(".keys")?.textContent?.includes("/services/db=10.0.0.7")).length === 5`,
        null,
        { timeout: WAIT_MS },
      );
      assert.match(
        await page.textContent("#ops") ?? "",
        /PUT \/services\/db=10\.0\.0\.7 via n\d ok/,
      );
      assert.match(await page.textContent("#table") ?? "", /keys n\d: \/services\/db=10\.0\.0\.7/);
      // Committed entries are drawn filled on every node.
      assert.ok(await page.locator(".entry.committed").count() >= 10);

      // The URL carries the scene: reloading it replays to the same state at the same time.
      const hash = await page.evaluate<string>("location.hash");
      assert.match(hash, /seed=1&nodes=5&speed=1&actions=\d+:crash:n\d;\d+:restart:n\d;\d+:put:/);

      // Pause for a still picture. (Space on a focused button presses the button, as it should.)
      await page.evaluate("document.activeElement?.blur()");
      await page.keyboard.press(" ");
      assert.equal(await page.getAttribute("#play", "aria-pressed"), "false");
      assert.equal(await page.locator("#ops li").count(), 1);
      await page.hover(`g[data-node="${second.id}"]`);
      await page.screenshot({ path: `${OUT}/final.png` });
      if (Deno.env.get("RAFTMETA_UPDATE_SCREENSHOT") === "1") {
        await Deno.copyFile(`${OUT}/final.png`, "docs/web-screenshot.png");
      }
      assert.deepEqual(errors, []);
    } finally {
      await server.shutdown();
    }
  },
  () => {
    playScene(new SimController({ seed: 1, nodes: 5, speed: 1 }));
  },
);

/** Presses "s" (step) until `js` holds, at most `stepsMax` times. */
async function stepUntil(page: Page, js: string, stepsMax = 200): Promise<void> {
  for (let i = 0; i < stepsMax; i++) {
    if (await page.evaluate<boolean>(js)) return;
    await page.locator("body").press("s");
  }
  assert.fail(`Not within ${stepsMax} steps: ${js}`);
}

browserTest(
  "web page in Chromium: add a learner, promote it, remove the leader, transfer leadership",
  async (browser) => {
    let url = "";
    const server = await serveWeb({ port: 0, onListen: (u) => url = u });
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      const errors = watchErrors(page);
      await page.goto(`${url}#seed=1&nodes=3&speed=1`);
      const membership = () => page.textContent("#membership");
      // Paused, stepping event by event: each click lands at an exact point of the run.
      await stepUntil(page, '!document.querySelector("#add-learner").disabled');
      assert.match(
        await membership() ?? "",
        /^voters n1,n2,n3 · learners none · no pending change/,
      );
      await page.click("#add-learner");
      assert.equal(await page.getAttribute('g[data-node="n4"]', "data-member"), "learner");
      assert.match(await membership() ?? "", /learners n4 · pending: add-learner n4/);
      assert.match(await page.textContent("#table") ?? "", /up \(learner\)/);
      // A second change while one is pending: the button is disabled and says why.
      await page.locator("body").press("4");
      assert.equal(await page.isDisabled("#promote"), true);
      assert.match(await page.getAttribute("#promote", "title") ?? "", /pending/);
      assert.match(await page.textContent("#member-why") ?? "", /one change at a time/);
      await stepUntil(
        page,
        '!document.querySelector("#membership").textContent.includes("pending:")',
      );
      // Committed, but n4 has not acknowledged the log yet: the core refuses with etcd's text.
      await page.click("#promote");
      assert.match(
        await page.textContent("#notice") ?? "",
        /etcdserver: can only promote a learner member which is in sync with leader/,
      );
      await page.click("#play"); // n4 catches up within a few round trips
      for (let i = 0; i < 50 && !/voters n1,n2,n3,n4/.test(await membership() ?? ""); i++) {
        await page.click("#promote");
        await page.waitForTimeout(100);
      }
      assert.match(await membership() ?? "", /^voters n1,n2,n3,n4 · learners none/);
      assert.equal(await page.getAttribute('g[data-node="n4"]', "data-member"), "voter");
      await page.waitForFunction('!document.querySelector("#remove").disabled', null, {
        timeout: WAIT_MS,
      });
      assert.equal(await page.isDisabled("#promote"), true, "n4 is a voter now");

      // Remove the leader: select it alone, click Remove, see another voter lead.
      const old = await leaderOf(page);
      await page.locator("body").press("Escape");
      await page.click(`g[data-node="${old.id}"]`);
      await page.click("#remove");
      await page.waitForFunction(
        `document.body.dataset.leader !== "" && document.body.dataset.leader !== "${old.id}" &&
        document.querySelector('g[data-node="${old.id}"]').dataset.member === "removed"`,
        null,
        { timeout: WAIT_MS },
      );
      assert.doesNotMatch(await membership() ?? "", new RegExp(`voters [^·]*${old.id}`));
      assert.match(await page.textContent("#table") ?? "", /up \(removed\)/);

      // Transfer leadership to a voter that does not lead.
      const now = await leaderOf(page);
      const voters = (await membership() ?? "").match(/^voters ([^ ]+)/)![1].split(",");
      const target = voters.filter((id) => id !== now.id).at(-1)!;
      await page.locator("body").press("Escape");
      await page.click(`g[data-node="${target}"]`);
      await page.waitForFunction('!document.querySelector("#transfer").disabled', null, {
        timeout: WAIT_MS,
      });
      await page.click("#transfer");
      await page.waitForFunction(`document.body.dataset.leader === "${target}"`, null, {
        timeout: WAIT_MS,
      });
      assert.match(
        await page.evaluate<string>("location.hash"),
        new RegExp(
          `:add:learner;(\\d+:promote:n4;)+\\d+:remove:${old.id};\\d+:transfer:${target}$`,
        ),
      );
      await page.click("#play"); // pause for the picture
      await page.screenshot({ path: `${OUT}/membership.png` });
      assert.deepEqual(errors, []);
    } finally {
      await server.shutdown();
    }
  },
  () => {
    playMembershipScene(new SimController({ seed: 1, nodes: 3, speed: 1 }));
  },
);

browserTest(
  "web page in Chromium: the static build opens from disk; phone-sized screen; keys",
  async (browser) => {
    const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "raftmeta-site-" }));
    try {
      await buildSite(dir);
      const page = await browser.newPage({
        viewport: { width: 375, height: 740 },
        isMobile: true,
        hasTouch: true,
      });
      const errors = watchErrors(page);
      await page.goto(`file://${dir}/index.html#seed=3&nodes=3&speed=1`);
      assert.equal(await page.inputValue("#seed"), "3");
      // Nothing wider than the screen: no sideways scrolling on a phone.
      const overflow = await page.evaluate<number>(
        "document.scrollingElement.scrollWidth - window.innerWidth",
      );
      assert.ok(overflow <= 0, `page is ${overflow} px wider than the viewport`);
      // Keys: select n2 with "2", step with "s", play with Space.
      await page.locator("body").press("2");
      assert.equal(await page.textContent("#selected"), "n2");
      await page.locator("body").press("s");
      assert.notEqual(await page.textContent("#clock"), "t = 0 ms · leader none · 0 messages");
      await page.locator("body").press(" ");
      await page.waitForFunction('document.body.dataset.leader !== ""', null, { timeout: WAIT_MS });
      // Tab reaches the controls, and focus is visible.
      await page.focus("#play");
      await page.keyboard.press("Tab");
      assert.equal(await page.evaluate<string>("document.activeElement?.id"), "step");
      await page.screenshot({ path: `${OUT}/phone.png`, fullPage: true });
      assert.deepEqual(errors, []);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
  () => {
    const c = new SimController({ seed: 3, nodes: 3, speed: 1 });
    assert.ok(c.runUntilLeader() !== undefined);
  },
);

browserTest(
  "web page in Chromium: the live view shows a real 3-process cluster and puts a key",
  async (browser) => {
    const cluster = ProcessCluster.start(3);
    let url = "";
    const server = await serveWeb({ port: 0, onListen: (u) => url = u });
    try {
      await cluster.waitForLeader();
      const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
      const errors = watchErrors(page);
      await page.goto(url);
      await page.click("#tab-live");
      await page.fill("#live-url", cluster.nodes[1].url);
      // The proxy probe runs at load; give it a moment before connecting.
      await page.waitForTimeout(200);
      await page.click('#live-form button:not([type="button"])');
      await page.waitForFunction(
        `document.querySelectorAll("#live-table tbody tr").length === 3 &&
        document.querySelector("#live-table tbody tr.leader") !== null`,
        null,
        { timeout: WAIT_MS },
      );
      await page.fill("#live-key", "/web/test");
      await page.fill("#live-value", "hello");
      await page.click('#live-kv button[value="put"]');
      await page.locator("#live-result", { hasText: "PUT /web/test: 200" }).waitFor({
        timeout: WAIT_MS,
      });
      await page.click('#live-kv button[value="get"]');
      await page.locator("#live-result", { hasText: '"value":"hello"' }).waitFor({
        timeout: WAIT_MS,
      });
      assert.match(await page.textContent("#live-result") ?? "", /^GET \/web\/test: 200 /);
      // The table refreshes on its own: every node's keys column comes to count the new key.
      await page.waitForFunction(
        `[...document.querySelectorAll("#live-table tbody tr")]
        .filter((r) => r.children[10]?.textContent === "1").length === 3`,
        null,
        { timeout: WAIT_MS },
      );
      await page.screenshot({ path: `${OUT}/live.png` });
      assert.deepEqual(errors, []);
    } finally {
      await server.shutdown();
      await cluster.stop();
    }
  },
  () => {
    console.warn("The live view test needs a browser; only the simulated scene ran.");
  },
);

/** Every chapter's step outputs as the notebook shows them (`StepView.toHtml`), one page. */
function chapterPage(): { html: string; steps: number } {
  const sections: string[] = [];
  for (const [file, chapter] of Object.entries(chapters)) {
    const run = new ChapterRun(chapter, { seed: 1, flags: { trials: "20" } });
    for (const view of run.rest()) {
      // A Jupyter output area is about 900 px wide.
      sections.push(
        `<section class="step" data-step="${file} ${view.number}" ` +
          `style="width:900px;margin:8px 0;overflow:hidden">${view.toHtml()}</section>`,
      );
    }
  }
  return {
    html: `<!doctype html><meta charset="utf-8"><body style="margin:8px">${sections.join("")}`,
    steps: sections.length,
  };
}

/** What the page check measures, in the browser; returns the problems it found. */
const PICTURE_CHECKS = `(() => {
  const problems = [];
  // Screen boxes: they include transforms (a rotated axis title) and the SVG's scaling.
  const box = (e) => { const b = e.getBoundingClientRect(); return { x0: b.left, y0: b.top, x1: b.right, y1: b.bottom }; };
  const overlap = (a, b) => Math.max(0, Math.min(a.x1, b.x1) - Math.max(a.x0, b.x0)) *
    Math.max(0, Math.min(a.y1, b.y1) - Math.max(a.y0, b.y0));
  for (const s of document.querySelectorAll("section.step")) {
    const name = s.dataset.step;
    if (s.scrollWidth > s.clientWidth + 1) problems.push(name + ": overflows its 900 px (" + s.scrollWidth + ")");
    for (const d of s.querySelectorAll(".raftmeta-table")) {
      if (d.scrollWidth > d.clientWidth + 1) problems.push(name + ": node table overflows (" + d.scrollWidth + " > " + d.clientWidth + ")");
    }
    if (!s.querySelector(".raftmeta-legend")) problems.push(name + ": no node table legend");
    const svgs = [...s.querySelectorAll("svg")];
    if (!svgs.some((g) => g.querySelector("g.legend"))) problems.push(name + ": no timeline legend");
    for (const svg of svgs) {
      const r = svg.getBoundingClientRect();
      if (r.width > s.clientWidth + 1) problems.push(name + ": an SVG is wider than its container");
      const frame = box(svg);
      const texts = [...svg.querySelectorAll("text")];
      for (const t of texts) {
        const b = box(t);
        if (b.x0 < frame.x0 - 0.5 || b.y0 < frame.y0 - 0.5 || b.x1 > frame.x1 + 0.5 || b.y1 > frame.y1 + 0.5) {
          problems.push(name + ": text clipped: " + t.textContent);
        }
      }
      const marks = [...svg.querySelectorAll("rect.mark, path.lost")].map(box);
      for (const t of texts) {
        const b = box(t);
        // Glyph boxes include some leading: a sliver of overlap is not a mark over a label.
        if (marks.some((m) => overlap(b, m) > 6)) problems.push(name + ": a mark covers the label " + t.textContent);
      }
    }
  }
  return problems;
})()`;

browserTest(
  "web page in Chromium: every chapter step's pictures fit, have legends, keep marks off labels",
  async (browser) => {
    const { html, steps } = chapterPage();
    const file = await Deno.makeTempFile({ suffix: ".html" });
    try {
      await Deno.writeTextFile(file, html);
      const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
      const errors = watchErrors(page);
      await page.goto(`file://${file}`);
      assert.equal(
        await page.evaluate<number>('document.querySelectorAll("section.step").length'),
        steps,
      );
      const problems = await page.evaluate<string[]>(PICTURE_CHECKS);
      assert.deepEqual(problems.slice(0, 20), [], `${problems.length} problems`);
      await page.locator("section.step").nth(10).screenshot({ path: `${OUT}/chapter-step.png` });
      assert.deepEqual(errors, []);
    } finally {
      await Deno.remove(file);
    }
  },
  () => {
    // Without a browser only the structure can be checked: a legend in every step's HTML.
    const { html, steps } = chapterPage();
    assert.equal(html.match(/class="raftmeta-legend"/g)?.length, steps);
    assert.ok((html.match(/<g class="legend">/g)?.length ?? 0) >= steps);
  },
);
