#!/usr/bin/env node
// Check the dashboard in headless Chromium: every page, then a retry clicked on a dead task.
//
// Usage: node _meta/tools/browser/check_dashboard.mjs BASE_URL --dead-task ID
//            [--screenshots DIR] [--requests FILE]
//
// BASE_URL is a running dashboard on 127.0.0.1 (check_dashboard.py starts one over a
// seeded queue). Chromium is Debian's (/usr/bin/chromium, or $PRISMQ_CHROMIUM), driven by
// playwright-core with a fresh profile. The run fails (exit code 1) when:
//   - a page does not answer 200, throws, or logs a console error;
//   - the overview's three charts did not draw (uPlot canvases, data loaded);
//   - the schedules page does not list the three seeded schedules with their actions;
//   - clicking Retry on the dead task (and accepting the confirmation) does not show it
//     queued;
//   - any request went anywhere but 127.0.0.1 (off-site requests are also blocked).
// --screenshots DIR saves one PNG per page, named after the page.
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import process from "node:process";

import { conclude, reportOffsite, run, watchErrors, withChromium } from "./browser.mjs";

const TIMEOUT_MS = 30_000;

function parseArgs(argv) {
  const args = { base: null, deadTask: null, screenshots: null, requests: null };
  for (let i = 0; i < argv.length; i += 1) {
    if (argv[i] === "--screenshots") args.screenshots = resolve(argv[(i += 1)]);
    else if (argv[i] === "--requests") args.requests = resolve(argv[(i += 1)]);
    else if (argv[i] === "--dead-task") args.deadTask = Number(argv[(i += 1)]);
    else if (!args.base) args.base = argv[i].replace(/\/$/, "");
    else throw new Error(`unexpected argument: ${argv[i]}`);
  }
  if (!args.base || !Number.isInteger(args.deadTask)) {
    throw new Error("usage: check_dashboard.mjs BASE_URL --dead-task ID [--screenshots DIR] [--requests FILE]");
  }
  if (new URL(args.base).hostname !== "127.0.0.1") throw new Error("BASE_URL must be on 127.0.0.1");
  return args;
}

async function visit(context, url, name, failures, screenshots, check) {
  const tab = await context.newPage();
  const problems = [];
  watchErrors(tab, problems);
  try {
    const response = await tab.goto(url, { waitUntil: "load" });
    if (!response || response.status() !== 200) problems.push(`HTTP ${response ? response.status() : "none"}`);
    if (check) await check(tab, problems);
    if (screenshots) {
      mkdirSync(screenshots, { recursive: true });
      await tab.screenshot({ path: join(screenshots, `${name}.png`), fullPage: name !== "tasks" });
    }
  } catch (error) {
    problems.push(String(error));
  } finally {
    await tab.close();
  }
  for (const problem of problems) failures.push(`${name} (${url}): ${problem}`);
}

async function chartsDrawn(tab, problems) {
  try {
    await tab.waitForSelector("section.charts[data-loaded=true]", { timeout: TIMEOUT_MS });
  } catch {
    const error = await tab.getAttribute("section.charts", "data-error");
    problems.push(`the charts' data never loaded${error ? `: ${error}` : ""}`);
    return;
  }
  const canvases = await tab.locator("section.charts canvas").count();
  if (canvases < 3) problems.push(`${canvases} chart canvas(es) drawn, expected 3`);
}

async function schedulesListed(tab, problems) {
  const rows = await tab.locator("main table tbody tr").count();
  if (rows !== 3) problems.push(`${rows} schedule row(s) shown, expected 3`);
  const runNow = await tab.locator("form.action button:text('Run now')").count();
  if (runNow !== 3) problems.push(`${runNow} Run now button(s), expected 3`);
}

async function retryDeadTask(tab, problems, deadTask) {
  const before = (await tab.textContent("h1")) || "";
  if (!before.includes("dead")) problems.push(`task ${deadTask} is not shown dead before the retry: "${before}"`);
  let asked = null;
  tab.once("dialog", async (dialog) => {
    asked = dialog.message();
    await dialog.accept();
  });
  await Promise.all([tab.waitForNavigation({ waitUntil: "load" }), tab.click("form.action button:text('Retry')")]);
  if (!asked || !asked.includes(`Retry task ${deadTask}`)) problems.push(`no confirmation was asked (got ${asked})`);
  const after = (await tab.textContent("h1")) || "";
  if (!after.includes("queued")) problems.push(`after Retry the task shows "${after}", not queued`);
  const notice = (await tab.textContent("p.notice")) || "";
  if (!notice.includes(`retry: task ${deadTask}`)) problems.push(`no notice of the retry: "${notice}"`);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const failures = [];
  const pages = [
    ["overview", "/", chartsDrawn],
    ["types", "/types"],
    ["tasks", "/tasks"],
    ["tasks-dead", "/tasks?status=dead"],
    ["task-dead", `/tasks/${args.deadTask}`],
    ["workers", "/workers"],
    ["schedules", "/schedules", schedulesListed],
  ];
  const requests = await withChromium({ viewport: { width: 1280, height: 800 } }, async (context) => {
    for (const [name, path, check] of pages) {
      await visit(context, `${args.base}${path}`, name, failures, args.screenshots, check);
    }
    await visit(context, `${args.base}/tasks/${args.deadTask}`, "task-retried", failures, args.screenshots, (tab, problems) =>
      retryDeadTask(tab, problems, args.deadTask),
    );
  });
  const offsite = reportOffsite(requests, args.requests, failures);
  console.log(`checked ${pages.length + 1} dashboard pages, ${requests.length} requests (${offsite.length} off-site)`);
  conclude(failures, "dashboard check passed");
}

run(main);
