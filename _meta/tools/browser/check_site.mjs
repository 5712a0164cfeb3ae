#!/usr/bin/env node
// Load every page of the built documentation site in headless Chromium and check it.
//
// Usage: node _meta/tools/browser/check_site.mjs SITE_DIR [--screenshots DIR] [--requests FILE]
//
// --screenshots DIR saves a full-page PNG of every page; --requests FILE writes every
// request URL the browser made, one per line.
// The site is served from SITE_DIR on 127.0.0.1 (a free port chosen by the OS), and every
// page is opened in Debian's Chromium (/usr/bin/chromium, or $PRISMQ_CHROMIUM) through
// playwright-core, with a fresh profile. The run fails (exit code 1) when:
//   - a page does not load, throws, or logs a console error;
//   - a Mermaid diagram did not become an SVG, or any text says "Syntax error";
//   - the site has no Mermaid diagram at all (the check would prove nothing);
//   - the API reference page lacks the real signatures ("QueueDatabase(", "claim_next_task");
//   - any request went anywhere but 127.0.0.1 (every request URL is recorded; off-site
//     ones are also blocked so nothing leaves the machine).
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from "node:fs";
import { createServer } from "node:http";
import { extname, join, relative, resolve, sep } from "node:path";
import process from "node:process";

import { conclude, reportOffsite, run, watchErrors, withChromium } from "./browser.mjs";

const API_PAGE = "queue/QUEUE_API_REFERENCE/index.html";
const API_TEXTS = ["QueueDatabase(", "claim_next_task"];
const RENDER_TIMEOUT_MS = 30_000;
const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".xml": "application/xml",
  ".woff2": "font/woff2",
  ".txt": "text/plain; charset=utf-8",
};

function parseArgs(argv) {
  const args = { site: null, screenshots: null, requests: null };
  for (let i = 0; i < argv.length; i += 1) {
    if (argv[i] === "--screenshots") {
      args.screenshots = resolve(argv[(i += 1)]);
    } else if (argv[i] === "--requests") {
      args.requests = resolve(argv[(i += 1)]);
    } else if (!args.site) {
      args.site = resolve(argv[i]);
    } else {
      throw new Error(`unexpected argument: ${argv[i]}`);
    }
  }
  if (!args.site || !existsSync(join(args.site, "index.html"))) {
    throw new Error("usage: check_site.mjs SITE_DIR [--screenshots DIR] [--requests FILE] (SITE_DIR holds index.html)");
  }
  return args;
}

function htmlPages(root) {
  const pages = [];
  const walk = (dir) => {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (name.endsWith(".html")) pages.push(relative(root, path).split(sep).join("/"));
    }
  };
  walk(root);
  return pages;
}

function serve(root) {
  const server = createServer((request, response) => {
    const url = new URL(request.url, "http://127.0.0.1");
    let path = resolve(root, `.${decodeURIComponent(url.pathname)}`);
    if (path !== root && !path.startsWith(root + sep)) {
      response.writeHead(403).end();
      return;
    }
    if (existsSync(path) && statSync(path).isDirectory()) path = join(path, "index.html");
    if (!existsSync(path)) {
      response.writeHead(404, { "content-type": "text/plain" }).end("not found");
      return;
    }
    response.writeHead(200, { "content-type": TYPES[extname(path)] || "application/octet-stream" });
    response.end(readFileSync(path));
  });
  return new Promise((done) => server.listen(0, "127.0.0.1", () => done(server)));
}

function urlFor(page) {
  return page.endsWith("/index.html") ? page.slice(0, -"index.html".length) : page === "index.html" ? "" : page;
}

// Material for MkDocs renders each diagram into a closed shadow root; open it so the check
// can see the SVG. This runs in the test browser only and changes nothing else.
function openShadowRoots() {
  const attach = Element.prototype.attachShadow;
  Element.prototype.attachShadow = function attachOpen(init) {
    return attach.call(this, { ...init, mode: "open" });
  };
}

async function checkPage(context, base, siteDir, page, failures, screenshots) {
  const source = readFileSync(join(siteDir, page), "utf8");
  const expected = (source.match(/<pre[^>]*class="mermaid"/g) || []).length;
  const tab = await context.newPage();
  const problems = [];
  watchErrors(tab, problems);
  try {
    const response = await tab.goto(`${base}/${urlFor(page)}`, { waitUntil: "load" });
    if (!response || response.status() !== 200) {
      problems.push(`HTTP ${response ? response.status() : "no response"}`);
    }
    if (expected > 0) {
      try {
        await tab.waitForFunction(
          (count) =>
            [...document.querySelectorAll("div.mermaid")].filter((d) => d.shadowRoot?.querySelector("svg"))
              .length >= count,
          expected,
          { timeout: RENDER_TIMEOUT_MS },
        );
      } catch {
        // Reported below with the counts.
      }
    }
    const state = await tab.evaluate(() => {
      const hosts = [...document.querySelectorAll("div.mermaid")];
      const shadowText = hosts.map((d) => d.shadowRoot?.textContent || "").join("\n");
      return {
        rendered: hosts.filter((d) => d.shadowRoot?.querySelector("svg")).length,
        unrendered: document.querySelectorAll("pre.mermaid").length,
        text: `${document.body.innerText}\n${shadowText}`,
      };
    });
    if (state.rendered !== expected || state.unrendered > 0) {
      problems.push(
        `${expected} Mermaid diagram(s) in the HTML, ${state.rendered} rendered as SVG, ` +
          `${state.unrendered} left as source`,
      );
    }
    if (state.text.includes("Syntax error")) problems.push('the page shows "Syntax error"');
    if (page === API_PAGE) {
      for (const text of API_TEXTS) {
        if (!state.text.includes(text)) problems.push(`the API reference does not show "${text}"`);
      }
    }
    if (screenshots) {
      mkdirSync(screenshots, { recursive: true });
      await tab.screenshot({ path: join(screenshots, `${page.replaceAll("/", "__")}.png`), fullPage: true });
    }
  } finally {
    await tab.close();
  }
  for (const problem of problems) failures.push(`${page}: ${problem}`);
  return expected;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const pages = htmlPages(args.site);
  if (!pages.includes(API_PAGE)) throw new Error(`the site has no API reference page (${API_PAGE})`);
  const server = await serve(args.site);
  const base = `http://127.0.0.1:${server.address().port}`;
  const failures = [];
  let diagrams = 0;
  let requests;
  try {
    requests = await withChromium({}, async (context) => {
      await context.addInitScript(openShadowRoots);
      for (const page of pages) {
        diagrams += await checkPage(context, base, args.site, page, failures, args.screenshots);
      }
    });
  } finally {
    await new Promise((done) => server.close(done));
  }
  const offsite = reportOffsite(requests, args.requests, failures);
  if (diagrams === 0) failures.push("no Mermaid diagram on any page");

  console.log(
    `checked ${pages.length} pages, ${diagrams} Mermaid diagrams, ${requests.length} requests ` +
      `(${offsite.length} off-site)`,
  );
  conclude(failures, "site check passed");
}

run(main);
