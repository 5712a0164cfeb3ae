// What check_site.mjs and check_dashboard.mjs share: Debian's Chromium with a fresh
// profile, every request recorded and off-site ones blocked, and the pass/fail ending.
//
// Chromium is /usr/bin/chromium, or $PRISMQ_CHROMIUM, driven by playwright-core.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";

import { chromium } from "playwright-core";

const CHROMIUM = process.env.PRISMQ_CHROMIUM || "/usr/bin/chromium";
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

// Whether a request stays on the machine: 127.0.0.1, or no network at all.
export function isLocal(url) {
  if (["data:", "blob:", "about:"].includes(url.protocol)) return true;
  return url.hostname === "127.0.0.1";
}

// Launch Chromium with a fresh profile, run `use(context)`, then close it and delete the
// profile. Every request URL is recorded, and any leaving 127.0.0.1 is blocked.
// `options` adds to the launch options (e.g. a viewport). Returns the request URLs.
export async function withChromium(options, use) {
  const profile = mkdtempSync(join(tmpdir(), "prismq-chromium-"));
  const requests = [];
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: FLAGS,
      serviceWorkers: "block",
      ...options,
    });
    context.on("request", (request) => requests.push(request.url()));
    await context.route("**/*", (route) =>
      isLocal(new URL(route.request().url())) ? route.continue() : route.abort("blockedbyclient"),
    );
    await use(context);
  } finally {
    if (context) await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
  return requests;
}

// Add the tab's uncaught errors and console errors to `problems`.
export function watchErrors(tab, problems) {
  tab.on("pageerror", (error) => problems.push(`uncaught error: ${error.message}`));
  tab.on("console", (message) => {
    if (message.type() === "error") problems.push(`console error: ${message.text()}`);
  });
}

// Write the request URLs to `requestsFile` (if given), one per line, and add a failure
// for each distinct one that left 127.0.0.1. Returns those off-site URLs.
export function reportOffsite(requests, requestsFile, failures) {
  if (requestsFile) writeFileSync(requestsFile, requests.map((url) => `${url}\n`).join(""));
  const offsite = [...new Set(requests.filter((url) => !isLocal(new URL(url))))];
  for (const url of offsite) failures.push(`request left 127.0.0.1: ${url}`);
  return offsite;
}

// Print the failures and set exit code 1, or print `passed`.
export function conclude(failures, passed) {
  if (failures.length) {
    console.error(`${failures.length} problem(s):\n  ${failures.join("\n  ")}`);
    process.exitCode = 1;
  } else {
    console.log(passed);
  }
}

// Run the async `main`; an error it throws is printed and gives exit code 1.
export function run(main) {
  main().catch((error) => {
    console.error(error.stack || String(error));
    process.exitCode = 1;
  });
}
